"""The worker's Prometheus metrics: the counters its hooks add to, and the collector that exports them.

Cheap on the hot path: the engine's hooks only add to plain integers and lists of a
`WorkerMetrics` (no lock, no label lookup in prometheus_client, no allocation per step); the
`prometheus_client` metric families are built from them when Prometheus scrapes
(`_Collector.collect`). What only needs reading (partitions owned, consumer lag, running steps,
timers pending) is read at scrape time, on the worker's event loop, from the current session:
no hook at all. The hooks live in the worker's private modules, one or two lines each, and
change no behaviour:

| hook | where |
|---|---|
| `step_started`, `step_finished` | `_session.executor.StepExecutor._execute` |
| `transition_staged` (runs by status, too big), `dead_lettered`, `schedule_staged` | `_partition.processor` |
| `transaction_committed`, `transaction_failed` | `_session.commit.TimedPublisher`, around the publisher |
| `assign_started`, `restore_progress`, `partition_restored`, `assign_done`, `revoked` | `_session.rebalance` |
| `timer_fired_late` | `_session.timers.TimerLoop` |
| `session_started`, `session_restarted` | `worker.Worker.run` |

What a scrape reads of the session is a `SessionView` (`.view`) the session builds on the
event loop (`WorkerSession.view`): nothing here imports the session. The HTTP endpoint is
`.http`.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from grctl.models.history import RUN_END_STATUS
from grctl.worker._observe.view import SessionView

if TYPE_CHECKING:
    from grctl.engine.limiters import LimiterState, LimiterTransition
    from grctl.engine.machine import Transition
    from grctl.engine.schedules import ScheduleTransition

logger = logging.getLogger("grctl.worker")

#: Step durations, seconds (steps run from well under a millisecond to minutes).
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Kafka transaction latency, seconds (p50 ~4 ms on a local broker, docs/local-kafka.md).
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Records and state writes in one transaction (bounded by MAX_BATCH_RECORDS, 20,000).
BATCH_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 5000, 10_000, 20_000, 50_000)
#: How late a durable timer fired, seconds.
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: How late a schedule's tick started its run (fired time - tick time), seconds; jitter included.
TICK_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
#: How long a granted request waited for its permit, seconds (0 when uncontended; minutes behind a slow API).
PERMIT_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
#: How often librdkafka reports the consumer's partition offsets (the consumer lag's source).
STATS_INTERVAL_MS = 5_000
#: A scrape or a liveness probe waits this long for the event loop's answer.
LOOP_ANSWER_TIMEOUT_S = 2.0
PAYLOAD_TOO_LARGE = "PayloadTooLargeError"


class _Histogram:
    """Non-cumulative bucket counts and a sum; cumulated when collected."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        counts = list(self.counts)  # one copy: the +Inf bucket and the count agree
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out, self.total


class _TypeStats:
    """What the engine counted for one workflow type."""

    __slots__ = (
        "duration",
        "runs_ended",
        "runs_payload_too_large",
        "runs_started",
        "steps_completed",
        "steps_errors",
        "steps_started",
        "steps_suspended",
        "steps_timeouts",
    )

    def __init__(self) -> None:
        self.steps_started = 0
        self.steps_completed = 0
        self.steps_errors = 0
        self.steps_timeouts = 0
        self.steps_suspended = 0
        self.duration = _Histogram(STEP_BUCKETS)
        self.runs_started = 0
        self.runs_ended: dict[str, int] = {}
        self.runs_payload_too_large = 0


