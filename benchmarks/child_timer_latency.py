"""Child round trip and timer lateness, with one worker in this process.

Usage: python -m benchmarks.child_timer_latency [HOST:PORT]
Prints the child round trip (parent child.started -> callback step.started) p50/p99 over 100
parents run one after another, and the wait-timeout lateness (wait.timed_out - due) p50/p99 over
200 timers of 0.5-2.5 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import tempfile
from datetime import timedelta

from ulid import ULID

from grctl import Client, Connection, Context, Directive, Worker, Workflow
from grctl.models import HistoryKind
from grctl.worker import ChildOutcome

parent = Workflow(workflow_type="P")


@parent.start()
async def parent_start(ctx: Context) -> Directive:
    await ctx.start_child("C", ctx.run.wf_id + "-c", on_completed_step=done)
    return ctx.next.wait()


@parent.step()
async def done(ctx: Context, outcome: ChildOutcome) -> Directive:
    return ctx.next.complete(outcome.result)


child = Workflow(workflow_type="C")


@child.start()
async def child_start(ctx: Context) -> Directive:
    return ctx.next.complete(1)


timer = Workflow(workflow_type="T")


@timer.start()
async def timer_start(ctx: Context, ms: int) -> Directive:
    return ctx.next.wait(timeout=timedelta(milliseconds=ms), on_timeout=fired)


@timer.step()
async def fired(ctx: Context) -> Directive:
    return ctx.next.complete("fired")


@timer.event()
async def ev(ctx: Context) -> Directive:
    return ctx.next.complete("ev")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    servers = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092")
    conn = await Connection.connect(servers, "lat" + str(ULID())[-8:].lower(), partitions=12)
    worker = Worker([parent, child, timer], conn, state_dir=tempfile.mkdtemp(prefix="grctl-lat-"))
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(60)
    client = Client(conn)
    try:
        await client.run_workflow("P", "warm")
        round_trips = []
        for i in range(100):
            await client.run_workflow("P", f"p{i}")
        for i in range(100):
            history = await client.get_history(f"p{i}")
            started = next(e for e in history if e.kind == HistoryKind.child_started).timestamp
            callback = next(
                e for e in history if e.kind == HistoryKind.step_started and e.msg.step_name == "done"
            ).timestamp
            assert started is not None and callback is not None
            round_trips.append((callback - started).total_seconds() * 1000)
        print("child round trip ms (child.started -> callback step.started): "
              f"p50 {pct(round_trips, 0.5)} p99 {pct(round_trips, 0.99)}")  # fmt: skip
        handles = [await client.start_workflow("T", f"t{i}", {"ms": 500 + 10 * i}) for i in range(200)]
        assert all(r == "fired" for r in await asyncio.gather(*(h.result(timeout=60) for h in handles)))
        lateness = []
        for i in range(200):
            history = await client.get_history(f"t{i}")
            waited = next(e for e in history if e.kind == HistoryKind.wait_started).timestamp
            timed_out = next(e for e in history if e.kind == HistoryKind.wait_timed_out).timestamp
            assert waited is not None and timed_out is not None
            lateness.append((timed_out - waited).total_seconds() * 1000 - (500 + 10 * i))
        print(f"timer lateness ms (wait.timed_out - due): p50 {pct(lateness, 0.5)} p99 {pct(lateness, 0.99)}")
    finally:
        await client.close()
        await worker.stop()
        await running


if __name__ == "__main__":
    asyncio.run(main())
