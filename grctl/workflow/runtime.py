"""The runtime of one step execution: its journal cursor and the port to the engine that runs it.

This is the one place where what a step sees meets the engine: `StepPort` names everything a
step asks of the worker executing it (append to its journal and history, start a child, send
an event, cancel a run, wait for a child's outcome). The worker implements the port (its
partition processor); this module, like the rest of `grctl.workflow`, never imports the worker
(temporalio's split: `workflow.py` declares the runtime, `worker/_workflow_instance.py`
implements it).

Every non-deterministic call of a step (`ctx.now`, `ctx.random`, `ctx.uuid4`, `ctx.sleep`,
task outcomes, child starts) goes through `StepRuntime.record`. On the first execution the
value is computed and appended to the run's journal (table `j/`, committed by the next group
commit, even while the step still runs). On a re-execution each call takes the next recorded
entry instead; a call of another kind or name than the recorded one is a `NonDeterminismError`.
A history event that must appear once however often the step re-executes, and later than the
value it belongs to (the end of a `ctx.sleep`), goes through `StepRuntime.record_once`.

A step reads time and waits through its runtime's `Clock` (`SYSTEM_CLOCK` in a worker): the
in-process test environment of `grctl.testing` gives steps a clock whose time it moves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from grctl.errors import NonDeterminismError, OutsideStepError
from grctl.logging_setup import add_field_provider

__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "JournalEntry",
    "JournalSink",
    "NonDeterminismError",
    "PermitSuspended",
    "RemoteTaskSuspended",
    "StepPort",
    "StepRuntime",
    "StepSuspended",
    "SystemClock",
    "get_step_runtime",
]


class Clock(Protocol):
    """Where the engine reads time and waits: the system's, or a test environment's that skips ahead.

    `time` is wall-clock seconds (what journaled times and durable deadlines are made of);
    `monotonic` and `call_at` schedule on the same scale as each other (step deadlines).
    """

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on the scale `call_at` takes."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle | _Cancellable:
        """Call `callback` at `monotonic()` time `when`; the returned handle's `cancel()` disarms it."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class SystemClock:
    """The real clock: `time.time`, the running event loop's time and timers, `asyncio.sleep`."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """The running loop's time."""
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        """`loop.call_at` of the running loop."""
        return asyncio.get_running_loop().call_at(when, callback)

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep`."""
        await asyncio.sleep(seconds)


#: The clock of steps run by a worker.
SYSTEM_CLOCK = SystemClock()


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One recorded call: its kind ("now", "task", ...), its name, and its value."""

    kind: str
    name: str
    value: Any


class StepPort(Protocol):
    """What a step asks of the engine executing it (implemented by the worker's partition processor).

    Everything staged here commits with the step's progress in the next group commit, even
    while the step still runs; the journal makes a re-execution skip what already committed.
    """

    def journal_append(self, runtime: StepRuntime, position: int, entry: JournalEntry) -> None:
        """Stage a journal entry.

        Raises:
            PayloadTooLargeError: the entry is over the value limit (the call that recorded it fails).
        """
        ...

    def history_append(
        self, runtime: StepRuntime, kind: str, msg: dict[str, Any] | None, operation_id: str = ""
    ) -> None:
        """Stage a history event of this run."""
        ...

    def start_child(
        self,
        runtime: StepRuntime,
        *,
        wf_type: str,
        wf_id: str,
        run_id: str,
        input: Any,
        timeout_ms: int | None,
        callback_step: str | None,
        traceparent: str | None,
    ) -> None:
        """Stage the start of a child run of this run (`input` already a primitive).

        Raises:
            PayloadTooLargeError: the child's input is over the value limit.
        """
        ...

    def send_event(
        self, runtime: StepRuntime, *, wf_id: str, run_id: str | None, event_name: str, payload: Any, event_id: str
    ) -> None:
        """Stage an event for another run (`payload` already a primitive).

        Raises:
            PayloadTooLargeError: the payload is over the value limit.
        """
        ...

    def cancel_run(
        self, runtime: StepRuntime, *, wf_id: str, run_id: str | None, reason: str | None, terminate: bool
    ) -> None:
        """Stage the cancellation (or termination) of another run."""
        ...

    def child_outcome(self, runtime: StepRuntime, child_wf_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future resolved with a child's outcome once its end reaches this run."""
        ...


#: The name the port had while it only took journal entries (kept for older imports).
JournalSink = StepPort


class StepSuspended(BaseException):  # engine control flow, not an error
    """Unwinds a step that waits for a long task retry back-off.

    Derives from BaseException so that `except Exception` in user code does not swallow it; the
    executor turns it into a durable resume timer and the step re-executes (replaying its journal)
    when the timer fires, on whichever worker then owns the run.
    """

    def __init__(self, resume_at_ms: int) -> None:
        super().__init__(resume_at_ms)
        self.resume_at_ms = resume_at_ms


class RemoteTaskSuspended(StepSuspended):
    """Unwinds a step that waits for a remote task's answer (`Context.remote_task`).

    The executor turns it into a "remote" step outcome: the run's transition publishes the
    task's request and the step re-executes when the answer has been journaled.

    Attributes:
        call: what the step asks for (a `grctl.engine.records.RemoteTask` without id or attempt).
    """

    def __init__(self, call: Any) -> None:
        super().__init__(0)
        self.call = call


class PermitSuspended(StepSuspended):
    """Unwinds a step that waits for a permit of a limiter (`Context.limit`).

    The executor turns it into a "limit" step outcome: the run's transition sends the request to
    the limiter's partition, and the step re-executes when the grant has been journaled.

    Attributes:
        call: what the step asks for (a `grctl.engine.records.PendingAcquire` without its id).
    """

    def __init__(self, call: Any) -> None:
        super().__init__(0)
        self.call = call


_current: ContextVar[StepRuntime | None] = ContextVar("grctl_step_runtime", default=None)


def _log_fields() -> dict[str, Any] | None:
    """The running step's ids, for JSON log records (`grctl.logging_setup.add_field_provider`)."""
    rt = _current.get()
    if rt is None:
        return None
    return {"wf_id": rt.wf_id, "run_id": rt.run_id, "step": rt.step_name, "wf_type": rt.wf_type}


add_field_provider(_log_fields)


def get_step_runtime() -> StepRuntime:
    """The runtime of the step executing in this task.

    Raises:
        OutsideStepError: (a LookupError) when called outside a workflow step (e.g. a task called from plain code).
    """
    rt = _current.get()
    if rt is None:
        raise OutsideStepError(
            "no workflow step is executing here: tasks and ctx functions can only be called from "
            "inside a step handler run by a grctl Worker"
        )
    return rt


class StepRuntime:
    """Journal cursor of one step execution.

    Args:
        wf_id: workflow id of the run.
        run_id: run id.
        wf_type: workflow type.
        step_name: the step executing.
        seq: the step's sequence number in the run.
        recorded: journal entries committed by earlier executions of this same step.
        sink: the engine's side of the step (`StepPort`).
    """

    def __init__(
        self,
        *,
        wf_id: str,
        run_id: str,
        wf_type: str,
        step_name: str,
        seq: int,
        recorded: list[JournalEntry],
        sink: StepPort,
    ) -> None:
        self.wf_id = wf_id
        self.run_id = run_id
        self.wf_type = wf_type
        self.step_name = step_name
        self.seq = seq
        self._recorded = recorded
        self._sink = sink
        self.position = 0
        self.codec: Any = None  # the worker's CodecRegistry, set by the worker
        #: Where the step reads time and waits (a test environment sets its own).
        self.clock: Clock = SYSTEM_CLOCK
        #: The recorded journal is a whole execution that ended (a replay of a finished step):
        #: a patch past its end was not taken there (`Context.patched` answers False).
        self.whole = False
        #: The permits (acquire ids) whose `ctx.limit` sections this execution left: they go back
        #: with the step's outcome.
        self.released: list[str] = []

    @property
    def is_replaying(self) -> bool:
        """True while calls are answered from the recorded journal."""
        return self.position < len(self._recorded)

    @property
    def journal_length(self) -> int:
        """How many entries the journal of this step holds now."""
        return max(self.position, len(self._recorded))

    def activate(self) -> object:
        """Make this runtime the current one for the calling task (returns a reset token)."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: object) -> None:
        """Undo `activate`."""
        _current.reset(token)  # type: ignore[arg-type]  # the token comes from activate()

    def next_recorded(self, kind: str, name: str) -> JournalEntry | None:
        """The recorded entry for the next call, checked against what the code calls now.

        Returns None when the journal is exhausted (the call runs live).

        Raises:
            NonDeterminismError: the recorded call at this position differs.
        """
        if self.position >= len(self._recorded):
            return None
        entry = self._recorded[self.position]
        if entry.kind != kind or entry.name != name:
            expected = f"{entry.kind}:{entry.name}"
            got = f"{kind}:{name}"
            raise NonDeterminismError(
                f"step {self.step_name!r} of workflow {self.wf_type!r} (wf_id {self.wf_id!r}) called {got} at "
                f"journal position {self.position}, but the recorded execution called {expected} there. "
                f"Workflow code must make the same calls in the same order when re-executed: check that "
                f"the step is deterministic (no datetime.now/random/uuid outside ctx, no branching on them).",
                step=self.step_name,
                position=self.position,
                expected=expected,
                got=got,
            )
        self.position += 1
        return entry

    def peek(self) -> JournalEntry | None:
        """The recorded entry at the cursor, without consuming it (None when exhausted)."""
        if self.position >= len(self._recorded):
            return None
        return self._recorded[self.position]

    def advance(self) -> None:
        """Consume the recorded entry at the cursor (after `peek`)."""
        self.position += 1

    def append(self, kind: str, name: str, value: Any) -> None:
        """Record a live call's value in the journal."""
        entry = JournalEntry(kind, name, value)
        self._sink.journal_append(self, self.position, entry)
        self.position += 1

    async def record(
        self,
        kind: str,
        name: str,
        compute: Callable[[], Awaitable[Any]],
        history: Callable[[Any], tuple[str, dict[str, Any]] | None] | None = None,
    ) -> Any:
        """Replay the next recorded value, or compute, journal and return a new one.

        Args:
            kind: the call's kind ("now", "random", ...).
            name: the call's name (task name, or the kind again).
            compute: produces the value on a live call.
            history: maps the value to a history event (kind, payload) to publish on a live call.
        """
        entry = self.next_recorded(kind, name)
        if entry is not None:
            return entry.value
        value = await compute()
        if history is not None:
            ev = history(value)
            if ev is not None:
                self._sink.history_append(self, ev[0], ev[1], f"{name}:{self.position}")
        self.append(kind, name, value)
        return value

    def record_once(
        self, kind: str, name: str, event: tuple[str, dict[str, Any]], operation_id: str | None = None
    ) -> bool:
        """Publish a history event once per step, however often the step re-executes.

        A live call stages the event and a value-less journal entry `(kind, name)` together,
        without awaiting in between, so they commit in the same transaction: after a crash
        either both exist, and the re-execution replays the entry and publishes nothing, or
        neither does, and the re-execution publishes the event then.

        Args:
            kind: the journal entry's kind (e.g. "sleep_end").
            name: the call's name.
            event: the history event (kind, payload) to publish on a live call.
            operation_id: the event's operation id (default `name:position` of this entry).

        Returns:
            True when this call published the event, False when it was replayed.

        Raises:
            NonDeterminismError: the recorded call at this position differs.
        """
        if self.next_recorded(kind, name) is not None:
            return False
        op = f"{name}:{self.position}" if operation_id is None else operation_id
        self._sink.history_append(self, event[0], event[1], op)
        self.append(kind, name, None)
        return True

    def history(self, kind: str, msg: dict[str, Any] | None, operation_id: str = "") -> None:
        """Publish a history event of this run (not journaled)."""
        self._sink.history_append(self, kind, msg, operation_id)

    @property
    def sink(self) -> StepPort:
        """The engine's side of this step."""
        return self._sink
