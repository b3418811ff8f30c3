"""Journal recording and replay of ctx calls and tasks, without a broker.

The sink here is a plain list-backed implementation of the `JournalSink` protocol (what the
partition processor provides), not a stand-in for Kafka: journal matching is pure logic.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from grctl import Context, Directive, RetryPolicy, Workflow
from grctl.errors import NonDeterminismError
from grctl.models.run_info import RunInfo
from grctl.worker.codec import default_codec
from grctl.worker.runtime import JournalEntry, StepRuntime, StepSuspended
from grctl.worker.store import Store
from grctl.worker.task import task


class ListSink:
    """A step's journal so far (`journal`: what earlier executions recorded) and its history."""

    def __init__(self, journal: list[JournalEntry] | None = None) -> None:
        self.journal: list[JournalEntry] = list(journal or [])
        self.history: list[tuple[str, Any]] = []

    def journal_append(self, runtime: StepRuntime, position: int, entry: JournalEntry) -> None:
        assert position == len(self.journal)
        self.journal.append(entry)

    def history_append(self, runtime: StepRuntime, kind: str, msg: Any, operation_id: str = "") -> None:
        self.history.append((kind, msg))

    def send_directive(self, runtime: StepRuntime, cmd: Any) -> None:
        raise AssertionError("not used here")

    def child_outcome(self, runtime: StepRuntime, child_wf_id: str) -> asyncio.Future[dict[str, Any]]:
        raise AssertionError("not used here")


wf = Workflow(workflow_type="Rt")


@wf.start()
async def start(ctx: Context) -> Directive:
    return ctx.next.complete(None)


def make_ctx(sink: ListSink, recorded: list[JournalEntry] | None = None) -> tuple[Context, StepRuntime]:
    rt = StepRuntime(
        wf_id="wf", run_id="run", wf_type="Rt", step_name="start", seq=1, recorded=recorded or [], sink=sink
    )
    rt.codec = default_codec()
    ctx = Context(
        run=RunInfo(id="run", wf_id="wf", wf_type="Rt"),
        workflow=wf,
        store=Store(lambda _k: None, default_codec()),
        runtime=rt,
        codec=default_codec(),
    )
    return ctx, rt


async def test_ctx_values_are_recorded_then_replayed() -> None:
    sink = ListSink()
    ctx, _ = make_ctx(sink)
    now, rnd, uid = await ctx.now(), await ctx.random(), await ctx.uuid4()
    assert now.tzinfo is not None and 0.0 <= rnd < 1.0 and isinstance(uid, uuid.UUID)
    assert [e.kind for e in sink.journal] == ["now", "random", "uuid4"]
    assert [k for k, _ in sink.history] == ["timestamp.recorded", "random.recorded", "uuid.recorded"]

    replay_sink = ListSink()
    ctx2, rt2 = make_ctx(replay_sink, list(sink.journal))
    assert rt2.is_replaying
    assert (await ctx2.now(), await ctx2.random(), await ctx2.uuid4()) == (now, rnd, uid)
    assert not rt2.is_replaying
    assert replay_sink.journal == [] and replay_sink.history == []  # nothing recorded twice


async def test_other_call_at_a_position_is_non_determinism() -> None:
    recorded = [JournalEntry("now", "now", datetime.now(UTC))]
    ctx, _ = make_ctx(ListSink(), recorded)
    with pytest.raises(NonDeterminismError) as info:
        await ctx.random()
    err = info.value
    assert (err.step, err.position, err.expected, err.got) == ("start", 0, "now:now", "random:random")
    assert "deterministic" in str(err)


async def test_logger_is_silent_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    recorded = [JournalEntry("random", "random", 0.5)]
    ctx, _ = make_ctx(ListSink(), recorded)
    with caplog.at_level(logging.INFO, logger="grctl.workflow.Rt"):
        ctx.logger.info("before replay ends")
        await ctx.random()
        ctx.logger.info("live now")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["live now"]
    assert caplog.records[0].wf_id == "wf" and caplog.records[0].run_id == "run"  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [-1, timedelta(seconds=-1), float("nan")])
async def test_sleep_rejects_invalid_durations(bad: Any) -> None:
    ctx, _ = make_ctx(ListSink())
    with pytest.raises(ValueError, match=r"ctx\.sleep"):
        await ctx.sleep(bad)


async def test_sleep_rejects_wrong_types() -> None:
    ctx, _ = make_ctx(ListSink())
    with pytest.raises(TypeError, match="timedelta or seconds"):
        await ctx.sleep("5s")  # type: ignore[arg-type]


