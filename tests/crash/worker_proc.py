"""A worker process for crash tests: serves the `Counter` workflow until SIGTERM (or SIGKILL).

Run: python -m tests.crash.worker_proc --servers HOST:PORT --namespace NS --state-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from grctl import Connection, Context, Directive, Worker, Workflow

STEPS = ["start", "s1", "s2", "s3", "s4"]

counter = Workflow(workflow_type="Counter")


async def bump(ctx: Context, name: str) -> None:
    count = await ctx.store.get("count") or 0
    ctx.store.put("count", count + 1)
    seen = await ctx.store.get("steps") or []
    ctx.store.put("steps", [*seen, name])


@counter.start()
async def start(ctx: Context) -> Directive:
    await bump(ctx, "start")
    return ctx.next.step(s1)


@counter.step()
async def s1(ctx: Context) -> Directive:
    await bump(ctx, "s1")
    return ctx.next.step(s2)


@counter.step()
async def s2(ctx: Context) -> Directive:
    await bump(ctx, "s2")
    return ctx.next.step(s3)


@counter.step()
async def s3(ctx: Context) -> Directive:
    await bump(ctx, "s3")
    return ctx.next.step(s4)


@counter.step()
async def s4(ctx: Context) -> Directive:
    await bump(ctx, "s4")
    return ctx.next.complete({"count": await ctx.store.get("count"), "steps": await ctx.store.get("steps")})


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    conn = await Connection.connect(args.servers, args.namespace)
    worker = Worker([counter], conn, state_dir=args.state_dir)
    worker.install_signal_handlers()
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
