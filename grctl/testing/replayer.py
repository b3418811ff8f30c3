"""Replay a recorded run against workflow code, in process and without Kafka, and find the first divergence.

A run's history holds everything its steps saw: the run's input, every event it received, and,
under each step, the values of its journaled calls (`ctx.now`, `ctx.random`, `ctx.uuid4`,
`ctx.sleep`, task outcomes, child starts, events sent, patches), each with its journal position
(the event's operation id, `name:position`). The replayer rebuilds each step's journal from
them and executes the step's handler of the code given with that journal, as a worker re-executing
the step after a crash would: a call the code makes that the recorded execution did not make
there, a recorded call the code does not make, or a different directive (next step, wait,
completion) is a divergence. The run's store is rebuilt by the replayed steps themselves (a
step's writes are what the next one reads), so the code must be deterministic, which is what
is checked.

Nothing is called for real: a task's recorded outcome is returned (or its error raised), a
sleep ends at once, a child's start is not sent, and a child's outcome comes from the run's
`child.completed` event.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from grctl.codec import CodecRegistry, default_codec
from grctl.errors import GrctlError, NonDeterminismError
from grctl.models.directive import START_STEP_NAME, Directive, DirectiveKind
from grctl.models.history import HistoryEvent
from grctl.models.run_info import RunInfo, RunStatus
from grctl.workflow.context import Context
from grctl.workflow.emit import EmitBuffer
from grctl.workflow.handlers import bind_arguments
from grctl.workflow.registry import WorkflowSet
from grctl.workflow.runtime import JournalEntry, StepRuntime, StepSuspended
from grctl.workflow.store import Store
from grctl.workflow.workflow import Workflow

__all__ = ["Divergence", "ReplayResult", "Replayer", "load_history"]

#: A replayed step makes no real call, so it ends at once; one that waits this long awaits
#: something the history does not have (a child outcome of an older history, user code that
#: awaits a real clock).
STEP_REPLAY_TIMEOUT_S = 5.0
_GRCTL_DIR = str(Path(__file__).resolve().parents[1])
_STEP_ENDS = {"step.completed", "step.failed", "step.timeout", "step.cancelled"}
_RUN_ENDS = {"run.completed", "run.failed", "run.cancelled", "run.terminated", "run.timeout"}


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where the code does something else than the recorded run did.

    Attributes:
        step: the step's handler name.
        seq: the step's number in the run.
        position: the journal position of the call (None: not a call, e.g. the directive).
        recorded: what the recorded execution did there ("task:charge", "step 'ship'", "nothing").
        called: what the code does there.
        line: the code's file and line ("orders.py:42"), when known.
        message: the whole story, for people.
    """

    step: str
    seq: int
    position: int | None
    recorded: str
    called: str
    line: str | None
    message: str


@dataclass(slots=True)
class ReplayResult:
    """The replay of one run.

    Attributes:
        wf_id: the run's workflow id.
        run_id: its run id.
        wf_type: its type.
        version: the version its steps were replayed on (the last, for a run that upgraded).
        steps: step executions replayed.
        divergence: the first divergence (None: none).
        incomplete: why the history did not allow a full replay (None: it did), e.g. it expired
            from the history topic, or a step awaited something it does not hold.
    """

    wf_id: str
    run_id: str
    wf_type: str = ""
    version: int = 1
    steps: int = 0
    divergence: Divergence | None = None
    incomplete: str | None = None

    @property
    def ok(self) -> bool:
        """No divergence (an incomplete history is not one)."""
        return self.divergence is None


@dataclass(slots=True)
class _Event:
    kind: str
    msg: dict[str, Any]
    op: str


@dataclass(slots=True)
class _Step:
    seq: int
    name: str
    version: int
    journal: dict[int, JournalEntry] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # task op -> failed attempts
    args: dict[str, Any] = field(default_factory=dict)  # task op -> recorded arguments
    end: str | None = None  # step.completed, step.failed, ... (None: still running)
    error: dict[str, Any] | None = None
    after: list[_Event] = field(default_factory=list)  # what its outcome did (next step, wait, end)


