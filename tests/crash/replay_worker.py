"""Workflows for replay crash tests, served by a worker process.

GRCTL_TEST_PHASE=A: steps block (forever) after their recorded calls, so the test can SIGKILL
the process at a known point. GRCTL_TEST_PHASE=B: the replacement worker, same code path
without the block (or with changed code where a scenario says so). GRCTL_TEST_SIDE_DIR: where
tasks append their side effects (one line per call), to count real calls across processes.

Run: python -m tests.crash.replay_worker --servers S --namespace NS --state-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

import msgspec

from grctl import Connection, Context, Directive, RetryPolicy, Worker, Workflow
from grctl.worker import task

PHASE = os.environ.get("GRCTL_TEST_PHASE", "A")
SIDE = Path(os.environ.get("GRCTL_TEST_SIDE_DIR", "/tmp"))
#: The sleep that worker A is killed in: longer than A's part of the test takes (a few seconds
#: here, and more than 10 s on a loaded 2-core CI machine, where 10 s was too short: A wrote
#: `sleep.recorded` before it was killed), so that A is still sleeping when it dies; B sleeps
#: what remains of it.
SLEEP_MID_S = 30


async def block_in_a() -> None:
    if PHASE == "A":
        await asyncio.Event().wait()


def side_effect(name: str) -> int:
    path = SIDE / f"{name}.calls"
    with path.open("a") as fh:
        fh.write(f"{PHASE}\n")
    return len(path.read_text().splitlines())


class Greeting(msgspec.Struct):
    text: str
    count: int


@task
async def record_call(key: str) -> str:
    side_effect(key)
    return f"did {key}"


@task(retry_policy=RetryPolicy(max_attempts=2, initial_delay_ms=1))
async def fails_twice(key: str) -> None:
    side_effect(key)
    raise ValueError("original error")


@task
async def cancelling(key: str) -> None:
    side_effect(key)
    raise asyncio.CancelledError()


@task
async def greet(value: str) -> str:
    return f"hi {value}"


@task
async def task_a() -> str:
    return "a"


@task
async def task_b() -> str:
    return "b"


@task
async def make_struct(key: str) -> Greeting:
    side_effect(key)
    return Greeting(text="hello", count=3)


replay = Workflow(workflow_type="Replay")


@replay.start()
async def start(ctx: Context, scenario: str) -> Directive:
    if scenario == "step8":  # STEP-8: a task in the start step itself
        await record_call(ctx.run.wf_id)
        await block_in_a()
        return ctx.next.complete("done")
    ctx.store.put("scenario", scenario)
    return ctx.next.step(work)


@replay.step(timeout=timedelta(minutes=5))
async def work(ctx: Context) -> Directive:
    scenario = await ctx.store.get("scenario", str)
    if scenario == "now":  # CTX-4
        value = await ctx.now()
        await block_in_a()
        return ctx.next.complete(value.isoformat())
    if scenario == "random":  # CTX-6
        r = await ctx.random()
        await block_in_a()
        return ctx.next.complete(r)
    if scenario == "uuid":  # CTX-10
        u = await ctx.uuid4()
        await block_in_a()
        return ctx.next.complete(str(u))
    if scenario == "sleep":  # CTX-8: A blocks after sleep.recorded
        await ctx.sleep(timedelta(seconds=2))
        await block_in_a()
        return ctx.next.complete("done")
    if scenario == "sleep_mid":  # CTX-8 with A killed while it sleeps
        await ctx.sleep(timedelta(seconds=SLEEP_MID_S))
        return ctx.next.complete("done")
    if scenario == "task":  # TASK-10/11
        await record_call(ctx.run.wf_id)
        await block_in_a()
        return ctx.next.complete("done")
    if scenario == "task_failed":  # TASK-12
        try:
            await fails_twice(ctx.run.wf_id)
        except ValueError:
            await block_in_a()
            raise
        return ctx.next.complete("not reached")
    if scenario == "task_cancelled":  # TASK-13
        try:
            await cancelling(ctx.run.wf_id)
        except asyncio.CancelledError:
            await block_in_a()
            return ctx.next.complete("cancelled")
        return ctx.next.complete("not reached")
    if scenario == "args_changed":  # TASK-14: B passes other arguments
        await greet(value="hello" if PHASE == "A" else "world")
        await block_in_a()
        return ctx.next.complete("done")
    if scenario == "order_changed":  # TASK-15: B calls task_b first
        if PHASE == "A":
            await task_a()
            await block_in_a()
        else:
            await task_b()
            await task_a()
        return ctx.next.complete("done")
    if scenario == "struct":  # TASK-31
        g = await make_struct(ctx.run.wf_id)
        await block_in_a()
        assert isinstance(g, Greeting), type(g)
        return ctx.next.complete(g)
    if scenario in ("child7", "child11"):  # CHILD-7 / CHILD-11 (B starts a child with another id)
        child_id = f"{ctx.run.wf_id}-c" if scenario == "child7" or PHASE == "A" else f"{ctx.run.wf_id}-{PHASE}-other"
        await ctx.start_child("RChild", child_id, {"mode": "quick"})
        await block_in_a()
        return ctx.next.complete("parent-done")
    if scenario == "child10":  # CHILD-10: run_child, the child blocked in its second step in A
        return ctx.next.complete(await ctx.run_child("RChild", f"{ctx.run.wf_id}-c", {"mode": "two_steps"}))
    if scenario in ("child8", "child9"):  # the child sends to the parent, then blocks in A
        await ctx.start_child("RChild", f"{ctx.run.wf_id}-c", {"mode": scenario})
        return ctx.next.wait()
    if scenario == "all":  # issue 5's crash replay: every recorded kind in one step
        ctx.logger.info("ALL-1 %s", ctx.run.wf_id)
        when = await ctx.now()
        roll = await ctx.random()
        ident = await ctx.uuid4()
        ctx.logger.info("ALL-2 %s", ctx.run.wf_id)
        done = await record_call(ctx.run.wf_id)
        await ctx.sleep(timedelta(milliseconds=500))
        await block_in_a()
        return ctx.next.complete({"now": when.isoformat(), "random": roll, "uuid": str(ident), "task": done})
    if scenario == "logger":  # each line once across the crash
        ctx.logger.info("LOGLINE-1 %s", ctx.run.wf_id)
        await ctx.now()
        ctx.logger.info("LOGLINE-2 %s", ctx.run.wf_id)
        await ctx.random()
        await block_in_a()
        ctx.logger.info("LOGLINE-3 %s", ctx.run.wf_id)
        return ctx.next.complete("done")
    raise ValueError(f"unknown scenario {scenario}")


@replay.event()
async def child_done(ctx: Context) -> Directive:
    return ctx.next.complete("parent-done")


@replay.event()
async def status_v1(ctx: Context) -> Directive:
    return ctx.next.complete("v1")


@replay.event()
async def status_v2(ctx: Context) -> Directive:
    return ctx.next.complete("v2")


rchild = Workflow(workflow_type="RChild")


@rchild.start()
async def rchild_start(ctx: Context, mode: str) -> Directive:
    if mode == "two_steps":
        return ctx.next.step(rchild_second)
    if mode == "child8":
        await ctx.send_to_parent("child_done")
        await block_in_a()
        return ctx.next.complete("sent")
    if mode == "child9":
        await ctx.send_to_parent("status_v1" if PHASE == "A" else "status_v2")
        await block_in_a()
        return ctx.next.complete("sent")
    return ctx.next.complete("child-done")


@rchild.step(timeout=timedelta(minutes=5))
async def rchild_second(ctx: Context) -> Directive:
    await record_call(ctx.run.wf_id)
    await block_in_a()
    return ctx.next.complete("child-done")


timer_wf = Workflow(workflow_type="TimerCrash")


@timer_wf.start()
async def timer_start(ctx: Context) -> Directive:
    return ctx.next.wait(timeout=timedelta(seconds=3), on_timeout=timer_fired)


@timer_wf.step()
async def timer_fired(ctx: Context) -> Directive:
    side_effect(f"{ctx.run.wf_id}.fired")
    return ctx.next.complete("timed_out")


@timer_wf.event()
async def never(ctx: Context) -> Directive:
    return ctx.next.complete("event")


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(process)d %(name)s %(message)s")
    conn = await Connection.connect(args.servers, args.namespace)
    worker = Worker([replay, rchild, timer_wf], conn, state_dir=args.state_dir)
    worker.install_signal_handlers()
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
