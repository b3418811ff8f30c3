"""Replay after a crash (BEHAVIOUR.md CTX-4/6/8/10, STEP-8, TASK-10..15, TASK-31, logger).

One cycle serves every scenario: worker A (phase A) runs each scenario's step until it blocks
right after its recorded calls; once every run shows its trigger event in history, A is
SIGKILLed and worker B (phase B, same state dir, so it takes A's place in the group at once)
re-executes the steps. B must see the recorded values, call no finished task again, and detect
changed code as non-determinism.

Each trigger event is staged together with the journal entry it belongs to, so it commits in
the same transaction (and after every earlier entry: transactions commit in order). Seeing the
trigger in history therefore means the journal up to it is committed: A can be killed at once.
The one scenario killed mid-sleep has no history event to wait for (the sleep writes its event
when it ends), so its trigger is the sleep's journal entry itself, read from the `state` topic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka import Message
from ulid import ULID

from grctl import Client, Connection
from grctl.client import WorkflowError, WorkflowNotFoundError
from grctl.engine.keys import JOURNAL_PREFIX, SEP
from grctl.kafka.partitioner import partition_for
from grctl.models import HistoryEvent, HistoryKind, SleepRecorded
from tests.crash.replay_worker import SLEEP_MID_S
from tests.support.topics import wait_for_record
from tests.support.wait import wait_until_async

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

ROOT = Path(__file__).resolve().parents[2]

TRIGGERS: dict[str, HistoryKind | str] = {
    "now": HistoryKind.timestamp_recorded,
    "random": HistoryKind.random_recorded,
    "uuid": HistoryKind.uuid_recorded,
    "sleep": HistoryKind.sleep_recorded,
    "sleep_mid": "journal:sleep",
    "task": HistoryKind.task_completed,
    "step8": HistoryKind.task_completed,
    "task_failed": HistoryKind.task_failed,
    "task_cancelled": HistoryKind.task_cancelled,
    "args_changed": HistoryKind.task_completed,
    "order_changed": HistoryKind.task_completed,
    "struct": HistoryKind.task_completed,
    "logger": HistoryKind.random_recorded,
    "all": HistoryKind.sleep_recorded,
    "child7": HistoryKind.child_started,
    "child10": "child:task.completed",
    "child11": HistoryKind.child_started,
    "child8": "child:parent.event_sent",
    "child9": "child:parent.event_sent",
}


@dataclass
class Outcome:
    result: Any = None
    error: BaseException | None = None
    before: list[HistoryEvent] = field(default_factory=list)
    after: list[HistoryEvent] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    child_before: list[HistoryEvent] = field(default_factory=list)
    child_after: list[HistoryEvent] = field(default_factory=list)
    child_result: Any = None
    child_error: BaseException | None = None
    journaled: Any = None  # the value of a "journal:<kind>" trigger, as A committed it


@dataclass
class Cycle:
    outcomes: dict[str, Outcome]
    log_a: str
    log_b: str
    killed_at: datetime


def _spawn(servers: str, ns: str, state: Path, phase: str, side: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GRCTL_TEST_PHASE": phase, "GRCTL_TEST_SIDE_DIR": str(side)}
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.crash.replay_worker", "--servers", servers, "--namespace", ns,
             "--state-dir", str(state)],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _journal_value(run_id: str, kind: str) -> Any:
    """Matcher of `wait_for_record`: the value of the run's journal entry of `kind` in the `state` topic."""

    def match(msg: Message) -> Any:
        key, raw = msg.key() or b"", msg.value()
        # Journal keys are j/<wf_id>\0<run_id>\0<seq>\0<position>; the run id (a ULID) is unique.
        if raw is None or not key.startswith(JOURNAL_PREFIX) or SEP + run_id.encode() + SEP not in key:
            return None
        entry_kind, _name, value = msgspec.msgpack.decode(raw)
        return value if entry_kind == kind else None

    return match