class _LiveCall(Exception):  # a replay's control flow, never seen by users
    """The code made a call beyond what the recorded execution made."""

    def __init__(self, kind: str, name: str, position: int) -> None:
        super().__init__(f"{kind}:{name} at {position}")
        self.kind, self.name, self.position = kind, name, position


class _Unrecorded(Exception):  # a replay's control flow, never seen by users
    """The step awaits a child outcome its history does not hold."""


class _ReplayPort:
    """What a replayed step's runtime talks to: nothing leaves it."""

    def __init__(self, children: Mapping[str, dict[str, Any]]) -> None:
        self._children = children

    def journal_append(self, runtime: StepRuntime, position: int, entry: JournalEntry) -> None:
        raise _LiveCall(entry.kind, entry.name, position)

    def history_append(self, runtime: StepRuntime, kind: str, msg: Any, operation_id: str = "") -> None:
        return None

    def start_child(self, runtime: StepRuntime, **_: Any) -> None:
        return None

    def send_event(self, runtime: StepRuntime, **_: Any) -> None:
        return None

    def cancel_run(self, runtime: StepRuntime, **_: Any) -> None:
        return None

    def child_outcome(self, runtime: StepRuntime, child_wf_id: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        outcome = self._children.get(child_wf_id)
        if outcome is not None:
            fut.set_result(outcome)
        else:
            fut.set_exception(_Unrecorded(child_wf_id))
        return fut


def load_history(path: str | Path) -> list[list[dict[str, Any]]]:
    """The runs in a file of `grctl workflow history ID --json` lines (JSONL), grouped by run id, in order."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise GrctlError(f"{path}:{n}: not a JSON line of `grctl workflow history --json`: {exc}") from None
        if not isinstance(event, dict) or "kind" not in event or "run_id" not in event:
            raise GrctlError(f"{path}:{n}: a history event needs 'kind' and 'run_id' (from `history --json`)")
        runs.setdefault(str(event["run_id"]), []).append(event)
    return list(runs.values())


def _events(history: Iterable[HistoryEvent | Mapping[str, Any]]) -> Iterator[tuple[str, str, _Event]]:
    """(wf_id, run_id, event) of each event, from `HistoryEvent`s or `history --json` dicts."""
    for ev in history:
        if isinstance(ev, HistoryEvent):
            msg = ev.msg
            body = {f: getattr(msg, f) for f in msg.__struct_fields__} if hasattr(msg, "__struct_fields__") else msg
            yield ev.wf_id, ev.run_id, _Event(str(ev.kind), dict(body or {}), ev.operation_id)
        else:
            msg = ev.get("msg") or {}
            op = str(ev.get("operation_id") or ev.get("op") or "")
            yield str(ev.get("wf_id", "")), str(ev.get("run_id", "")), _Event(str(ev["kind"]), dict(msg), op)


def _position(op: str) -> tuple[str, int] | None:
    name, sep, pos = op.rpartition(":")
    if not sep or not pos.isdigit():
        return None
    return name, int(pos)


def _when(value: Any) -> Any:
    """A recorded `ctx.now` value as the journal holds it (JSON lines carry it as ISO text)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


class Replayer:
    """Replays recorded runs against workflow code (see the module docstring).

    ```python
    from grctl.testing import Replayer

    replayer = Replayer([order_v1, order_v2])
    result = replayer.replay(load_history("tests/histories/order-7.jsonl")[0])
    assert result.ok, result.divergence.message
    ```

    Args:
        workflows: the code: workflow definitions, several versions of a type allowed.
        codec: the codec of the workers (custom codecs).
    """

    def __init__(self, workflows: Iterable[Workflow], codec: CodecRegistry | None = None) -> None:
        self._set = WorkflowSet(workflows)
        if self._set.problems:
            raise GrctlError("; ".join(self._set.problems))
        self._codec = codec or default_codec()

    def replay(
        self, history: Sequence[HistoryEvent | Mapping[str, Any]], *, version: int | None = None
    ) -> ReplayResult:
        """Replay one run (its events in order); blocks (runs its own event loop, in a thread of
        its own when called from a running loop).

        Args:
            history: the run's history events, as `Client.get_history` returns them or as the
                lines of `grctl workflow history --json`.
            version: replay on this version of its type instead of the one the run recorded.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.replay_async(history, version=version))
        # Called from async code (an async test): the replay gets an event loop of its own thread.
        with ThreadPoolExecutor(1, thread_name_prefix="grctl-replay") as pool:
            return pool.submit(asyncio.run, self.replay_async(history, version=version)).result()

    async def replay_async(
        self, history: Sequence[HistoryEvent | Mapping[str, Any]], *, version: int | None = None
    ) -> ReplayResult:
        """`replay`, in the caller's event loop."""
        events = list(_events(history))
        if not events:
            return ReplayResult("", "", incomplete="no history events")
        wf_id, run_id = events[0][0], events[0][1]
        plan = _Plan.of([e for _, _, e in events])
        result = ReplayResult(wf_id, run_id, plan.wf_type, version or plan.version)
        if plan.incomplete is not None:
            result.incomplete = plan.incomplete
            return result
        store: dict[str, bytes] = {}
        for step in plan.steps:
            v = version or step.version
            wf = self._set.get(plan.wf_type, v)
            result.version = v
            if wf is None:
                result.incomplete = f"no code for {plan.wf_type!r} v{v} was given"
                return result
            divergence, stalled = await self._replay_step(wf, plan, step, store, wf_id, run_id)
            result.steps += 1
            if divergence is not None:
                result.divergence = divergence
                return result
            if stalled is not None:
                result.incomplete = stalled
                return result
        return result

    async def _replay_step(
        self, wf: Workflow, plan: _Plan, step: _Step, store: dict[str, bytes], wf_id: str, run_id: str
    ) -> tuple[Divergence | None, str | None]:
        cfg = wf.handler_for(step.name)
        if cfg is None:
            return _diverged(step, None, f"step {step.name!r}", "no handler", None,
                             f"the code has no handler {step.name!r} (the recorded run executed it)"), None  # fmt: skip
        journal = [step.journal[p] for p in range(len(step.journal))]
        port = _ReplayPort(plan.children)
        rt = StepRuntime(wf_id=wf_id, run_id=run_id, wf_type=plan.wf_type, step_name=step.name, seq=step.seq,
                         recorded=journal, sink=port)  # type: ignore[arg-type]  # the replay port  # fmt: skip
        rt.codec = self._codec
        rt.whole = step.end is not None
        reads = Store(lambda key: store.get(key), self._codec)
        info = RunInfo(id=run_id, wf_id=wf_id, wf_type=plan.wf_type, status=RunStatus.running, current_step=step.name,
                       step_seq=step.seq, version=step.version, schedule_id=plan.schedule_id,
                       scheduled_at=datetime.fromtimestamp(plan.scheduled_ms / 1000, UTC)
                       if plan.scheduled_ms is not None else None)  # fmt: skip
        ctx = Context(run=info, workflow=wf, store=reads, runtime=rt, codec=self._codec,
                      emits=EmitBuffer(self._codec, _NoRegistry()))  # fmt: skip
        token = rt.activate()
        try:
            kwargs = bind_arguments(cfg.spec, plan.payloads.get(step.seq), self._codec)
            directive = await asyncio.wait_for(cfg.handler(ctx, **kwargs), STEP_REPLAY_TIMEOUT_S)
        except NonDeterminismError as exc:
            return _diverged(step, exc.position, exc.expected or "?", exc.got or "?", _line(exc), str(exc)), None
        except _LiveCall as exc:
            if step.end is None:
                return None, None  # the recorded execution was cut here (its run is in flight): same so far
            return _diverged(step, exc.position, "nothing (the recorded execution made no more calls)",
                             f"{exc.kind}:{exc.name}", _line(exc),
                             f"step {step.name!r} (seq {step.seq}) calls {exc.kind}:{exc.name} at journal position "
                             f"{exc.position}, where the recorded execution had no call"), None  # fmt: skip
        except _Unrecorded as exc:
            if step.end is None:
                return None, None  # the recorded step awaits this child now: the same so far
            return None, f"step {step.name!r} (seq {step.seq}) awaits child {exc} whose outcome is not in the history"
        except TimeoutError:
            return None, (f"step {step.name!r} (seq {step.seq}) waited for something its history does not hold "
                          f"(user code that awaits a real clock?)")  # fmt: skip
        except StepSuspended:
            return None, None  # a long retry back-off, as recorded
        except Exception as exc:  # noqa: BLE001  # the step failed: as the recorded one, or not
            if step.end == "step.failed" and (step.error or {}).get("type") == type(exc).__name__:
                return None, None
            recorded = step.end or "running"
            return _diverged(step, None, recorded, f"raised {type(exc).__name__}", _line(exc),
                             f"step {step.name!r} (seq {step.seq}) raises {type(exc).__name__}: {exc}; the recorded "
                             f"execution ended with {recorded}"), None  # fmt: skip
        finally:
            StepRuntime.deactivate(token)
        if rt.position < len(journal):
            missed = journal[rt.position]
            return _diverged(step, rt.position, f"{missed.kind}:{missed.name}", "nothing (the step returned)",
                             _line_of(cfg.handler),
                             f"step {step.name!r} (seq {step.seq}) returns before the call {missed.kind}:{missed.name} "
                             f"the recorded execution made at journal position {rt.position}"), None  # fmt: skip
        pending = reads.pending_writes()
        if step.end == "step.completed":
            found = _directive_divergence(step, directive, _line_of(cfg.handler))
            if found is not None:
                return found, None
        store.update(pending)
        return None, None


class _NoRegistry:
    """Emits in a replay are encoded with no registry lookup (nothing is published)."""

    def encode_is_cached(self, *_: Any, **__: Any) -> bool:
        return True

    def encode(self, *_: Any, **__: Any) -> bytes:
        return b""


@dataclass(slots=True)
class _Plan:
    """What the history says: the run's type, each step's journal, inputs and outcome."""

    wf_type: str = ""
    version: int = 1
    schedule_id: str | None = None
    scheduled_ms: int | None = None
    steps: list[_Step] = field(default_factory=list)
    payloads: dict[int, Any] = field(default_factory=dict)
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    incomplete: str | None = None

    @classmethod
    def of(cls, events: list[_Event]) -> _Plan:
        plan = cls()
        if not events or events[0].kind != "run.started":
            plan.incomplete = "the history does not begin with run.started (expired from the history topic?)"
            return plan
        first = events[0].msg
        plan.wf_type = str(first.get("wf_type", ""))
        plan.version = int(first.get("version") or 1)
        plan.schedule_id = first.get("schedule_id")
        plan.scheduled_ms = first.get("scheduled_ms")
        version = plan.version
        inbox: list[tuple[str, Any]] = []
        by_seq: dict[int, _Step] = {}
        current: _Step | None = None
        last_ended: _Step | None = None
        timed_out = False
        for ev in events[1:]:
            k, msg = ev.kind, ev.msg
            if k == "run.upgraded":
                version = int(msg.get("to_version") or version)
            elif k == "event.received":
                inbox.append((str(msg.get("event_name", "")), msg.get("payload")))
            elif k == "wait.timed_out":
                timed_out = True
            elif k == "child.completed":
                plan.children[str(msg.get("child_wf_id", ""))] = dict(msg.get("outcome") or {})
            elif k == "step.started":
                seq, name = int(msg.get("seq") or 0), str(msg.get("step_name", ""))
                step = by_seq.get(seq)
                if step is None:  # a step's first execution (a re-execution keeps its journal)
                    step = by_seq[seq] = _Step(seq, name, version)
                    plan.steps.append(step)
                    plan.payloads[seq] = _payload(plan, name, seq, inbox, timed_out, first)
                    timed_out = False
                current = step
            elif k in _STEP_ENDS and current is not None:
                current.end, current.error = k, msg.get("error")
                last_ended, current = current, None
            elif current is not None:
                if not _journal(current, ev):
                    plan.incomplete = f"step {current.name!r} has a recorded call the replayer does not know: {k}"
            elif last_ended is not None and (k in _RUN_ENDS or k == "wait.started"):
                last_ended.after.append(ev)
        for step in plan.steps:
            positions = sorted(step.journal)
            if positions != list(range(len(positions))):
                plan.incomplete = f"the journal of step {step.name!r} (seq {step.seq}) has gaps at {positions}"
        # A step whose next step started: its directive was that step.
        for step, nxt in zip(plan.steps, plan.steps[1:], strict=False):
            if step.end == "step.completed" and not step.after:
                step.after.append(_Event("step.started", {"step_name": nxt.name, "seq": nxt.seq}, ""))
        return plan


def _payload(plan: _Plan, name: str, seq: int, inbox: list[tuple[str, Any]], timed_out: bool,
             first: dict[str, Any]) -> Any:  # fmt: skip
    """The input of a step: the run's input for the start, the oldest event for its handler, else none."""
    if name == START_STEP_NAME or seq == 1:
        return first.get("input")
    if not timed_out and inbox and inbox[0][0] == name:
        return inbox.pop(0)[1]
    return None


#: Events of a run that may come while one of its steps runs and hold no journaled call.
_BESIDE_STEPS = frozenset({"run.cancel_received", "run.parked", "run.resumed", "step.started"})


def _journal(step: _Step, ev: _Event) -> bool:
    """Put a recorded call of `step` at its journal position; False for an event it cannot place."""
    k, msg = ev.kind, ev.msg
    if k in _BESIDE_STEPS:
        return True
    at = _position(ev.op)
    if at is None:
        return False
    name, pos = at
    put = step.journal.__setitem__
    if k == "timestamp.recorded":
        put(pos, JournalEntry("now", "now", _when(msg.get("value"))))
    elif k == "random.recorded":
        put(pos, JournalEntry("random", "random", msg.get("value")))
    elif k == "uuid.recorded":
        put(pos, JournalEntry("uuid4", "uuid4", msg.get("value")))
    elif k == "sleep.recorded":
        put(pos, JournalEntry("sleep", "sleep", msg.get("until_ms")))
        put(pos + 1, JournalEntry("sleep_end", "sleep", None))
    elif k == "child.started":
        put(pos, JournalEntry("start_child", f"{msg.get('wf_type')}:{msg.get('wf_id')}", {"run_id": msg.get("run_id")}))
    elif k == "parent.event_sent":
        put(pos, JournalEntry("send_to_parent", str(msg.get("event_name", "")), None))
    elif k == "child.event_sent":
        put(pos, JournalEntry("child_send", f"{msg.get('child_wf_id')}:{msg.get('event_name')}", None))
    elif k == "child.cancel_requested":
        put(pos, JournalEntry(name, str(msg.get("child_wf_id", "")), None))
    elif k == "patch.recorded":
        put(pos, JournalEntry("patch", str(msg.get("patch_id", "")), None))
    elif k in ("permit.requested", "permit.released"):
        return True  # the engine's side of a `ctx.limit` section: nothing the step recorded
    elif k in ("permit.granted", "permit.refused"):
        value = {"ok": k == "permit.granted", "acquire_id": msg.get("acquire_id")}
        if k == "permit.refused":
            value["error"] = msgspec.to_builtins(msg.get("error"))
        put(pos, JournalEntry("limit", str(msg.get("limiter", "")), value))
    elif msg.get("remote") and k.startswith("task."):
        # A remote task (`ctx.remote_task`): its outcome is journaled at its position; its
        # request, attempts and retries are the engine's, not the step's.
        if k == "task.completed":
            output = msg.get("output") or {}
            result = output.get("result") if isinstance(output, dict) else output
            put(pos, JournalEntry("remote_task", str(msg.get("task_name", "")), {"ok": True, "result": result}))
        elif k == "task.failed":
            value = {"ok": False, "error": msgspec.to_builtins(msg.get("error")), "attempt": msg.get("attempt")}
            put(pos, JournalEntry("remote_task", str(msg.get("task_name", "")), value))
    elif k == "task.started":
        step.args[ev.op] = msg.get("args")
    elif k == "task.attempt_failed":
        attempt = int(msg.get("attempt") or 1)
        step.attempts[ev.op] = max(step.attempts.get(ev.op, 0), attempt)
        value = {"attempt": attempt, "retry_at_ms": 0, "error": msg.get("error"), **_hash(step, ev.op)}
        put(pos + attempt - 1, JournalEntry("task_attempt", str(msg.get("task_name", name)), value))
    elif k in ("task.completed", "task.failed", "task.cancelled"):
        task = str(msg.get("task_name", name))
        if k == "task.completed":
            output = msg.get("output") or {}
            value = {"ok": True, "result": output.get("result") if isinstance(output, dict) else output}
        elif k == "task.failed":
            value = {"ok": False, "error": msg.get("error")}
        else:
            value = {"ok": False, "cancelled": True}
        put(pos + step.attempts.get(ev.op, 0), JournalEntry("task", task, {**value, **_hash(step, ev.op)}))
    else:
        return False
    return True


def _hash(step: _Step, op: str) -> dict[str, Any]:
    """The recorded arguments' hash, as a task checks it (none when history kept only a preview)."""
    args = step.args.get(op)
    if args is None or (isinstance(args, dict) and args.get("truncated") is True and "preview" in args):
        return {}
    return {"args_hash": hashlib.sha256(default_codec().encode(args)).hexdigest()[:16]}


def _directive_divergence(step: _Step, d: Any, line: str | None) -> Divergence | None:
    """The divergence of a step's directive from what its recorded outcome did (None: the same)."""
    if not isinstance(d, Directive):
        return _diverged(step, None, "a directive", type(d).__name__, line,
                         f"step {step.name!r} returns {type(d).__name__}, not a Directive")  # fmt: skip
    nxt = step.after[0] if step.after else None
    if nxt is None:
        return None  # the run was cancelled or ended otherwise right after: nothing to compare
    recorded = _describe(nxt)
    called = _describe_directive(d)
    if nxt.kind == "run.completed":
        # The result itself is not compared: a changed result is a body change, as a changed
        # store write is (the run ended; no run in flight executes that step again).
        same = d.kind == DirectiveKind.complete
    elif nxt.kind == "run.failed":
        same = d.kind in (DirectiveKind.fail, DirectiveKind.fail_step)
    else:
        same = recorded == called
    if same:
        return None
    what = f"step {step.name!r} (seq {step.seq}) returns {called}; the recorded run went on with {recorded}"
    return _diverged(step, None, recorded, called, line, what)


def _describe(ev: _Event) -> str:
    if ev.kind == "step.started":
        return f"step {ev.msg.get('step_name')!r}"
    if ev.kind == "wait.started":
        return "wait"
    if ev.kind == "run.completed":
        return "complete"
    return ev.kind


def _describe_directive(d: Directive) -> str:
    if d.kind == DirectiveKind.step and d.step is not None:
        return f"step {d.step.step_name!r}"
    return {DirectiveKind.wait: "wait", DirectiveKind.complete: "complete"}.get(d.kind, str(d.kind))


def _diverged(step: _Step, position: int | None, recorded: str, called: str, line: str | None,
              message: str) -> Divergence:  # fmt: skip
    where = f" ({line})" if line else ""
    return Divergence(step.name, step.seq, position, recorded, called, line, message + where)


def _line(exc: BaseException) -> str | None:
    """The innermost frame of user code in `exc`'s traceback (not grctl's)."""
    tb: TracebackType | None = exc.__traceback__
    found = None
    for frame, lineno in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if not filename.startswith(_GRCTL_DIR) and "asyncio" not in filename:
            found = f"{filename}:{lineno}"
    return found


def _line_of(fn: Any) -> str | None:
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else None
