"""A mixed load against worker processes while a fault is injected, and what it measured.

The load (paced, open loop) starts, per tick, a 5-step `Counter` chain and, in turn, a `Mixed`
run (a task that fails twice before it succeeds, a durable timer, a child), a `FanOut` of 10
children, or a `Waiter` that the load releases with an event a moment later (all defined in
tests/crash/worker_proc.py). Every run's result is checked, every run's history (children
included) step by step (`check_history` says what per type), and `verify_namespace` must find
the namespace clean.

Measured from the completion times of the runs: the rate before the fault, the recovery time
(from the fault until the completions of a 1 s window are back to 80 % of the offered rate) and
the longest gap without any completion, overall and per partition. Starts and events that no worker acknowledges in time are
queued in `directives`, not lost: the load awaits such a run through `get_workflow_handle`. A write
that Kafka did not acknowledge is checked for and sent again only if it did not land (`drive`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from grctl import Client, Connection
from grctl.client.handle import WorkflowHandle
from grctl.client.verify import verify_namespace
from grctl.errors import (
    KafkaSetupError,
    NoWorkerAnsweredError,
    WorkflowAlreadyRunningError,
    WorkflowNotFoundError,
)
from grctl.kafka.partitioner import partition_for
from grctl.kafka.topics import delete_namespace
from grctl.models.run_info import RunStateKind
from tests.crash.test_crash_exactly_once import WorkerProcess, assert_ran_once, history_by_run
from tests.crash.worker_proc import FAN, STEPS

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "build" / "test-output" / "faults"

#: Completion-rate window for the recovery time.
WINDOW_S = 1.0
RECOVERED_FRACTION = 0.8


@dataclass
class Run:
    wf_type: str
    wf_id: str
    expected: Any
    started_at: float
    input: Any = None
    done_at: float | None = None
    unanswered: int = 0  # requests no worker acknowledged in time (queued, not lost)
    unacknowledged: int = 0  # writes Kafka did not acknowledge within the client's delivery timeout


@dataclass
class FaultReport:
    """What one fault test measured (written to build/test-output/faults/<name>.json)."""

    name: str
    runs: int = 0
    faults: int = 0
    worker_kills: int = 0
    lost: int = 0
    duplicated: int = 0
    rate_before: float = 0.0
    recovery_s: list[float | None] = field(default_factory=list)
    longest_gap_s: float = 0.0
    longest_partition_gap_s: float = 0.0
    unanswered_requests: int = 0
    unacknowledged_writes: int = 0
    elapsed_s: float = 0.0

    def save(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        print(f"fault report {self.name}: {json.dumps(self.__dict__)}")
        return path


Fault = Callable[["FaultContext"], Awaitable[None]]


@dataclass
class FaultContext:
    """What a fault function may use: the workers, a seeded rng, and a way to mark fault times."""

    workers: list[WorkerProcess]
    rng: random.Random
    fault_times: list[float] = field(default_factory=list)

    def mark(self) -> None:
        self.fault_times.append(time.monotonic())


def plan(i: int, rng: random.Random) -> Run:
    now = time.monotonic()
    if i % 7 == 3:
        return Run("Mixed", f"mixed-{i}", 2 * i + 7, now, {"n": i})
    if i % 11 == 5:
        return Run("FanOut", f"fan-{i}", list(range(FAN)), now)
    if i % 5 == 1:
        return Run("Waiter", f"wait-{i}", i, now)
    return Run("Counter", f"run-{i}", {"count": 5, "steps": STEPS}, now)


async def drive(client: Client, run: Run, release_after: float) -> Any:
    """Start one run, release it if it waits for an event, and return its result.

    A request that no worker acknowledged in time is queued in `directives` and is not sent
    again. A write that Kafka itself did not acknowledge (`KafkaSetupError`: the partition's
    leader was down, or its ISR below min.insync.replicas, for longer than the client's 30 s
    delivery timeout) may or may not have landed; the load then does what a careful user does:
    it asks on the same partition (ordered behind that write by the idempotent producer) whether
    it landed, and sends it again only if it did not.
    """
    handle = None
    while handle is None:
        try:
            handle = await client.start_workflow(run.wf_type, run.wf_id, run.input)
        except NoWorkerAnsweredError as exc:
            if exc.timeout == 0:
                raise  # failed fast, nothing sent: "no worker at all" must not happen during a fault
            run.unanswered += 1  # the start is in `directives` and runs when a worker reads it
            break
        except WorkflowAlreadyRunningError:
            break  # an earlier, unacknowledged write of this start did land
        except KafkaSetupError:
            run.unacknowledged += 1
            handle = await _handle_if_started(client, run)
    if run.wf_type == "Waiter":
        await asyncio.sleep(release_after)
        await _release(client, run)
    while handle is None:
        try:
            handle = await client.get_workflow_handle(run.wf_id)
        except NoWorkerAnsweredError:
            run.unanswered += 1  # the owner is busy recovering: ask again (a watch is idempotent)
        except KafkaSetupError:
            run.unacknowledged += 1
    result = await handle.result(timeout=300)
    run.done_at = time.monotonic()
    return result


async def _handle_if_started(client: Client, run: Run) -> WorkflowHandle | None:
    """A handle on `run` if its start landed, None if it did not (then it must be sent again)."""
    while True:
        try:
            return await client.get_workflow_handle(run.wf_id)
        except WorkflowNotFoundError:
            return None
        except NoWorkerAnsweredError:
            run.unanswered += 1
        except KafkaSetupError:
            run.unacknowledged += 1


async def _release(client: Client, run: Run) -> None:
    """Send the Waiter's `release` event once: again only while the run is seen still waiting for it."""
    try:
        await client.send_event(run.wf_id, "release", {"value": run.expected})
        return
    except NoWorkerAnsweredError as exc:
        if exc.timeout == 0:
            raise
        run.unanswered += 1  # queued: sending it again would deliver it twice
        return
    except KafkaSetupError:
        run.unacknowledged += 1
    while True:  # did the unacknowledged event land? (a describe is ordered behind it)
        try:
            info = await client.describe(run.wf_id)
        except (NoWorkerAnsweredError, KafkaSetupError):
            run.unanswered += 1
            continue
        except WorkflowNotFoundError:
            await asyncio.sleep(0.5)  # its start is queued behind a recovering owner
            continue
        if info.status.is_terminal or info.pending_events or info.state == RunStateKind.step:
            return  # it landed: handled, queued, or its handler is running
        if info.waiting_for_event:
            await _release(client, run)  # it did not land
            return
        await asyncio.sleep(0.5)  # still in its start step: ask again once that has moved


