"""`WorkerMetrics` without a broker: what a scrape exports from what the hooks counted.

The group committer under test is the real one, with the in-memory publisher of the
committer's tests standing in for the Kafka transaction only.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from grctl.worker._observe.metrics import STEP_BUCKETS, WorkerMetrics
from grctl.worker._observe.spans import observer_for
from grctl.worker._session.commit import GroupCommitter, TimedPublisher
from grctl.worker._session.errors import SessionRestart
from tests.unit.publisher import InMemoryPublisher


def samples(m: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(m.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_step_counts_and_a_cumulative_histogram(caplog: pytest.LogCaptureFixture) -> None:
    m = WorkerMetrics("w1", "ns", lambda: None)
    for seconds, kind in [(0.0002, "step"), (0.003, "complete"), (0.003, "error"), (7.0, "timeout"), (0.5, "suspend")]:
        m.step_started("Order")
        m.step_finished("Order", kind, seconds)
    got = samples(m)  # no event loop: the scrape says so and still exports the counters
    t = (("workflow_type", "Order"),)
    assert got[("grctl_steps_started_total", t)] == 5
    assert got[("grctl_steps_completed_total", t)] == 2
    assert got[("grctl_steps_failed_total", (("reason", "error"), *t))] == 1
    assert got[("grctl_steps_failed_total", (("reason", "timeout"), *t))] == 1
    assert got[("grctl_steps_suspended_total", t)] == 1
    buckets = [got[("grctl_step_duration_seconds_bucket", (("le", repr(float(b))), *t))] for b in STEP_BUCKETS]
    assert buckets == sorted(buckets) and buckets[0] == 1  # cumulative; 0.2 ms is in the first
    assert got[("grctl_step_duration_seconds_bucket", (("le", "+Inf"), *t))] == 5
    assert got[("grctl_step_duration_seconds_count", t)] == 5
    assert got[("grctl_step_duration_seconds_sum", t)] == pytest.approx(7.5062)
    assert got[("grctl_worker_loop_responsive", ())] == 0
    assert any("event loop is not running" in r.getMessage() for r in caplog.records)


def test_readiness_follows_sessions_assignments_and_restores() -> None:
    m = WorkerMetrics("w1", "ns", lambda: None)
    assert not m.ready
    m.session_started()
    m.assign_started([0, 1])
    m.restore_progress(0, 10, 100)
    assert not m.ready and m.restoring == {0: (10, 100)}
    assert samples(m)[("grctl_restore_remaining_records", (("partition", "0"),))] == 90
    m.partition_restored(0, 100, 0.5)
    m.partition_restored(1, 0, 0.01)
    m.assign_done()
    assert m.ready
    m.revoked(lost=False)
    assert not m.ready
    m.assign_done()
    m.session_restarted()
    assert not m.ready
    got = samples(m)
    assert got[("grctl_rebalances_total", (("kind", "assign"),))] == 1
    assert got[("grctl_rebalances_total", (("kind", "revoke"),))] == 1
    assert got[("grctl_session_restarts_total", ())] == 1
    assert got[("grctl_restore_records_total", ())] == 100


async def test_timed_publisher_times_commits_and_counts_failed_transactions(tmp_path) -> None:
    from grctl.state.partition_store import PartitionStore

    m = WorkerMetrics("w1", "ns", lambda: None)
    inner = InMemoryPublisher()
    committer = GroupCommitter(TimedPublisher(inner, m))
    store = PartitionStore(tmp_path / "p0")
    try:
        committer.attach(0, store, lambda: None)
        for n in range(3):
            committer.stage(0, b"k%d" % n, b"v")
        committer.produce("t", 0, b"k", b"v")
        await committer.flush()
        inner.fail_next = RuntimeError("broker gone")
        committer.produce("t", 0, b"k", b"v")
        with pytest.raises(SessionRestart):
            await committer.flush()
    finally:
        store.close()
    got = samples(m)
    assert got[("grctl_commit_duration_seconds_count", ())] == 1
    assert got[("grctl_commit_batch_size_count", ())] == 1
    assert got[("grctl_commit_batch_size_sum", ())] == 4  # three state writes and one record
    assert got[("grctl_transactions_failed_total", ())] == 1


def test_a_run_ending_transition_is_counted_and_traced_by_one_observer() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from grctl import tracing
    from grctl.engine.machine import Transition
    from grctl.engine.records import HistoryRecord, RunRecord
    from grctl.models.run_info import RunStateKind, RunStatus

    m = WorkerMetrics("w1", "ns", lambda: None)
    assert observer_for(None) is None
    assert observer_for(m) is m  # tracing off: metrics only
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        observer = observer_for(m)
        assert observer is not None and observer is not m
        run = RunRecord(
            run_id="01RUN", wf_id="o-1", wf_type="Order", status=RunStatus.failed, state=RunStateKind.fail,
            started_ms=1_000, ended_ms=1_250,
        )  # fmt: skip
        error = {"type": "PayloadTooLargeError", "message": "the result of 2,000,000 bytes is over 983,104"}
        tr = Transition(run=run)
        tr.history.append(
            HistoryRecord(kind="run.failed", wf_id="o-1", run_id="01RUN", ts_ms=1_250, msg={"error": error})
        )
        observer.transition_staged(tr)
        observer.dead_lettered(2)
    finally:
        tracing.disable()
        provider.shutdown()
    got = samples(m)
    t = (("workflow_type", "Order"),)
    assert got[("grctl_runs_ended_total", (("status", "failed"), *t))] == 1
    assert got[("grctl_runs_failed_payload_too_large_total", t)] == 1
    assert got[("grctl_dead_letter_records_total", (("partition", "2"),))] == 1
    (span,) = exporter.get_finished_spans()
    assert span.name == "grctl.run Order" and span.attributes["grctl.status"] == "failed"
    assert (span.start_time, span.end_time) == (1_000 * 1_000_000, 1_250 * 1_000_000)


async def test_a_scrape_reads_the_session_on_the_event_loop() -> None:
    from grctl.worker._observe.view import PartitionView, SessionView

    loop = asyncio.get_running_loop()
    seen_on: list[asyncio.AbstractEventLoop] = []

    def read() -> SessionView:
        seen_on.append(asyncio.get_running_loop())
        return SessionView([PartitionView(3, 10, 10, running_steps=2, timers_pending=5, next_timer_due_ms=None)])

    m = WorkerMetrics("w1", "ns", read)
    m.loop = loop
    got = await loop.run_in_executor(None, samples, m)
    assert seen_on == [loop]
    assert got[("grctl_partitions_owned", ())] == 1
    assert got[("grctl_steps_running", (("partition", "3"),))] == 2
    assert got[("grctl_timers_pending", (("partition", "3"),))] == 5
    assert got[("grctl_worker_loop_responsive", ())] == 1


async def test_run_gauges_sum_the_partitions_index_counts_and_state_sizes_are_per_partition() -> None:
    from grctl.worker._observe.view import PartitionView, SessionView

    def part(p: int, runs: dict[str, dict[str, int]], keys: int, size: int) -> PartitionView:
        return PartitionView(
            p, 0, 0, running_steps=0, timers_pending=0, next_timer_due_ms=None,
            runs=runs, state_keys=keys, state_bytes=size,
        )  # fmt: skip

    view = SessionView(
        [
            part(0, {"running": {"Order": 2}, "completed": {"Order": 5, "Refund": 1}}, 40, 4096),
            part(1, {"running": {"Order": 1}}, 7, 512),
        ],
        state_memory=(3 * 2**20, 256 * 2**20),
    )
    m = WorkerMetrics("w1", "ns", lambda: view)
    m.loop = asyncio.get_running_loop()
    got = await m.loop.run_in_executor(None, samples, m)
    assert got[("grctl_runs", (("status", "running"), ("workflow_type", "Order")))] == 3
    assert got[("grctl_runs", (("status", "completed"), ("workflow_type", "Order")))] == 5
    assert got[("grctl_runs", (("status", "completed"), ("workflow_type", "Refund")))] == 1
    assert ("grctl_runs", (("status", "running"), ("workflow_type", "Refund"))) not in got
    assert got[("grctl_state_keys", (("partition", "0"),))] == 40
    assert got[("grctl_state_bytes", (("partition", "1"),))] == 512
    assert got[("grctl_state_memory_bytes", ())] == 3 * 2**20
    assert got[("grctl_state_memory_limit_bytes", ())] == 256 * 2**20


def test_the_endpoint_answers_every_path_in_turn_with_its_own_length() -> None:
    """The probes and the metrics from one server, asked one after another (a header list
    shared between responses once sent /ready's length with /live's body)."""
    import urllib.error
    import urllib.request

    from grctl.worker._observe.http import MetricsServer

    m = WorkerMetrics("w1", "ns", lambda: None)
    server = MetricsServer(m, 0, "127.0.0.1", lambda: True)
    server.start()
    host, port = server.address

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    try:
        assert get("/ready") == (503, b"not ready: waiting for its partitions\n")
        m.assign_done()
        assert get("/ready") == (200, b"ready\n")
        code, body = get("/live")  # no event loop answers here: not live, and says why
        assert code == 503 and body.startswith(b"not live: ")
        code, body = get("/metrics")
        assert code == 200 and b"grctl_worker_info" in body
        assert get("/ready") == (200, b"ready\n")
        assert get("/nope") == (404, b"not found: try /metrics, /ready or /live\n")
    finally:
        server.stop()
