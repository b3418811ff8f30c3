"""The limiter audit (issue 29): a concurrency of 20 holds under SIGKILL, the small tenant gets its share, nothing leaks.

`Audited` runs (tests/crash/worker_proc.py) enter a section under limiter "audit-api"
(concurrency 20, declared by the workers) with fairness key "big" or "small"; each execution of
the section writes "in" and "out" to an independent audit topic, flushed. Two worker processes
serve them; one is SIGKILLed and restarted at random moments while 3,030 runs (3,000 of tenant
"big", 30 of "small", interleaved) go through. Then:

- the audit: at no moment were more than 20 executions inside (an execution of a killed process
  ends at its kill), and 20 were reached (the limit was exercised);
- fairness: the limiter served the small tenant within 2x of its fair share: with equal weights a
  fair limiter gives it at least every second grant, so its request waits at most until the
  second grant after the limiter read it (the limiter's own times, from the grants in the
  history: a request's trip through Kafka before the limiter reads it is not the scheduler's);
  FIFO's wait for the same grants is printed beside it;
- no permit is left counted, none lost (`grctl verify`, which checks permits), and the limiter's
  counts are back to 0 in use and 0 waiting.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from grctl import Client, Connection
from grctl.client.verify import verify_namespace
from grctl.kafka.topics import admin_client
from tests.crash.test_crash_exactly_once import WorkerProcess, history_by_run

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

LIMIT = 20
BIG, SMALL = 3000, 30


def read_audit(servers: str, topic: str) -> list[dict[str, Any]]:
    c = Consumer({"bootstrap.servers": servers, "group.id": "audit-reader", "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, 0)
        _low, high = c.get_watermark_offsets(tp, timeout=10, cached=False)
        tp.offset = 0
        c.assign([tp])
        out: list[dict[str, Any]] = []
        while len(out) < high:
            msg = c.poll(5)
            assert msg is not None, f"the audit topic stopped at {len(out)} of {high} records"
            if msg.error() is None:
                out.append(json.loads(msg.value() or b"{}"))
        return out
    finally:
        c.close()


def most_inside(records: list[dict[str, Any]], kills: dict[int, int]) -> int:
    """The most executions inside the section at once; an execution of a killed process ends at its kill."""
    opened: dict[str, tuple[int, int]] = {}
    closed: dict[str, int] = {}
    for r in records:
        if r["kind"] == "in":
            opened[r["token"]] = (r["t"], r["pid"])
        else:
            closed[r["token"]] = r["t"]
    moments: list[tuple[int, int]] = []
    for token, (t_in, pid) in opened.items():
        t_out = closed.get(token)
        if t_out is None:
            assert pid in kills, f"execution {token} of live process {pid} never recorded its end"
            t_out = kills[pid]
        moments.append((t_in, 1))
        moments.append((max(t_in, t_out), -1))
    moments.sort()  # at the same instant an end (-1) counts before a start
    inside = top = 0
    for _t, d in moments:
        inside += d
        top = max(top, inside)
    return top


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def test_limiter_audit_under_sigkill_two_tenants(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    ns = "audit" + unique_name[-10:].lower()
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=8)
    audit_topic = f"grctl-test-audit-{unique_name[-12:].lower()}"
    admin = admin_client(conn.client_config())
    admin.create_topics([NewTopic(audit_topic, num_partitions=1, replication_factor=1)])[audit_topic].result(30)
    env = {"GRCTL_CRASH_AUDIT_TOPIC": audit_topic}
    workers = [
        WorkerProcess(kafka_bootstrap, ns, tmp_path / f"state-{i}", tmp_path / f"worker-{i}.log", env=env)
        for i in range(2)
    ]
    for w in workers:
        w.start()
    rng = random.Random(2929)
    kills: dict[int, int] = {}  # pid -> when it was dead (monotonic ns, the clock the audit records use)
    client = Client(conn)

    async def chaos() -> None:
        for _ in range(3):
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            victim = rng.choice(workers)
            assert victim.proc is not None
            pid = victim.proc.pid
            victim.kill()
            kills[pid] = time.monotonic_ns()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            victim.start()

    try:
        await client.wait_for_workers(60)
        started = time.monotonic()
        chaos_task = asyncio.create_task(chaos())
        sem = asyncio.Semaphore(200)
        plan = [("big", i) for i in range(BIG)]
        for j in range(SMALL):  # one small run per 100 big ones, through the whole load
            plan.insert((j + 1) * (BIG // SMALL) + j, ("small", j))

        async def one(tenant: str, i: int) -> Any:
            async with sem:
                return await client.start_workflow(
                    "Audited", f"{tenant}-{i}", {"tenant": tenant, "hold_ms": rng.randint(5, 25)}
                )

        handles = await asyncio.gather(*(one(t, i) for t, i in plan))
        try:
            results = await asyncio.gather(*(h.result(timeout=180) for h in handles))
        except TimeoutError:
            # What stalls: the limiter's counts, and what verify says of the runs and permits.
            stuck = await client.describe_limiter("audit-api")
            report = await asyncio.to_thread(verify_namespace, conn)
            raise AssertionError(f"runs did not finish: limiter {stuck.to_dict()}; verify {report.to_dict()}") from None
        await chaos_task
        elapsed = time.monotonic() - started
        limiter = await client.describe_limiter("audit-api")
    finally:
        await client.close()
        for w in workers:
            w.stop()
    assert sorted(results) == sorted(t for t, _ in plan)
    assert (limiter.in_use, limiter.waiting, limiter.granted) == (0, 0, BIG + SMALL), limiter

    # 1. The audit: never above the limit, and the limit was reached.
    records = await asyncio.to_thread(read_audit, kafka_bootstrap, audit_topic)
    top = most_inside(records, kills)
    assert top <= LIMIT, f"{top} executions were inside the section at once (limit {LIMIT})"
    assert top == LIMIT, f"the load never reached the limit ({top}): the audit proves nothing"

    # 2. Fairness, on the limiter's own times (each grant's request and grant time, from the history).
    by_run = await asyncio.to_thread(history_by_run, kafka_bootstrap, conn)
    grants: list[tuple[str, int, int]] = []  # (tenant, requested_ms, granted_ms)
    for wf_id, recs in by_run.items():
        mine = [r.msg for r in recs if r.kind == "permit.granted"]
        assert len(mine) == 1, (wf_id, len(mine))  # one grant per run, however often its step ran
        grants.append((wf_id.split("-")[0], int(mine[0]["requested_ms"]), int(mine[0]["granted_ms"])))
    times = sorted(g for _t, _r, g in grants)
    small = [(r, g) for t, r, g in grants if t == "small"]
    waited = [g - r for r, g in small]
    fair = [times[min(len(times) - 1, bisect.bisect_left(times, r) + 1)] - r for r, _g in small]
    arrivals = sorted(r for _t, r, _g in grants)
    fifo = [times[bisect.bisect_left(arrivals, r)] - r for r, _g in small]
    p99, fair99, fifo99 = percentile(waited, 0.99), percentile(fair, 0.99), percentile(fifo, 0.99)
    p50, fair50, fifo50 = percentile(waited, 0.5), percentile(fair, 0.5), percentile(fifo, 0.5)
    assert p99 <= 2 * fair99, f"the small tenant's p99 wait {p99} ms is over twice its fair share's {fair99} ms"

    # 3. Nothing leaked, nothing lost, every run once.
    report = await asyncio.to_thread(verify_namespace, conn)
    assert report.clean and report.runs == BIG + SMALL, report.to_dict()
    print(
        f"{BIG + SMALL} runs ({BIG} big, {SMALL} small) through limiter audit-api (concurrency {LIMIT}), "
        f"{sum(w.kills for w in workers)} SIGKILLs, {elapsed:.1f}s; most inside at once {top}; "
        f"small tenant wait p50/p99 {p50}/{p99} ms (fair share {fair50}/{fair99} ms, FIFO would be "
        f"{fifo50}/{fifo99} ms); "
        f"{len(records)} audit records; verify clean"
    )
