"""Retention and watched outcomes in the state machine and the partition processor (no broker)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from grctl.engine import keys
from grctl.engine.machine import Machine, StepOutcome
from grctl.engine.records import OUTCOME, ReplyTo, RunRecord, StartCmd, TimerEntry, TimerKind, WatchCmd, encoder
from grctl.errors import InvalidArgumentError
from grctl.kafka.settings_topic import NamespaceSettings, check_history_keeps, parse_duration, with_retention
from grctl.models.run_info import RunStatus
from grctl.state.partition_store import PartitionStore
from grctl.worker._session.restore import too_old
from tests.unit.test_machine import RETENTION_MS, Cat, no_inbox
from tests.unit.test_partition_processor import Harness, start_cmd, wf_ids_on

M = Machine(Cat(), "w_test")
T0 = 1_000_000
CLIENT = ReplyTo(client_id="c1", request_id="q1", partition=3)


def started(reply_to: ReplyTo | None = CLIENT) -> RunRecord:
    tr = M.apply(None, StartCmd(wf_id="wf", run_id="r1", wf_type="Order", reply_to=reply_to), 0, T0, no_inbox)
    assert tr.run is not None
    return tr.run


def completed(run: RunRecord, now: int = T0 + 50) -> tuple[RunRecord, object]:
    tr = M.on_step_outcome(run, StepOutcome(run_id="r1", seq=run.seq, next_kind="complete", result=9), now, no_inbox)
    assert tr.run is not None
    return tr.run, tr


def test_a_start_with_reply_to_is_acknowledged_and_watched_by_its_client() -> None:
    tr = M.apply(None, StartCmd(wf_id="wf", run_id="r1", wf_type="Order", reply_to=CLIENT), 0, T0, no_inbox)
    ((to, ack),) = tr.replies
    assert to == CLIENT and ack.ok and ack.request_id == "q1" and ack.run_id == "r1" and ack.kind == ""
    assert tr.run is not None and tr.run.watchers == (CLIENT,)


def test_a_refused_start_is_answered_with_its_code() -> None:
    run = started()
    tr = M.apply(run, StartCmd(wf_id="wf", run_id="r2", wf_type="Order", reply_to=CLIENT), 1, T0, no_inbox)
    ((_, refusal),) = tr.replies
    assert not refusal.ok and refusal.code == "already_running" and refusal.payload == {"existing_run_id": "r1"}


def test_the_end_of_a_run_tells_its_watchers_and_arms_its_retention() -> None:
    run, tr = completed(started())
    assert run.status == RunStatus.completed and run.watchers == ()
    assert run.retain_until_ms == T0 + 50 + RETENTION_MS
    ((to, outcome),) = tr.replies  # type: ignore[attr-defined]
    assert to == CLIENT and outcome.kind == OUTCOME and outcome.request_id == "q1" and outcome.run_id == "r1"
    assert outcome.payload == {"status": "completed", "result": 9, "error": None, "duration_ms": 50}
    (timer,) = [t for t in tr.timers_set if t.kind == TimerKind.retention]  # type: ignore[attr-defined]
    assert timer.due_ms == run.retain_until_ms and timer.run_id == "r1"


def test_events_left_in_the_inbox_at_the_end_are_deleted() -> None:
    run = msgspec.structs.replace(started(), inbox_head=2, inbox_next=5)
    ended, tr = completed(run)
    assert tr.inbox_delete == [2, 3, 4]  # type: ignore[attr-defined]
    assert ended.inbox_head == ended.inbox_next == 5


def test_a_watch_describes_and_adds_the_watcher_once_and_none_for_an_ended_run() -> None:
    run = started(reply_to=None)
    other = ReplyTo(client_id="c2", request_id="w1", partition=1)
    tr = M.apply(run, WatchCmd(wf_id="wf", reply_to=other), 5, T0, no_inbox)
    ((to, answer),) = tr.replies
    assert to == other and answer.ok and answer.payload["id"] == "r1"
    assert tr.run is not None and tr.run.watchers == (other,)
    again = M.apply(tr.run, WatchCmd(wf_id="wf", reply_to=other), 6, T0, no_inbox)
    assert again.run is not None and again.run.watchers == (other,)
    ended, _ = completed(tr.run)
    late = M.apply(ended, WatchCmd(wf_id="wf", reply_to=other), 9, T0, no_inbox)
    assert late.replies[0][1].payload["status"] == "completed" and late.run is not None and late.run.watchers == ()


def test_a_retention_timer_purges_its_run_or_only_what_an_older_run_left() -> None:
    ended, _ = completed(started())
    due = ended.retain_until_ms
    assert due is not None
    timer = TimerEntry(wf_id="wf", run_id="r1", kind=TimerKind.retention, seq=ended.seq, due_ms=due)
    assert M.on_timer(ended, timer, due).purge == ("r1", True)
    newer = M.apply(ended, StartCmd(wf_id="wf", run_id="r2", wf_type="Order"), 7, T0, no_inbox).run
    assert M.on_timer(newer, timer, due).purge == ("r1", False)
    assert M.on_timer(None, timer, due).purge == ("r1", False)
    stale = msgspec.structs.replace(timer, due_ms=due - 1)
    assert M.on_timer(ended, stale, due).skipped


def test_a_run_that_ended_before_retention_existed_gets_a_timer() -> None:
    ended, _ = completed(started())
    legacy = msgspec.structs.replace(ended, retain_until_ms=None)
    tr = M.arm_retention(legacy, T0 + 10)
    assert tr.run is not None and tr.run.retain_until_ms == ended.ended_ms + RETENTION_MS
    assert M.arm_retention(ended, T0).skipped and M.arm_retention(started(), T0).skipped


async def test_the_processor_tombstones_every_key_of_a_purged_run(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    wf_id = next(wf_ids_on(0))
    h.feed(start_cmd(wf_id))
    await h.committer.flush()
    rs = h.proc.running[wf_id]
    h.proc.stage(keys.journal_key(keys.journal_prefix(wf_id, "run-1", 1), 0), b"\x90")
    h.proc.stage(keys.child_key(wf_id, "run-1", "kid"), b"\x80")
    h.proc.step_finished(
        rs, StepOutcome(run_id="run-1", seq=1, next_kind="complete", result="r", store={"a": b"\x01", "b": b"\x02"})
    )
    await h.committer.flush()
    run = h.proc.get_run(wf_id)
    assert run is not None and run.retain_until_ms is not None
    timer = TimerEntry(wf_id=wf_id, run_id="run-1", kind=TimerKind.retention, seq=run.seq, due_ms=run.retain_until_ms)
    h.proc.apply(h.proc.services.machine.on_timer(run, timer, run.retain_until_ms), wf_id)
    state = h.open_state()
    for key in (
        keys.run_key(wf_id), keys.store_key(wf_id, "run-1", "a"), keys.store_key(wf_id, "run-1", "b"),
        keys.child_key(wf_id, "run-1", "kid"),
    ):  # fmt: skip
        assert key in state and state[key] is None, key
    await h.committer.flush()
    assert h.proc.get_run(wf_id) is None and list(h.store.scan(keys.store_prefix(wf_id, "run-1"))) == []
    h.store.close()


async def test_assignment_arms_retention_once_for_runs_that_ended_before_it(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    ended, _ = completed(started(reply_to=None))
    legacy = msgspec.structs.replace(ended, wf_id=next(wf_ids_on(0)), retain_until_ms=None)
    h.proc.stage(keys.run_key(legacy.wf_id), encoder.encode(legacy))
    await h.committer.flush()
    h.proc.start()
    state = h.open_state()
    assert state[keys.RETENTION_MARKER] == b"1"
    assert any(k.startswith(keys.EXPIRY_PREFIX) for k in state) and h.proc.next_expiry_due() is not None
    await h.committer.flush()
    marked = len(h.open_state())
    h.proc.start()  # the marker: nothing is scanned or staged again
    assert len(h.open_state()) == marked == 0
    h.store.close()


def test_a_store_knows_when_it_was_last_current_and_can_be_emptied(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p")
    store.put(b"r/a", b"1", batch_id=1)
    store.commit(1, checkpoint=4)
    store.close()
    again = PartitionStore(tmp_path / "p")
    assert again.checkpoint == 4 and again.checkpoint_ms is not None
    again.reset()
    assert again.checkpoint == -1 and again.checkpoint_ms is None and again.get(b"r/a") is None
    again.close()


@pytest.mark.parametrize(
    ("checkpoint_ms", "now", "retention", "old"),
    [(None, 10, 1000, True), (0, 499, 1000, False), (0, 500, 1000, True), (1_000, 1_000 + 86_399, 86_400 * 2, False)],
)
def test_a_local_store_is_too_old_past_half_the_tombstone_retention(
    checkpoint_ms: int | None, now: int, retention: int, old: bool
) -> None:
    assert too_old(checkpoint_ms, now, retention) is old


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 7 * 86400),
        ("36h", 36 * 3600),
        ("90m", 5400),
        ("30s", 30),
        ("1500ms", 1.5),
        ("2w", 14 * 86400),
        ("45", 45),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "soon", "-3d", "3 days", "0s", "1x"])
def test_bad_durations_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="retention"):
        parse_duration(text)


def test_a_run_retention_longer_than_the_history_is_refused() -> None:
    settings = with_retention(NamespaceSettings(), parse_duration("2d"), {"Report": parse_duration("40d")})
    assert settings.retention_ms("Report") == 40 * 86400 * 1000 and settings.retention_ms("Other") == 2 * 86400 * 1000
    with pytest.raises(InvalidArgumentError, match="longer than the history topic's retention"):
        check_history_keeps(settings, 30 * 86400 * 1000, "ns")
    check_history_keeps(settings, None, "ns")  # history kept forever