def recovery_times(
    done: list[float], faults: list[float], rate_before: float, load_end: float | None = None
) -> list[float | None]:
    """For each fault: seconds from it until the rate is back to 80 % of `rate_before` after its dip.

    The dip is the first moment after the fault (before the next fault and before `load_end`,
    when the offered load stops and the rate falls anyway) when the last
    WINDOW_S seconds hold fewer than 80 % of `rate_before` completions; recovered is the first
    completion after the dip whose window holds 80 % again. A fault with no dip before the next
    one recovers in 0 s; a rate that never comes back is None. (Measuring from the fault to the
    first full window instead reported 0.1 s for a 38 s stall that began 2 s after its fault.)
    """
    out: list[float | None] = []
    need = RECOVERED_FRACTION * rate_before * WINDOW_S
    times = sorted(done)
    order = sorted(faults)

    def count(t: float) -> int:  # completions in (t - WINDOW_S, t]
        return bisect.bisect_right(times, t) - bisect.bisect_right(times, t - WINDOW_S)

    for t0 in faults:
        i = bisect.bisect_right(order, t0)
        end = load_end if load_end is not None else (times[-1] if times else t0)
        horizon = max(min(order[i], end) if i < len(order) else end, t0 + WINDOW_S)
        # The window's count only falls when a completion leaves it, WINDOW_S after it happened.
        leaving = (t + WINDOW_S for t in times if t0 < t + WINDOW_S <= horizon)
        dip = next((m for m in itertools.chain([t0], leaving) if count(m) < need), None)
        if dip is None:
            out.append(0.0)
            continue
        back = next((t for t in times[bisect.bisect_right(times, dip) :] if count(t) >= need), None)
        out.append(None if back is None else back - t0)
    return out