async def test_sleep_records_its_event_when_it_ends() -> None:
    """The deadline is journaled when the sleep starts; `sleep.recorded` only once it ended."""
    sink = ListSink()
    ctx, _ = make_ctx(sink)
    sleeping = asyncio.create_task(ctx.sleep(timedelta(milliseconds=50)))
    await asyncio.sleep(0)  # one turn of the loop: the task runs up to its wait
    assert [e.kind for e in sink.journal] == ["sleep"]
    assert sink.history == [], "sleep.recorded was written before the sleep ended"
    await sleeping
    deadline_ms = sink.journal[0].value
    assert [(e.kind, e.name) for e in sink.journal] == [("sleep", "sleep"), ("sleep_end", "sleep")]
    assert sink.history == [("sleep.recorded", {"duration_ms": 50, "until_ms": deadline_ms})]


async def test_cancelled_sleep_records_no_event() -> None:
    sink = ListSink()
    ctx, _ = make_ctx(sink)
    sleeping = asyncio.create_task(ctx.sleep(timedelta(hours=1)))
    await asyncio.sleep(0)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
    assert [e.kind for e in sink.journal] == ["sleep"]
    assert sink.history == []


async def test_sleep_replays_its_deadline() -> None:
    """A crash during the sleep: the re-execution waits for what remains, then writes the event."""
    past_deadline_ms = int(datetime.now(UTC).timestamp() * 1000) - 10_000
    recorded = [JournalEntry("sleep", "sleep", past_deadline_ms)]
    sink = ListSink(recorded)
    ctx, rt = make_ctx(sink, recorded)
    async with asyncio.timeout(1):
        await ctx.sleep(timedelta(hours=1))  # recorded deadline passed: returns at once
    assert not rt.is_replaying
    assert sink.journal[1:] == [JournalEntry("sleep_end", "sleep", None)]
    assert sink.history == [("sleep.recorded", {"duration_ms": 3_600_000, "until_ms": past_deadline_ms})]


async def test_ended_sleep_is_replayed_without_a_second_event() -> None:
    past_deadline_ms = int(datetime.now(UTC).timestamp() * 1000) - 10_000
    recorded = [JournalEntry("sleep", "sleep", past_deadline_ms), JournalEntry("sleep_end", "sleep", None)]
    sink = ListSink(recorded)
    ctx, rt = make_ctx(sink, recorded)
    async with asyncio.timeout(1):
        await ctx.sleep(timedelta(hours=1))
    assert not rt.is_replaying
    assert sink.journal == recorded and sink.history == []  # nothing recorded twice


calls: list[int] = []


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=1))
async def flaky(x: int) -> int:
    calls.append(x)
    if len(calls) < 2:
        raise ConnectionError("once")
    return x * 2


async def test_task_outcome_is_journaled_and_not_called_on_replay() -> None:
    calls.clear()
    sink = ListSink()
    _ctx, rt = make_ctx(sink)
    token = rt.activate()
    try:
        assert await flaky(21) == 42
    finally:
        StepRuntime.deactivate(token)
    assert calls == [21, 21]
    assert [e.kind for e in sink.journal] == ["task_attempt", "task"]
    assert [k for k, _ in sink.history] == ["task.started", "task.attempt_failed", "task.completed"]

    _, rt2 = make_ctx(ListSink(), list(sink.journal))
    token = rt2.activate()
    try:
        assert await flaky(21) == 42
        assert calls == [21, 21]  # replayed, not called
    finally:
        StepRuntime.deactivate(token)

    _, rt3 = make_ctx(ListSink(), list(sink.journal))
    token = rt3.activate()
    try:
        with pytest.raises(NonDeterminismError, match="other arguments"):
            await flaky(22)
    finally:
        StepRuntime.deactivate(token)


@task(retry_policy=RetryPolicy(max_attempts=2, initial_delay_ms=5000))
async def always_down() -> None:
    raise ConnectionError("down")


async def test_long_backoff_suspends_the_step() -> None:
    sink = ListSink()
    _, rt = make_ctx(sink)
    token = rt.activate()
    try:
        with pytest.raises(StepSuspended) as info:
            await always_down()
    finally:
        StepRuntime.deactivate(token)
    assert info.value.resume_at_ms == sink.journal[-1].value["retry_at_ms"]
    assert [e.kind for e in sink.journal] == ["task_attempt"]


async def test_task_outside_a_step_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="only be called from inside a step"):
        await flaky(1)
