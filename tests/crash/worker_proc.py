"""A worker process for crash tests: serves `Counter`, `FanOut`, `Waiter` until SIGTERM (or SIGKILL).

Run: python -m tests.crash.worker_proc --servers HOST:PORT --namespace NS --state-dir DIR [--kafka-config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from confluent_kafka import Producer

from grctl import Connection, Context, Directive, Limiter, RetryPolicy, Worker, Workflow, task
from grctl.cli.common import read_kafka_config_file
from grctl.worker import ChildOutcome, Source, StartRun

STEPS = ["start", "s1", "s2", "s3", "s4"]

#: If set, every ended Counter run publishes its outcome to this topic (`results_topic`).
RESULTS_TOPIC = os.environ.get("GRCTL_CRASH_RESULTS_TOPIC")
#: If set, each record of this topic starts a Counter run (`Worker(sources=...)`), id from the record.
SOURCE_TOPIC = os.environ.get("GRCTL_CRASH_SOURCE_TOPIC")

counter = Workflow(workflow_type="Counter", results_topic=RESULTS_TOPIC)


#: If set, every Counter step also emits {"wf_id", "step"} to this topic (`ctx.emit`), keyed by wf_id.
EMIT_TOPIC = os.environ.get("GRCTL_CRASH_EMIT_TOPIC")


async def bump(ctx: Context, name: str) -> None:
    count = await ctx.store.get("count") or 0
    ctx.store.put("count", count + 1)
    seen = await ctx.store.get("steps") or []
    ctx.store.put("steps", [*seen, name])
    if EMIT_TOPIC:
        ctx.emit(EMIT_TOPIC, {"wf_id": ctx.run.wf_id, "step": name}, key=ctx.run.wf_id)


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


fan_out = Workflow(workflow_type="FanOut")
FAN = 10


@fan_out.start()
async def fan_start(ctx: Context) -> Directive:
    for i in range(FAN):
        await ctx.start_child("FanChild", f"{ctx.run.wf_id}-{i}", {"i": i}, on_completed_step=collect)
    ctx.store.put("got", [])
    return ctx.next.wait()


@fan_out.step()
async def collect(ctx: Context, outcome: ChildOutcome[int]) -> Directive:
    got = await ctx.store.get("got", list[int])
    assert outcome.ok and outcome.result is not None, outcome
    got.append(outcome.result)
    ctx.store.put("got", got)
    if len(got) == FAN:
        return ctx.next.complete(sorted(got))
    return ctx.next.wait()


fan_child = Workflow(workflow_type="FanChild")


@fan_child.start()
async def fan_child_start(ctx: Context, i: int) -> Directive:
    return ctx.next.step(fan_child_work)


@fan_child.step()
async def fan_child_work(ctx: Context) -> Directive:
    return ctx.next.complete(int(ctx.run.wf_id.rsplit("-", 1)[1]))


waiter = Workflow(workflow_type="Waiter")


@waiter.start()
async def waiter_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@waiter.event()
async def release(ctx: Context, value: int) -> Directive:
    return ctx.next.complete(value)


# Mixed: a task that fails twice in each process before it succeeds (retries, journaled
# attempts), a durable timer, then a child awaited by the parent. Result: 2 * n + 7.
mixed = Workflow(workflow_type="Mixed")
_flaky_calls: dict[str, int] = {}


@task(retry_policy=RetryPolicy(max_attempts=8, initial_delay_ms=20, backoff_multiplier=1.0))
async def flaky_double(key: str, n: int) -> int:
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] % 3 != 0:
        raise RuntimeError(f"flaky attempt {_flaky_calls[key]} of {key}")
    return n * 2


@mixed.start()
async def mixed_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("doubled", await flaky_double(ctx.run.wf_id, n))
    return ctx.next.wait(timeout=timedelta(milliseconds=300), on_timeout=mixed_after_timer)


@mixed.step()
async def mixed_after_timer(ctx: Context) -> Directive:
    await ctx.start_child("FanChild", f"{ctx.run.wf_id}-7", {"i": 7}, on_completed_step=mixed_child_done)
    return ctx.next.wait()


@mixed.step()
async def mixed_child_done(ctx: Context, outcome: ChildOutcome[int]) -> Directive:
    assert outcome.ok and outcome.result == 7, outcome
    return ctx.next.complete(await ctx.store.get("doubled") + outcome.result)


# RemoteChain (issue 28): three remote tasks in a row on queue "crash", answered by the task
# workers of tests/crash/task_worker_proc.py. Result: n + 1 + 2 + 3.
remote_chain = Workflow(workflow_type="RemoteChain")


@remote_chain.start()
async def remote_chain_start(ctx: Context, n: int) -> Directive:
    total = n
    for k in (1, 2, 3):
        total = await ctx.remote_task(
            "add",
            {"value": total, "add": k},
            queue="crash",
            timeout=timedelta(seconds=4),
            retry_policy=RetryPolicy(max_attempts=20, initial_delay_ms=200, backoff_multiplier=1.0),
        )
    return ctx.next.complete(total)


# Audited (issue 29): a section under limiter "audit-api" (concurrency AUDIT_LIMIT) that records
# when each execution of it enters and leaves in an independent topic, flushed before the section's
# work and at its end (also when the step is cancelled), with the process id: a killed process's
# open sections end at its kill, which the test records.
AUDIT_TOPIC = os.environ.get("GRCTL_CRASH_AUDIT_TOPIC")
AUDIT_LIMIT = 20
audited = Workflow(workflow_type="Audited")
_audit: dict[str, Producer] = {}


def audit(servers: str, kind: str, wf_id: str, token: str) -> None:
    producer = _audit.get("p")
    if producer is None:
        producer = _audit["p"] = Producer({"bootstrap.servers": servers, "acks": "all", "linger.ms": 0})
    assert AUDIT_TOPIC is not None
    rec = {"kind": kind, "wf_id": wf_id, "token": token, "pid": os.getpid(), "t": time.monotonic_ns()}
    producer.produce(AUDIT_TOPIC, json.dumps(rec).encode())
    left = producer.flush(30)
    assert left == 0, "the audit record was not acknowledged"


@audited.start()
async def audited_start(ctx: Context, tenant: str, hold_ms: int) -> Directive:
    servers = _audit_servers[0]
    async with ctx.limit("audit-api", fairness=tenant):
        token = uuid.uuid4().hex  # one per execution of the section (not journaled: the audit is outside)
        try:
            await asyncio.to_thread(audit, servers, "in", ctx.run.wf_id, token)
            await asyncio.sleep(hold_ms / 1000)
        finally:
            audit(servers, "out", ctx.run.wf_id, token)  # blocking on purpose: recorded even when cancelled
    return ctx.next.complete(tenant)


_audit_servers: list[str] = []


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--kafka-config", type=Path, help="librdkafka settings, a key=value file (a secured cluster)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    logging.getLogger("grctl.worker").setLevel(logging.DEBUG)  # rebalance and restore detail in the test logs
    # SIGUSR1 writes every thread's stack to the log (`WorkerProcess.dump_stacks`): what a stalled worker waits on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    kafka_config = read_kafka_config_file(args.kafka_config) if args.kafka_config else None
    conn = await Connection.connect(args.servers, args.namespace, kafka_config=kafka_config)
    sources = [Source(SOURCE_TOPIC, lambda rec: StartRun("Counter"), format="raw")] if SOURCE_TOPIC else None
    _audit_servers.append(args.servers)
    limiters = [Limiter("audit-api", concurrency=AUDIT_LIMIT)] if AUDIT_TOPIC else None
    worker = Worker(
        [counter, fan_out, fan_child, waiter, mixed, remote_chain, audited], conn, state_dir=args.state_dir,
        sources=sources, limiters=limiters,
    )  # fmt: skip
    worker.install_signal_handlers()
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
