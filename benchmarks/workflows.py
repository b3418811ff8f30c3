"""Workflows used by the benchmarks, and a worker process serving them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from grctl import Connection, Context, Directive, Worker, Workflow

chain = Workflow(workflow_type="Chain10")


@chain.start()
async def chain_start(ctx: Context, steps: int = 10) -> Directive:
    ctx.store.put("left", steps - 1)
    return ctx.next.step(link) if steps > 1 else ctx.next.complete(0)


@chain.step()
async def link(ctx: Context) -> Directive:
    left = await ctx.store.get("left", int)
    if left <= 1:
        return ctx.next.complete(left)
    ctx.store.put("left", left - 1)
    return ctx.next.step(link)


one = Workflow(workflow_type="OneStep")


@one.start()
async def one_start(ctx: Context) -> Directive:
    return ctx.next.complete("ok")


WORKFLOWS = [chain, one]


async def serve(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    conn = await Connection.connect(args.servers, args.namespace)
    worker = Worker(WORKFLOWS, conn, state_dir=args.state_dir)
    worker.install_signal_handlers()
    await worker.run()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1:]))
