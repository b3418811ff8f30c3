"""Replay after a crash (BEHAVIOUR.md CTX-4/6/8/10, STEP-8, TASK-10..15, TASK-31, logger).

One cycle serves every scenario: worker A (phase A) runs each scenario's step until it blocks
right after its recorded calls; once every run shows its trigger event in history, A is
SIGKILLed and worker B (phase B, same state dir, so it takes A's place in the group at once)
re-executes the steps. B must see the recorded values, call no finished task again, and detect
changed code as non-determinism.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from grctl import Client, Connection
from grctl.client import WorkflowError, WorkflowNotFoundError
from grctl.models import HistoryEvent, HistoryKind

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

ROOT = Path(__file__).resolve().parents[2]

TRIGGERS: dict[str, HistoryKind | str] = {
    "now": HistoryKind.timestamp_recorded,
    "random": HistoryKind.random_recorded,
    "uuid": HistoryKind.uuid_recorded,
    "sleep": "slept",
    "task": HistoryKind.task_completed,
    "step8": HistoryKind.task_completed,
    "task_failed": HistoryKind.task_failed,
    "task_cancelled": HistoryKind.task_cancelled,
    "args_changed": HistoryKind.task_completed,
    "order_changed": HistoryKind.task_completed,
    "struct": HistoryKind.task_completed,
    "logger": HistoryKind.random_recorded,
    "all": "slept",
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
        handles = {s: await client.start_workflow("Replay", f"r-{s}", {"scenario": s}) for s in TRIGGERS}
        deadline = time.monotonic() + 60
        waiting = set(TRIGGERS)
        while waiting and time.monotonic() < deadline:
            for s in list(waiting):
                trigger = TRIGGERS[s]
                if trigger == "slept":
                    if (side / f"r-{s}.slept.calls").exists():
                        waiting.discard(s)
                    continue
                wf_id, kind = f"r-{s}", trigger
                if isinstance(trigger, str) and trigger.startswith("child:"):
                    wf_id, kind = f"r-{s}-c", trigger.removeprefix("child:")
                try:
                    hist = await client.get_history(wf_id)
                except WorkflowNotFoundError:
                    continue
                if any(e.kind == kind for e in hist):
                    waiting.discard(s)
            await asyncio.sleep(0.3)
        assert not waiting, f"scenarios never reached their trigger in worker A: {waiting}"
        await asyncio.sleep(0.5)  # the journal entries ride on the same commits as those events
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
    o = cycle.outcomes["sleep"]
    assert o.result == "done"
    durations = [
        e.msg.duration_ms for e in o.after if e.kind == HistoryKind.step_completed and e.msg.step_name == "work"
    ]
    assert len(durations) == 1
    assert durations[0] < 1500, "the re-executed step slept again (the recorded 2 s deadline had passed)"
    assert kinds(o.after, "sleep.") == ["sleep.recorded"]


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
    assert kinds(o.after, "child.") == ["child.started"]
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
    assert kinds(o.after, "child.") == ["child.started"]
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