async def _wait_for_triggers(
    client: Client, conn: Connection, servers: str, handles: dict[str, Any], outcomes: dict[str, Outcome]
) -> None:
    """Wait until every scenario's step has reached the point where A must be killed; fail if one does not."""
    for s, trigger in TRIGGERS.items():
        if isinstance(trigger, str) and trigger.startswith("journal:"):
            kind = trigger.removeprefix("journal:")
            wf_id = f"r-{s}"
            outcomes[s].journaled = await asyncio.to_thread(
                wait_for_record,
                servers,
                conn.topics.state,
                partition_for(wf_id, conn.num_partitions),
                f"worker A committed the {kind!r} journal entry of {wf_id}",
                _journal_value(handles[s].run_info.id, kind),
                60,
            )
    waiting = {s for s, t in TRIGGERS.items() if not (isinstance(t, str) and t.startswith("journal:"))}

    async def all_reached() -> bool:
        for s in sorted(waiting):
            trigger = TRIGGERS[s]
            wf_id, kind = f"r-{s}", trigger
            if isinstance(trigger, str) and trigger.startswith("child:"):
                wf_id, kind = f"r-{s}-c", trigger.removeprefix("child:")
            try:
                hist = await client.get_history(wf_id)
            except WorkflowNotFoundError:
                continue
            if any(e.kind == kind for e in hist):
                waiting.discard(s)
        return not waiting

    await wait_until_async(
        "every scenario reached its trigger event in worker A", all_reached, 60, interval=0.3, seen=lambda: waiting
    )