async def run_with_fault(
    servers: str,
    namespace: str,
    tmp_path: Path,
    fault: Fault,
    *,
    name: str,
    rate: float = 40.0,
    duration_s: float = 30.0,
    workers_total: int = 1,
    partitions: int = 8,
    seed: int = 15,
    kafka_config: Mapping[str, str] | None = None,
    worker_endpoints: Sequence[tuple[str, Mapping[str, str]]] | None = None,
    load_while_fault: bool = False,
) -> FaultReport:
    """Drive the load for `duration_s` while `fault` runs, then check every run and the namespace.

    `load_while_fault`: the load goes on past `duration_s` until the fault has ended, so that a
    fault whose length depends on the machine (brokers restarting on a busy one) is under load
    from its beginning to its end.

    A secured cluster: `kafka_config` holds the credentials of the load's client and of the
    checks (history, verify, the namespace's deletion); `worker_endpoints`, if given, the
    bootstrap and credentials of each worker (one per worker; default: `servers`, `kafka_config`).
    """
    conn = await Connection.connect(servers, namespace, partitions=partitions, kafka_config=dict(kafka_config or {}))
    if worker_endpoints is None:
        worker_endpoints = [(servers, kafka_config or {})] * workers_total
    assert len(worker_endpoints) == workers_total, (len(worker_endpoints), workers_total)
    workers = [
        WorkerProcess(bootstrap, namespace, tmp_path / f"state-{i}", tmp_path / f"worker-{i}.log", kafka_config=cfg)
        for i, (bootstrap, cfg) in enumerate(worker_endpoints)
    ]
    for w in workers:
        w.start()
    report = FaultReport(name)
    client = Client(conn)
    rng = random.Random(seed)
    ctx = FaultContext(workers, rng)
    runs: list[Run] = []
    try:
        await client.wait_for_workers(60)
        t_start = time.monotonic()
        fault_task = asyncio.create_task(fault(ctx))
        tasks = []
        total = int(rate * duration_s)
        # With `load_while_fault`, past `duration_s` as long as the fault is not over.
        for i in itertools.count():
            if i >= total and not (load_while_fault and not fault_task.done()):
                break
            delay = t_start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            run = plan(i, rng)
            runs.append(run)
            tasks.append(asyncio.create_task(drive(client, run, rng.uniform(0.2, 1.0))))
        await fault_task
        results = await settle(runs, tasks, workers, partitions)
        report.elapsed_s = time.monotonic() - t_start
        for run, result in zip(runs, results, strict=True):
            assert result == run.expected, (run, result)
    finally:
        await client.close()
        for w in workers:
            w.stop()
        RESULTS.mkdir(parents=True, exist_ok=True)
        for w in workers:  # kept beside the report for a look at what the worker did during the fault
            if w.log.exists():
                shutil.copyfile(w.log, RESULTS / f"{name}-{w.log.name}")
    report.runs = len(runs)
    report.faults = len(ctx.fault_times)
    report.worker_kills = sum(w.kills for w in workers)
    report.unanswered_requests = sum(r.unanswered for r in runs)
    report.unacknowledged_writes = sum(r.unacknowledged for r in runs)
    done = sorted(r.done_at for r in runs if r.done_at is not None)
    first_fault = min(ctx.fault_times, default=done[-1])
    before = [t for t in done if t_start + 3.0 <= t < first_fault]
    span = max(first_fault - (t_start + 3.0), WINDOW_S)
    report.rate_before = len(before) / span
    # Recovered: a window completes 80 % of the offered rate (the rate measured before the first
    # fault is short and includes the warm-up, so it is reported, not used).
    report.recovery_s = recovery_times(done, ctx.fault_times, rate, load_end=t_start + len(runs) / rate)
    gaps = [b - a for a, b in itertools.pairwise(done)]
    report.longest_gap_s = max(gaps, default=0.0)
    by_partition: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        if r.done_at is not None:
            by_partition[partition_for(r.wf_id, partitions)].append(r.done_at)
    report.longest_partition_gap_s = max(
        (b - a for times in by_partition.values() for a, b in itertools.pairwise(sorted(times))), default=0.0
    )

    check_history(servers, conn, runs)
    verdict = await asyncio.to_thread(verify_namespace, conn)
    report.lost = verdict.counts["lost"]
    report.duplicated = verdict.counts["duplicated"]
    report.save()
    assert verdict.clean, verdict.to_dict()
    assert report.lost == report.duplicated == 0
    await asyncio.to_thread(drop_namespace, conn)
    return report