class WorkerMetrics:
    """The counters a worker's hooks add to, and the collector that exports them.

    One per `Worker` (it outlives sessions). Every hook runs on the event loop, but
    `restore_progress`, which runs in the restore thread and only replaces a tuple.

    Args:
        worker_id: the worker's id (label of `grctl_worker_info`).
        namespace: the grctl namespace (label of `grctl_worker_info`).
        read_session: called on the event loop at scrape time; what the current session owns
            (None between sessions).
    """

    def __init__(self, worker_id: str, namespace: str, read_session: Callable[[], SessionView | None]) -> None:
        self.worker_id = worker_id
        self.namespace = namespace
        self._read_session = read_session
        self._types: dict[str, _TypeStats] = {}
        self.commit_latency = _Histogram(COMMIT_BUCKETS)
        self.batch_size = _Histogram(BATCH_BUCKETS)
        self.transactions_failed = 0
        self.session_restarts = 0
        self.rebalances: dict[str, int] = {"assign": 0, "revoke": 0, "lost": 0}
        self.dead_letters: dict[int, int] = {}
        self.timer_lateness = _Histogram(LATENESS_BUCKETS)
        self.ticks_fired = 0
        self.ticks_skipped = 0
        self.ticks_buffered = 0
        self.ticks_missed = 0
        self.ticks_ahead = 0
        self.ticks_withdrawn = 0
        self.tick_lateness = _Histogram(TICK_LATENESS_BUCKETS)
        #: Remote tasks (issue 28): requests sent per queue, answers applied per outcome, answers
        #: dropped per reason (late, duplicate, ...), attempts timed out per timeout kind.
        self.task_requests: dict[str, int] = {}
        #: Limiters (issue 29) kept on this worker's partitions: name -> (in use, waiting, concurrency
        #: limit or -1) as of its last transition; grants, releases and refusals; waits of granted requests.
        self.limiter_state: dict[str, tuple[int, int, int]] = {}
        self.limiter_grants: dict[str, int] = {}
        self.limiter_releases: dict[str, int] = {}
        self.limiter_refused: dict[str, int] = {}
        self.limiter_wait = _Histogram(PERMIT_WAIT_BUCKETS)
        self.permits_dropped = 0
        self.task_answers: dict[str, int] = {}
        self.task_dropped: dict[str, int] = {}
        self.task_timeouts: dict[str, int] = {}
        self.restore_records = 0
        self.restore_seconds = 0.0
        #: partition -> (records read so far, records to read) while it restores.
        self.restoring: dict[int, tuple[int, int]] = {}
        self._assigned = False  # the current session has its partitions
        self._rebalancing = False
        #: partition of `directives` -> (last stable offset, offset committed when assigned, next
        #: offset to fetch), from librdkafka's statistics of the session's consumer (`consumer_stats`).
        self.offsets: dict[int, tuple[int, int, int]] = {}
        self.directives_topic = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def _stats(self, wf_type: str) -> _TypeStats:
        st = self._types.get(wf_type)
        if st is None:
            st = self._types[wf_type] = _TypeStats()
        return st

    # ------------------------------------------------------------------ hooks: steps and runs

    def step_started(self, wf_type: str) -> None:
        """A step began executing (its `step.started` is staged)."""
        self._stats(wf_type).steps_started += 1

    def step_finished(self, wf_type: str, next_kind: str, seconds: float) -> None:
        """A step's execution ended with `next_kind` (a `StepOutcome.next_kind`) after `seconds`."""
        st = self._stats(wf_type)
        if next_kind == "error":
            st.steps_errors += 1
        elif next_kind == "timeout":
            st.steps_timeouts += 1
        elif next_kind == "suspend":
            st.steps_suspended += 1
        else:
            st.steps_completed += 1
        st.duration.observe(seconds)

    def limiter_staged(self, name: str, tr: LimiterTransition, state: LimiterState | None) -> None:
        """A limiter's transition was staged: its gauges, grants, releases, refusals and waits."""
        if state is None:
            self.limiter_state.pop(name, None)
        else:
            rec = state.record
            conc = rec.spec.concurrency
            self.limiter_state[name] = (rec.in_use, rec.waiting, conc if conc is not None else -1)
        if tr.granted:
            self.limiter_grants[name] = self.limiter_grants.get(name, 0) + len(tr.granted)
            for _fairness, waited_ms in tr.granted:
                self.limiter_wait.observe(waited_ms / 1000)
        if tr.released:
            self.limiter_releases[name] = self.limiter_releases.get(name, 0) + tr.released
        if tr.refused:
            self.limiter_refused[name] = self.limiter_refused.get(name, 0) + tr.refused

    def transition_staged(self, tr: Transition) -> None:
        """A transition was staged: count the runs it starts and ends, and its remote task traffic."""
        if tr.permit_dropped:
            self.permits_dropped += 1
        if tr.tasks or tr.task_dropped is not None or tr.journal or (tr.run is not None and tr.run.remote is not None):
            self._remote_staged(tr)
        run = tr.run
        if run is None:
            return
        for h in tr.history:
            kind = h.kind
            if kind == "run.started":
                self._stats(run.wf_type).runs_started += 1
                continue
            status = RUN_END_STATUS.get(kind)  # type: ignore[call-overload]  # a wire str; HistoryKind is a StrEnum
            if status is None:
                continue
            st = self._stats(run.wf_type)
            st.runs_ended[status] = st.runs_ended.get(status, 0) + 1
            if status == "failed":
                error = (h.msg or {}).get("error") or {}
                if isinstance(error, dict) and error.get("type") == PAYLOAD_TOO_LARGE:
                    st.runs_payload_too_large += 1

    def _remote_staged(self, tr: Transition) -> None:
        if tr.task_dropped is not None:
            self.task_dropped[tr.task_dropped] = self.task_dropped.get(tr.task_dropped, 0) + 1
        for out in tr.tasks:
            if type(out.record).__name__ == "TaskRequest":
                self.task_requests[out.queue] = self.task_requests.get(out.queue, 0) + 1
        for h in tr.history:
            if h.kind in ("task.completed", "task.failed", "task.attempt_failed"):
                error = (h.msg or {}).get("error") or {}
                timeout = error.get("timeout") if isinstance(error, dict) else None
                if timeout:
                    self.task_timeouts[timeout] = self.task_timeouts.get(timeout, 0) + 1
        for _seq, _pos, entry in tr.journal:
            if entry[0] != "remote_task":
                continue  # a limiter's grant
            outcome = "completed" if entry[2].get("ok") else "failed"
            self.task_answers[outcome] = self.task_answers.get(outcome, 0) + 1

    def dead_lettered(self, partition: int) -> None:
        """An input record of `partition` went to dead-letter."""
        self.dead_letters[partition] = self.dead_letters.get(partition, 0) + 1

    def schedule_staged(self, tr: ScheduleTransition) -> None:
        """A schedule's transition was staged: count its ticks, observe how late each run started."""
        for _tick, late_ms in tr.fired:
            self.tick_lateness.observe(max(0, late_ms) / 1000)
            if late_ms < 0:
                self.ticks_ahead += 1
        self.ticks_fired += len(tr.fired)
        self.ticks_withdrawn += tr.withdrawn
        self.ticks_skipped += tr.skipped_ticks
        self.ticks_buffered += tr.buffered_ticks
        self.ticks_missed += tr.missed_ticks

    def transaction_committed(self, seconds: float, size: int) -> None:
        """A transaction of `size` records and state writes committed after `seconds`."""
        self.commit_latency.observe(seconds)
        self.batch_size.observe(size)

    def transaction_failed(self) -> None:
        """A transaction did not commit."""
        self.transactions_failed += 1

    def timer_fired_late(self, seconds: float) -> None:
        """A due timer fired `seconds` after its due time."""
        self.timer_lateness.observe(max(0.0, seconds))

    # ------------------------------------------------------------------ hooks: sessions and partitions

    def consumer_config(self, directives_topic: str) -> dict[str, Any]:
        """Options for the session's consumer: librdkafka statistics every `STATS_INTERVAL_MS`."""
        self.directives_topic = directives_topic
        return {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": self.consumer_stats}

    def consumer_stats(self, stats_json: str) -> None:
        """librdkafka's statistics (called on the consumer thread, in poll): partition offsets."""
        try:
            topic = json.loads(stats_json).get("topics", {}).get(self.directives_topic, {})
            offsets = {}
            for key, part in topic.get("partitions", {}).items():
                p = int(key)
                if p >= 0 and part.get("fetch_state") not in (None, "none", "stopped"):
                    offsets[p] = (
                        int(part.get("ls_offset", -1)),
                        int(part.get("committed_offset", -1)),
                        int(part.get("next_offset", -1)),
                    )
        except (ValueError, TypeError, AttributeError) as exc:
            logger.debug("unreadable librdkafka statistics: %s", exc)
            return
        self.offsets = offsets  # replaced whole: the scraping thread reads one consistent dict

    def session_started(self) -> None:
        """A new session begins: not ready until it has its partitions."""
        self._assigned = False
        self._rebalancing = False
        self.restoring.clear()

    def session_restarted(self) -> None:
        """A session failed and will be replaced."""
        self.session_restarts += 1
        self._assigned = False

    def assign_started(self, partitions: Iterable[int]) -> None:
        """An assignment arrived: its partitions restore now."""
        self.rebalances["assign"] += 1
        self._rebalancing = True

    def restore_progress(self, partition: int, done: int, total: int) -> None:
        """Restore of `partition`: `done` of `total` changelog records read (restore thread)."""
        self.restoring[partition] = (done, total)

    def partition_restored(self, partition: int, records: int, seconds: float) -> None:
        """`partition` is restored and open."""
        self.restoring.pop(partition, None)
        self.restore_records += records
        self.restore_seconds += seconds

    def assign_done(self) -> None:
        """Every partition of the assignment is open: the session is ready."""
        self._assigned = True
        self._rebalancing = False

    def revoked(self, lost: bool) -> None:
        """Partitions were revoked (or lost): a rebalance is under way."""
        self.rebalances["lost" if lost else "revoke"] += 1
        self._rebalancing = True
        self.limiter_state.clear()  # the limiters may have moved; their next transitions report them again

    @property
    def ready(self) -> bool:
        """The session has its partitions, all restored, and no rebalance is under way."""
        return self._assigned and not self._rebalancing and not self.restoring

    # ------------------------------------------------------------------ reading

    def read_session(self, timeout: float = LOOP_ANSWER_TIMEOUT_S) -> SessionView | None:
        """Read the session on the event loop, from another thread.

        Raises:
            TimeoutError: the loop did not answer within `timeout` (it is stuck or gone).
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            raise TimeoutError("the worker's event loop is not running")
        fut: concurrent.futures.Future[SessionView | None] = concurrent.futures.Future()

        def read() -> None:
            try:
                fut.set_result(self._read_session())
            except BaseException as exc:  # noqa: BLE001  # handed to the scraping thread, which raises it
                fut.set_exception(exc)

        try:
            loop.call_soon_threadsafe(read)
        except RuntimeError:  # loop closed meanwhile
            raise TimeoutError("the worker's event loop is not running") from None
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the worker's event loop did not answer within {timeout:g}s") from None

    def type_stats(self) -> list[tuple[str, _TypeStats]]:
        """Per workflow type, what was counted (a copy of the list, not of the stats)."""
        return list(self._types.items())


class _Collector(Collector):
    """Builds the metric families from a `WorkerMetrics` when Prometheus scrapes."""

    def __init__(self, m: WorkerMetrics) -> None:
        self._m = m

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self._m
        info = GaugeMetricFamily("grctl_worker_info", "The worker (always 1).", labels=["worker_id", "namespace"])
        info.add_metric([m.worker_id, m.namespace], 1)
        yield info
        try:
            view = m.read_session()
            responsive = 1.0
        except TimeoutError as exc:
            logger.warning("metrics scrape: %s", exc)
            view, responsive = None, 0.0
        yield GaugeMetricFamily(
            "grctl_worker_loop_responsive", "1 if the worker's event loop answered the scrape in time.", responsive
        )
        yield GaugeMetricFamily("grctl_worker_ready", "1 if the worker owns its partitions, all restored.", m.ready)

        started = CounterMetricFamily("grctl_steps_started", "Step executions begun.", labels=["workflow_type"])
        completed = CounterMetricFamily(
            "grctl_steps_completed", "Step executions that returned a directive.", labels=["workflow_type"]
        )
        failed = CounterMetricFamily(
            "grctl_steps_failed",
            "Step executions that failed: reason=error (raised) or timeout (step timeout).",
            labels=["workflow_type", "reason"],
        )
        suspended = CounterMetricFamily(
            "grctl_steps_suspended", "Step executions suspended for a long retry back-off.", labels=["workflow_type"]
        )
        duration = HistogramMetricFamily(
            "grctl_step_duration_seconds", "Duration of step executions.", labels=["workflow_type"]
        )
        runs_started = CounterMetricFamily(
            "grctl_runs_started", "Runs started on this worker's partitions.", labels=["workflow_type"]
        )
        runs_ended = CounterMetricFamily(
            "grctl_runs_ended", "Runs ended on this worker's partitions, by status.", labels=["workflow_type", "status"]
        )
        too_large = CounterMetricFamily(
            "grctl_runs_failed_payload_too_large",
            "Runs failed because a value was over the size limit (PayloadTooLargeError).",
            labels=["workflow_type"],
        )
        for wf_type, st in m.type_stats():
            started.add_metric([wf_type], st.steps_started)
            completed.add_metric([wf_type], st.steps_completed)
            failed.add_metric([wf_type, "error"], st.steps_errors)
            failed.add_metric([wf_type, "timeout"], st.steps_timeouts)
            suspended.add_metric([wf_type], st.steps_suspended)
            buckets, total = st.duration.buckets()
            duration.add_metric([wf_type], buckets, total)
            runs_started.add_metric([wf_type], st.runs_started)
            for status, n in list(st.runs_ended.items()):
                runs_ended.add_metric([wf_type, status], n)
            too_large.add_metric([wf_type], st.runs_payload_too_large)
        yield from (started, completed, failed, suspended, duration, runs_started, runs_ended, too_large)

        commit = HistogramMetricFamily(
            "grctl_commit_duration_seconds", "Kafka transaction latency (begin to commit) of each group commit."
        )
        buckets, total = m.commit_latency.buckets()
        commit.add_metric([], buckets, total)
        yield commit
        batch = HistogramMetricFamily(
            "grctl_commit_batch_size", "Records and state writes in each committed transaction."
        )
        buckets, total = m.batch_size.buckets()
        batch.add_metric([], buckets, total)
        yield batch
        yield CounterMetricFamily(
            "grctl_transactions_failed",
            "Transactions that did not commit (aborted; the session restarts).",
            m.transactions_failed,
        )
        yield CounterMetricFamily("grctl_session_restarts", "Sessions failed and restarted.", m.session_restarts)
        rebalances = CounterMetricFamily(
            "grctl_rebalances", "Rebalance callbacks, by kind (assign, revoke, lost).", labels=["kind"]
        )
        for kind, n in list(m.rebalances.items()):
            rebalances.add_metric([kind], n)
        yield rebalances
        dead = CounterMetricFamily(
            "grctl_dead_letter_records", "Input records sent to the dead-letter topic.", labels=["partition"]
        )
        for p, n in sorted(m.dead_letters.items()):
            dead.add_metric([str(p)], n)
        yield dead
        for family_name, doc, label_name, counts in (
            ("grctl_remote_task_requests", "Remote task requests sent (attempts).", "queue", m.task_requests),
            ("grctl_remote_task_outcomes", "Remote task outcomes journaled.", "outcome", m.task_answers),
            (
                "grctl_remote_task_answers_dropped",
                "Task answers not applied (late, duplicate, ...).",
                "reason",
                m.task_dropped,
            ),
            ("grctl_remote_task_timeouts", "Remote task attempts timed out.", "timeout", m.task_timeouts),
        ):
            family = CounterMetricFamily(family_name, doc, labels=[label_name])
            for key, n in sorted(counts.items()):
                family.add_metric([key], n)
            yield family
        yield from _limiter_families(m)
        lateness = HistogramMetricFamily(
            "grctl_timer_lateness_seconds", "How late the earliest due timer of a partition fired, per firing round."
        )
        buckets, total = m.timer_lateness.buckets()
        lateness.add_metric([], buckets, total)
        yield lateness
        yield CounterMetricFamily("grctl_schedule_ticks_fired", "Schedule ticks that started a run.", m.ticks_fired)
        yield CounterMetricFamily(
            "grctl_schedule_ticks_skipped", "Schedule ticks skipped by the overlap policy.", m.ticks_skipped
        )
        yield CounterMetricFamily(
            "grctl_schedule_ticks_buffered", "Schedule ticks buffered behind a running run.", m.ticks_buffered
        )
        yield CounterMetricFamily(
            "grctl_schedule_ticks_missed", "Schedule ticks older than the catch-up window (not fired).", m.ticks_missed
        )
        yield CounterMetricFamily(
            "grctl_schedule_ticks_ahead",
            "Schedule ticks whose run was committed ahead of the tick (its first step waits for the tick).",
            m.ticks_ahead,
        )
        yield CounterMetricFamily(
            "grctl_schedule_ticks_withdrawn",
            "Runs fired ahead of their tick and cancelled before it (the schedule paused, deleted or respecified).",
            m.ticks_withdrawn,
        )
        tick_late = HistogramMetricFamily(
            "grctl_schedule_tick_lateness_seconds",
            "How late each tick's run was committed: fired time minus the tick's time plus jitter (0 when ahead).",
        )
        buckets, total = m.tick_lateness.buckets()
        tick_late.add_metric([], buckets, total)
        yield tick_late
        yield CounterMetricFamily(
            "grctl_restore_records", "Changelog records replayed by partition restores.", m.restore_records
        )
        yield CounterMetricFamily("grctl_restore_seconds", "Time spent restoring partitions.", m.restore_seconds)
        remaining = GaugeMetricFamily(
            "grctl_restore_remaining_records", "Changelog records left to replay, per restoring partition.",
            labels=["partition"],
        )  # fmt: skip
        for p, (done, todo) in sorted(m.restoring.copy().items()):
            remaining.add_metric([str(p)], max(0, todo - done))
        yield remaining

        owned = GaugeMetricFamily(
            "grctl_partitions_owned", "Partitions this worker owns.", len(view.partitions) if view is not None else 0
        )
        lag = GaugeMetricFamily(
            "grctl_consumer_lag",
            "Directive records of an owned partition not processed yet (last stable offset - committed offset).",
            labels=["partition"],
        )
        running = GaugeMetricFamily("grctl_steps_running", "Steps executing now, per partition.", labels=["partition"])
        timers = GaugeMetricFamily(
            "grctl_timers_pending", "Durable timers due within the next minute (loaded in memory), per partition.",
            labels=["partition"],
        )  # fmt: skip
        overdue = GaugeMetricFamily(
            "grctl_timers_overdue_seconds", "How far past due the earliest armed timer is, per partition.",
            labels=["partition"],
        )  # fmt: skip
        purges = GaugeMetricFamily(
            "grctl_purges_pending",
            "Ended runs whose retention is over and whose state is not deleted yet, per partition (the backlog of "
            "purges; counted among the retention timers loaded in memory, at most 20,000 per partition).",
            labels=["partition"],
        )
        purge_lag = GaugeMetricFamily(
            "grctl_purge_lag_seconds", "How far past due the oldest pending purge is, per partition.",
            labels=["partition"],
        )  # fmt: skip
        state_keys = GaugeMetricFamily(
            "grctl_state_keys", "Keys in an owned partition's local state (RocksDB's estimate).", labels=["partition"]
        )
        state_bytes = GaugeMetricFamily(
            "grctl_state_bytes", "Bytes of an owned partition's local state (RocksDB files and memtables).",
            labels=["partition"],
        )  # fmt: skip
        runs = GaugeMetricFamily(
            "grctl_runs", "Latest runs held by this worker's partitions (their run indexes).",
            labels=["workflow_type", "status"],
        )  # fmt: skip
        memory = GaugeMetricFamily(
            "grctl_state_memory_bytes",
            "RocksDB memory of this worker in use (block cache and memtables of all its partitions).",
        )
        memory_limit = GaugeMetricFamily(
            "grctl_state_memory_limit_bytes", "The RocksDB memory budget of this worker (--state-memory-mb)."
        )
        open_runs = GaugeMetricFamily(
            "grctl_runs_open", "Runs not ended held by this worker's partitions, per workflow type and version "
            "(the drain count: a version at 0 everywhere can be removed).",
            labels=["workflow_type", "version"],
        )  # fmt: skip
        awaiting = GaugeMetricFamily(
            "grctl_runs_awaiting_code", "Runs parked because no worker owning them serves their version, step or "
            "event handler, per workflow type and version.",
            labels=["workflow_type", "version"],
        )  # fmt: skip
        by_version: dict[tuple[str, int], tuple[int, int]] = {}
        totals: dict[tuple[str, str], int] = {}
        if view is not None and view.state_memory is not None:
            memory.add_metric([], view.state_memory[0])
            memory_limit.add_metric([], view.state_memory[1])
        if view is not None:
            now_ms = time.time() * 1000
            offsets = m.offsets
            for pv in view.partitions:
                label = [str(pv.partition)]
                lso, committed_at_assign, fetch = offsets.get(pv.partition, (-1, -1, -1))
                consumed = pv.committed_offset if pv.committed_offset is not None else pv.next_offset
                if consumed is None:  # nothing read yet this session
                    consumed = committed_at_assign if committed_at_assign >= 0 else (fetch if fetch >= 0 else None)
                if lso >= 0 and consumed is not None:
                    # Everything fetched and committed: what is left up to the LSO are transaction
                    # markers, not records (an idle EOS partition would otherwise show a lag of 1).
                    caught_up = fetch >= lso and consumed == (
                        pv.next_offset if pv.next_offset is not None else consumed
                    )
                    lag.add_metric(label, 0 if caught_up else max(0, lso - consumed))
                running.add_metric(label, pv.running_steps)
                timers.add_metric(label, pv.timers_pending)
                due = pv.next_timer_due_ms
                overdue.add_metric(label, max(0.0, (now_ms - due) / 1000) if due is not None else 0.0)
                purges.add_metric(label, pv.purges_due)
                purge_due = pv.next_purge_due_ms
                purge_lag.add_metric(label, max(0.0, (now_ms - purge_due) / 1000) if purge_due is not None else 0.0)
                state_keys.add_metric(label, pv.state_keys)
                state_bytes.add_metric(label, pv.state_bytes)
                for status, by_type in pv.runs.items():
                    for wf_type, n in by_type.items():
                        totals[(wf_type, status)] = totals.get((wf_type, status), 0) + n
                for wf_type, versions in pv.versions.items():
                    for version, by_status in versions.items():
                        n_open, n_parked = by_version.get((wf_type, version), (0, 0))
                        by_version[(wf_type, version)] = (
                            n_open + sum(by_status.values()), n_parked + by_status.get("awaiting_code", 0)
                        )  # fmt: skip
        for (wf_type, status), n in sorted(totals.items()):
            runs.add_metric([wf_type, status], n)
        for (wf_type, version), (n_open, n_parked) in sorted(by_version.items()):
            open_runs.add_metric([wf_type, str(version)], n_open)
            awaiting.add_metric([wf_type, str(version)], n_parked)
        yield from (owned, lag, running, timers, overdue, purges, purge_lag, state_keys, state_bytes, runs, open_runs,
                    awaiting, memory, memory_limit)  # fmt: skip


def _limiter_families(m: WorkerMetrics) -> Iterator[Metric]:
    """The limiters' metrics: gauges of the limiters on this worker's partitions, counters, the wait."""
    in_use = GaugeMetricFamily("grctl_limiter_in_use", "Permits held, per limiter kept here.", labels=["limiter"])
    waiting = GaugeMetricFamily(
        "grctl_limiter_waiting", "Requests waiting for a permit, per limiter kept here.", labels=["limiter"]
    )
    limit = GaugeMetricFamily(
        "grctl_limiter_concurrency_limit", "The concurrency a limiter allows (-1: none).", labels=["limiter"]
    )
    for name, (used, waits, conc) in sorted(m.limiter_state.items()):
        in_use.add_metric([name], used)
        waiting.add_metric([name], waits)
        limit.add_metric([name], conc)
    yield from (in_use, waiting, limit)
    for family_name, doc, counts in (
        ("grctl_limiter_grants", "Permits granted.", m.limiter_grants),
        ("grctl_limiter_releases", "Permits given back.", m.limiter_releases),
        ("grctl_limiter_rejections", "Requests refused (an unknown or deleted limiter).", m.limiter_refused),
    ):
        family = CounterMetricFamily(family_name, doc, labels=["limiter"])
        for key, n in sorted(counts.items()):
            family.add_metric([key], n)
        yield family
    wait = HistogramMetricFamily(
        "grctl_limiter_wait_seconds", "How long granted requests waited for their permit (at the limiter)."
    )
    buckets, total = m.limiter_wait.buckets()
    wait.add_metric([], buckets, total)
    yield wait
    yield CounterMetricFamily(
        "grctl_permits_dropped",
        "Grants that reached a run no longer waiting for them (given back at once).",
        m.permits_dropped,
    )