async def _cycle(servers: str, tmp: Path) -> Cycle:
    ns = "replay" + str(ULID())[-10:].lower()
    side = tmp / "side"
    side.mkdir()
    state = tmp / "state"
    conn = await Connection.connect(servers, ns, partitions=4)
    proc_a = _spawn(servers, ns, state, "A", side, tmp / "a.log")
    client = Client(conn)
    outcomes = {s: Outcome() for s in TRIGGERS}
    proc_b = None
    killed_at = datetime.now(UTC)
    try:
        await client.wait_for_workers(60)
        handles = {s: await client.start_workflow("Replay", f"r-{s}", {"scenario": s}) for s in TRIGGERS}
        await _wait_for_triggers(client, conn, servers, handles, outcomes)
        for s in TRIGGERS:
            outcomes[s].before = await client.get_history(f"r-{s}")
            if s.startswith("child"):
                outcomes[s].child_before = await client.get_history(f"r-{s}-c")
        proc_a.send_signal(signal.SIGKILL)
        proc_a.wait(10)
        killed_at = datetime.now(UTC)
        proc_b = _spawn(servers, ns, state, "B", side, tmp / "b.log")
        for s, h in handles.items():
            try:
                outcomes[s].result = await h.result(timeout=90)
            except (WorkflowError, asyncio.CancelledError, TimeoutError) as exc:
                outcomes[s].error = exc
            outcomes[s].after = await client.get_history(f"r-{s}")
            if s.startswith("child"):
                child = await client.get_workflow_handle(f"r-{s}-c")
                try:
                    outcomes[s].child_result = await child.result(timeout=60)
                except (WorkflowError, asyncio.CancelledError, TimeoutError) as exc:
                    outcomes[s].child_error = exc
                outcomes[s].child_after = await client.get_history(f"r-{s}-c")
            calls = side / f"r-{s}.calls"
            outcomes[s].calls = calls.read_text().splitlines() if calls.exists() else []
    finally:
        await client.close()
        for p in (proc_a, proc_b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    return Cycle(outcomes, (tmp / "a.log").read_text(), (tmp / "b.log").read_text(), killed_at)


@pytest.fixture(scope="module")
def cycle(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Cycle:
    return asyncio.run(_cycle(kafka_bootstrap, tmp_path_factory.mktemp("replay")))


def recorded(o: Outcome, kind: HistoryKind) -> Any:
    return next(e.msg.value for e in o.before if e.kind == kind)


def kinds(events: list[HistoryEvent], prefix: str) -> list[str]:
    return [e.kind.value for e in events if e.kind.value.startswith(prefix)]


def test_ctx_4_now_is_replayed(cycle: Cycle) -> None:
    o = cycle.outcomes["now"]
    value = recorded(o, HistoryKind.timestamp_recorded)
    assert isinstance(value, datetime)
    assert datetime.fromisoformat(o.result) == value
    assert kinds(o.after, "timestamp.").count("timestamp.recorded") == 1


def test_ctx_6_random_is_replayed(cycle: Cycle) -> None:
    o = cycle.outcomes["random"]
    assert o.result == recorded(o, HistoryKind.random_recorded)
    assert 0.0 <= o.result < 1.0


def test_ctx_10_uuid_is_replayed(cycle: Cycle) -> None:
    o = cycle.outcomes["uuid"]
    assert o.result == recorded(o, HistoryKind.uuid_recorded)
    uuid.UUID(o.result)


def test_ctx_8_sleep_is_not_repeated(cycle: Cycle) -> None:
    """A was killed after the sleep had ended: B replays it and records nothing again.

    A re-execution that slept again would have journaled a new deadline and written a second
    `sleep.recorded`; that the replayed deadline makes B return at once is checked without a
    clock in tests/unit/test_runtime.py.
    """
    o = cycle.outcomes["sleep"]
    assert o.result == "done"
    completed = [e for e in o.after if e.kind == HistoryKind.step_completed and e.msg.step_name == "work"]
    assert len(completed) == 1
    (ended,) = [e for e in o.before if e.kind == HistoryKind.sleep_recorded]
    assert isinstance(ended.msg, SleepRecorded) and ended.msg.duration_ms == 2000
    assert [e for e in o.after if e.kind == HistoryKind.sleep_recorded] == [ended], "the re-executed step slept again"
    assert kinds(o.after, "sleep.") == ["sleep.recorded"]


def test_ctx_8_crash_mid_sleep_records_the_sleep_once_when_it_ends(cycle: Cycle) -> None:
    """A was killed while sleeping: B waits for the rest of A's deadline and writes the only `sleep.recorded`."""
    o = cycle.outcomes["sleep_mid"]
    assert o.result == "done"
    assert isinstance(o.journaled, int), o.journaled  # the deadline A committed
    assert kinds(o.before, "sleep.") == [], (
        f"sleep.recorded was in history before worker A was killed: written when the sleep started, or A took "
        f"longer than the {SLEEP_MID_S} s sleep to reach the kill"
    )
    recorded = [e for e in o.after if e.kind == HistoryKind.sleep_recorded]
    assert len(recorded) == 1, kinds(o.after, "")
    (event,) = recorded
    assert isinstance(event.msg, SleepRecorded)
    assert event.msg.duration_ms == SLEEP_MID_S * 1000
    assert event.msg.until_ms == o.journaled, "the re-execution started the sleep over instead of finishing it"
    assert event.timestamp is not None and event.timestamp > cycle.killed_at, "written by worker A, before the crash"


def test_step_8_start_step_task_is_replayed(cycle: Cycle) -> None:
    """The start step replays like any other (the original re-ran it: BEHAVIOUR.md gap 2)."""
    o = cycle.outcomes["step8"]
    assert o.result == "done"
    assert kinds(o.before, "task.") == ["task.started", "task.completed"]
    assert o.calls == ["A"], "the task of the start step ran again after the crash"


def test_task_10_11_finished_task_is_not_called_again(cycle: Cycle) -> None:
    o = cycle.outcomes["task"]
    assert o.result == "done"
    assert kinds(o.before, "task.").count("task.started") == 1
    assert o.calls == ["A"]
    assert kinds(o.after, "task.") == ["task.started", "task.completed"]


def test_task_12_recorded_failure_is_raised_again(cycle: Cycle) -> None:
    o = cycle.outcomes["task_failed"]
    assert isinstance(o.error, WorkflowError)
    assert "ValueError: original error" in str(o.error)
    assert kinds(o.before, "task.") == ["task.started", "task.attempt_failed", "task.failed"]
    assert o.calls == ["A", "A"]


def test_task_13_recorded_cancellation_is_raised_again(cycle: Cycle) -> None:
    o = cycle.outcomes["task_cancelled"]
    assert o.result == "cancelled"
    assert kinds(o.before, "task.") == ["task.started", "task.cancelled"]
    assert o.calls == ["A"]


def test_task_14_changed_arguments_are_non_determinism(cycle: Cycle) -> None:
    o = cycle.outcomes["args_changed"]
    assert isinstance(o.error, WorkflowError)
    assert "NonDeterminism" in str(o.error)
    assert "greet" in str(o.error)


def test_task_15_changed_call_order_is_non_determinism(cycle: Cycle) -> None:
    o = cycle.outcomes["order_changed"]
    assert isinstance(o.error, WorkflowError)
    message = str(o.error)
    assert "NonDeterminism" in message
    assert "task:task_a" in message and "task:task_b" in message and "position 0" in message


def test_task_31_recorded_struct_result_is_converted_on_replay(cycle: Cycle) -> None:
    o = cycle.outcomes["struct"]
    assert o.result == {"text": "hello", "count": 3}
    completed = next(e for e in o.after if e.kind == HistoryKind.task_completed)
    assert completed.msg.output == {"result": {"text": "hello", "count": 3}}
    assert o.calls == ["A"]


def test_logger_prints_each_line_once_across_the_crash(cycle: Cycle) -> None:
    o = cycle.outcomes["logger"]
    assert o.result == "done"
    both = cycle.log_a + cycle.log_b
    for line in ("LOGLINE-1 r-logger", "LOGLINE-2 r-logger", "LOGLINE-3 r-logger"):
        assert both.count(line) == 1, (line, both.count(line))
    assert "LOGLINE-1 r-logger" in cycle.log_a and "LOGLINE-3 r-logger" in cycle.log_b


def test_child_7_child_started_once_across_parent_crash(cycle: Cycle) -> None:
    o = cycle.outcomes["child7"]
    assert o.result == "parent-done"
    assert kinds(o.after, "child.") == ["child.started", "child.completed"]  # each once
    assert o.child_result == "child-done"


def test_child_8_send_to_parent_once_across_child_crash(cycle: Cycle) -> None:
    o = cycle.outcomes["child8"]
    assert o.result == "parent-done"
    assert kinds(o.child_after, "parent.") == ["parent.event_sent"]
    assert o.child_result == "sent"


def test_child_9_changed_event_name_is_non_determinism_in_the_child(cycle: Cycle) -> None:
    o = cycle.outcomes["child9"]
    assert o.result == "v1"  # the parent got status_v1 before the crash
    assert isinstance(o.child_error, WorkflowError)
    assert "NonDeterminism" in str(o.child_error)


def test_child_10_run_child_across_crash(cycle: Cycle) -> None:
    o = cycle.outcomes["child10"]
    assert o.result == "child-done"
    assert kinds(o.after, "child.") == ["child.started", "child.completed"]  # each once
    assert kinds(o.child_after, "task.") == ["task.started", "task.completed"]


def test_child_11_fresh_child_id_is_non_determinism(cycle: Cycle) -> None:
    o = cycle.outcomes["child11"]
    assert isinstance(o.error, WorkflowError)
    assert "NonDeterminism" in str(o.error)


def test_crash_replay_of_every_recorded_kind_in_one_step(cycle: Cycle) -> None:
    """Issue 5: now, random, uuid4, a task with a side effect and a sleep in one step; SIGKILL after
    the journal committed; the re-execution sees identical values, the side effect happened once,
    each log line printed once, and the run completes."""
    o = cycle.outcomes["all"]
    assert o.result == {
        "now": recorded(o, HistoryKind.timestamp_recorded).isoformat(),
        "random": recorded(o, HistoryKind.random_recorded),
        "uuid": recorded(o, HistoryKind.uuid_recorded),
        "task": "did r-all",
    }
    assert o.calls == ["A"]
    both = cycle.log_a + cycle.log_b
    assert both.count("ALL-1 r-all") == 1 and both.count("ALL-2 r-all") == 1


def test_steps_resume_after_the_crash(cycle: Cycle) -> None:
    """Every blocked step re-executed on worker B; prints how long after the SIGKILL (not asserted)."""
    delays = []
    for name, o in cycle.outcomes.items():
        events = o.after + o.child_after  # in child scenarios the blocked step may be the child's
        restarted = [e for e in events if e.kind == HistoryKind.step_started and e.timestamp > cycle.killed_at]
        assert restarted, f"{name}: no step re-executed after the crash"
        delays.append((restarted[0].timestamp - cycle.killed_at).total_seconds())
    delays.sort()
    print(
        f"step resumed after SIGKILL: min {delays[0]:.2f}s, median {delays[len(delays) // 2]:.2f}s, max {delays[-1]:.2f}s"
    )