def drop_namespace(conn: Connection) -> None:
    """Delete a passed test's topics (a failed one keeps them to be looked at).

    The cluster lives for a whole module: every partition left behind is one more log that a
    SIGKILLed broker recovers before it serves again (a restart took 91 s in CI by the last test).
    """
    with contextlib.suppress(KafkaException, TimeoutError):
        delete_namespace(AdminClient(conn.client_config()), conn.topics)
        return
    logging.getLogger(__name__).warning("the topics of namespace %s were not deleted", conn.namespace)


#: How long the runs may take to finish after the load and the fault have ended. Below the test's
#: pytest timeout, so that a hang fails with the runs that did not finish instead of a stack dump.
SETTLE_S = 150.0


async def settle(
    runs: list[Run], tasks: list[asyncio.Task[Any]], workers: list[WorkerProcess], partitions: int
) -> list[Any]:
    """The runs' results, or an AssertionError naming the unfinished runs and the workers' last lines."""
    _done, pending = await asyncio.wait(tasks, timeout=SETTLE_S)
    if not pending:
        return [t.result() for t in tasks]
    for t in pending:
        t.cancel()
    unfinished = [r for r, t in zip(runs, tasks, strict=True) if t in pending]
    by_partition = Counter(partition_for(r.wf_id, partitions) for r in unfinished)
    for w in workers:  # where each live worker is stuck, in its log (kept beside the report)
        await asyncio.to_thread(w.dump_stacks)
    tails = "\n".join(f"--- {w.log.name} (exit {w.returncode()}):\n{w.tail(40)}" for w in workers)
    raise AssertionError(
        f"{len(unfinished)} of {len(runs)} runs unfinished {SETTLE_S:.0f} s after the load, by partition "
        f"{dict(sorted(by_partition.items()))}; first: {[r.wf_id for r in unfinished[:10]]}\n{tails}"
    )


def check_history(servers: str, conn: Connection, runs: list[Run]) -> None:
    """Every run, step by step: started once, ended once, and what each type must show exactly once.

    - Counter: its five steps completed once each, in order.
    - Waiter: one event received, its start and its `release` step completed once each.
    - Mixed: the flaky task completed once (attempts may fail and repeat across crashes), the
      durable timer fired once, one child started, the two steps after it completed once each.
    - FanOut: `FAN` distinct children started once each, `collect` completed once per child.
    - Every child (of Mixed and FanOut) itself started once and completed once.
    """
    by_run = history_by_run(servers, conn)
    for run in runs:
        recs = by_run[run.wf_id]
        assert_ran_once(run.wf_id, recs, STEPS if run.wf_type == "Counter" else None)
        kinds = Counter(r.kind for r in recs)
        steps = Counter(r.msg["step_name"] for r in recs if r.kind == "step.completed")
        children = [r.msg["wf_id"] for r in recs if r.kind == "child.started"]
        if run.wf_type == "Waiter":
            assert kinds["event.received"] == 1, (run.wf_id, kinds)
            assert steps == {"start": 1, "release": 1}, (run.wf_id, steps)
        elif run.wf_type == "Mixed":
            tasks = Counter(r.msg["task_name"] for r in recs if r.kind == "task.completed")
            assert list(tasks.values()) == [1], (run.wf_id, tasks)
            assert kinds["wait.timed_out"] == 1, (run.wf_id, kinds)
            assert children == [f"{run.wf_id}-7"], (run.wf_id, children)
            assert steps == {"start": 1, "mixed_after_timer": 1, "mixed_child_done": 1}, (run.wf_id, steps)
        elif run.wf_type == "FanOut":
            assert sorted(children) == sorted(f"{run.wf_id}-{i}" for i in range(FAN)), (run.wf_id, children)
            assert steps == {"start": 1, "collect": FAN}, (run.wf_id, steps)
        for child in children:
            assert_ran_once(child, by_run[child])


def env_scale() -> float:
    """GRCTL_FAULT_SCALE multiplies the load's duration (default 1; the CI runs 1)."""
    return float(os.environ.get("GRCTL_FAULT_SCALE", "1"))
