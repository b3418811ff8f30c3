"""The step executor: runs step handlers in tasks of their own, with deadlines and replay.

A step runs as an asyncio task, bounded by the worker's `max_concurrent_steps`, with a
`StepRuntime` whose journal the partition processor loaded; user exceptions become a failed
step (`StepOutcome` of kind "error"), a step past its deadline a "timeout", a long task retry
back-off a "suspend". The outcome goes back to the processor (`step_finished`), which applies
it through the state machine.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from grctl import defaults, tracing
from grctl.codec import CodecRegistry
from grctl.engine.machine import StepOutcome
from grctl.engine.records import RunRecord
from grctl.errors import (
    EmitTopicNotFoundError,
    InternalError,
    InvalidArgumentError,
    NextDirectiveMissingError,
    WorkflowNotRegisteredError,
    WorkflowRunnerNotFoundError,
)
from grctl.kafka.limits import MAX_ERROR_TEXT_BYTES
from grctl.models.directive import Directive, DirectiveKind
from grctl.models.emit import Emit
from grctl.models.errors import ErrorDetails
from grctl.models.history import HistoryKind
from grctl.models.run_info import RunInfo, RunStatus
from grctl.worker._edges.schema_registry import SchemaRegistry
from grctl.worker._session.served import Served
from grctl.worker._session.topics import TopicDirectory
from grctl.workflow.context import Context
from grctl.workflow.emit import EmitBuffer
from grctl.workflow.handlers import bind_arguments
from grctl.workflow.runtime import SYSTEM_CLOCK, Clock, PermitSuspended, RemoteTaskSuspended, StepRuntime, StepSuspended
from grctl.workflow.store import Store

if TYPE_CHECKING:
    from grctl.worker._observe.metrics import WorkerMetrics
    from grctl.worker._partition.ports import RunningStep, StepHost

#: Step deadlines are checked in slots of this many seconds (a step is cancelled this late at most).
DEADLINE_SLOT_S = 0.05


class PartitionTasks:
    """The tasks a session runs for its partitions (steps, queries), tagged by partition."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], int] = {}

    def add(self, task: asyncio.Task[None], partition: int) -> None:
        """Track `task`; the task discards itself when it ends (no done-callback per step)."""
        self._tasks[task] = partition

    def discard(self, task: asyncio.Task[Any] | None) -> None:
        """Stop tracking `task`."""
        if task is not None:
            self._tasks.pop(task, None)  # type: ignore[arg-type]  # any task may be passed

    def running(self, partitions: Iterable[int] | None = None) -> list[asyncio.Task[None]]:
        """The unfinished tasks (of `partitions`, or all)."""
        wanted = None if partitions is None else set(partitions)
        return [t for t, p in self._tasks.items() if not t.done() and (wanted is None or p in wanted)]

    async def drain(self, partitions: Iterable[int] | None, timeout: float, *, cancel: bool = False) -> None:
        """Wait up to `timeout` s for the tasks (of `partitions`, or all), cancelling them first if asked."""
        tasks = self.running(partitions)
        if cancel:
            for t in tasks:
                t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


def run_info_of(run: RunRecord) -> RunInfo:
    """What a handler sees of its run (`ctx.run`)."""
    parent = run.parent
    return RunInfo(
        id=run.run_id,
        wf_id=run.wf_id,
        wf_type=run.wf_type,
        status=RunStatus.running,
        current_step=run.step,
        step_seq=run.seq,
        parent_wf_id=parent.wf_id if parent else None,
        parent_run_id=parent.run_id if parent else None,
        parent_wf_type=parent.wf_type if parent else None,
        parent_callback_step=parent.callback_step if parent else None,
        timeout=run.timeout_ms / 1000 if run.timeout_ms else None,
        schedule_id=run.schedule_id,
        scheduled_at=datetime.fromtimestamp(run.scheduled_ms / 1000, UTC) if run.scheduled_ms is not None else None,
        priority=run.priority,
    )


class StepExecutor:
    """Executes steps (see the module docstring).

    Args:
        served: the workflow definitions served, by type and version.
        codec: the codec for user values.
        worker_id: for error messages.
        max_concurrent_steps: bound on steps executing at once.
        tasks: where the step tasks are tracked.
        metrics: counts steps and their durations (None: not counted).
        clock: where steps read time and wait, and step deadlines are scheduled (None: the
            system's; `grctl.testing`'s environment passes one it moves).
        task_topics: the topic of a remote task queue (`TopicNames.task_queue`).
    """

    def __init__(
        self,
        *,
        served: Served,
        codec: CodecRegistry,
        worker_id: str,
        max_concurrent_steps: int,
        tasks: PartitionTasks,
        metrics: WorkerMetrics | None = None,
        emit_topics: TopicDirectory | None = None,
        registry: SchemaRegistry | None = None,
        clock: Clock | None = None,
        task_topics: Callable[[str], str] | None = None,
    ) -> None:
        self._served = served
        self._task_topics = task_topics
        self._registry = registry
        self._metrics = metrics
        self._emit_topics = emit_topics
        self._codec = codec
        self._worker_id = worker_id
        self._sem = asyncio.Semaphore(max_concurrent_steps)
        self._tasks = tasks
        self._loop = asyncio.get_running_loop()
        self._deadlines: dict[int, set[RunningStep]] = {}  # deadline slot -> steps due in it
        self._clock = clock or SYSTEM_CLOCK
        # Step deadlines on the loop's own time unless another clock is given (the hot path).
        self._monotonic = self._loop.time if clock is None else clock.monotonic
        self._call_at = self._loop.call_at if clock is None else clock.call_at

    def start(self, proc: StepHost, rs: RunningStep, run: RunRecord) -> asyncio.Task[None] | None:
        """Execute a step in an asyncio task of its own; None if it already finished.

        On Python 3.12+ the task starts eagerly: it runs up to its first real wait inside this
        call, and a step that never waits (store reads are local) finishes without being
        scheduled on the loop. It still is its own task, so `asyncio.current_task()`,
        `asyncio.timeout` and `TaskGroup` in step code bind to the step, not to the engine. (A
        hand-made eager start without a task object, tried on 3.11, saved ~10 % of the CPU per
        step but let a step's `asyncio.timeout` cancel the engine's own loop.)
        """
        task = _new_task(self._loop, self._execute(proc, rs, run))
        if task.done():
            return None
        self._tasks.add(task, proc.partition)
        return task

    # Step deadlines. One timer handle per DEADLINE_SLOT_S slot of deadlines instead of an
    # asyncio.timeout per step: arming and cancelling a loop timer per step cost ~8 % of a
    # worker's CPU in the chain benchmark. A step is cancelled at most one slot after its deadline.

    def _arm_deadline(self, rs: RunningStep, timeout_s: float) -> None:
        slot = int((self._monotonic() + timeout_s) / DEADLINE_SLOT_S) + 1
        steps = self._deadlines.get(slot)
        if steps is None:
            steps = self._deadlines[slot] = set()
            self._call_at(slot * DEADLINE_SLOT_S, functools.partial(self._expire_deadlines, slot))
        steps.add(rs)
        rs.deadline_slot = slot

    def _disarm_deadline(self, rs: RunningStep) -> None:
        steps = self._deadlines.get(rs.deadline_slot)
        if steps is not None:
            steps.discard(rs)

    def _expire_deadlines(self, slot: int) -> None:
        for rs in self._deadlines.pop(slot, ()):
            if rs.task is not None and not rs.task.done():
                rs.timed_out = True
                rs.task.cancel()

    async def _execute(self, proc: StepHost, rs: RunningStep, run: RunRecord) -> None:
        step_name = run.step or ""
        runtime = StepRuntime(
            wf_id=run.wf_id,
            run_id=run.run_id,
            wf_type=run.wf_type,
            step_name=step_name,
            seq=run.seq,
            recorded=proc.load_journal(run.wf_id, run.run_id, run.seq),
            sink=proc,
        )
        runtime.codec = self._codec
        runtime.clock = self._clock
        rs.runtime = runtime
        try:
            async with self._sem:
                if rs.cancelled:
                    return
                runtime.history(HistoryKind.step_started, {"step_name": step_name, "seq": run.seq})
                metrics = self._metrics
                if metrics is not None:
                    metrics.step_started(run.wf_type)
                    t0 = time.perf_counter()
                if not tracing.enabled():
                    outcome = await self._call_handler(proc, runtime, run, rs)
                else:
                    outcome = await tracing.traced_step(
                        run.traceparent, run.wf_type, run.wf_id, run.run_id, step_name, run.seq,
                        self._call_handler(proc, runtime, run, rs),
                    )  # fmt: skip
                if metrics is not None:
                    metrics.step_finished(run.wf_type, outcome.next_kind, time.perf_counter() - t0)
            if runtime.released:
                outcome = msgspec.structs.replace(outcome, released=tuple(runtime.released))
            proc.step_finished(rs, outcome)
        finally:
            self._tasks.discard(rs.task)

    async def _call_handler(self, proc: StepHost, runtime: StepRuntime, run: RunRecord, rs: RunningStep) -> StepOutcome:
        t0 = time.monotonic()
        step_name = runtime.step_name
        token = runtime.activate()
        try:
            wf = self._served.get(run.wf_type, run.version)
            if wf is None:  # the processor parks such a run (`Machine.ensure_served`): an engine bug
                raise WorkflowNotRegisteredError(
                    f"workflow type {run.wf_type!r} v{run.version} is not served by this worker ({self._worker_id})"
                )
            cfg = wf.handler_for(step_name)
            if cfg is None:
                raise WorkflowRunnerNotFoundError(f"Step handler {step_name!r} is not defined.")
            kwargs = bind_arguments(cfg.spec, run.step_payload, self._codec)
            wf_id, run_id = run.wf_id, run.run_id
            read_store = proc.read_store

            def read(key: str) -> bytes | None:
                return read_store(wf_id, run_id, key)

            limit = proc.value_limit
            store = Store(read, self._codec, max_value_bytes=limit)
            emits = EmitBuffer(self._codec, self._registry)
            ctx = Context(
                run=functools.partial(run_info_of, run),
                workflow=wf,
                store=store,
                runtime=runtime,
                codec=self._codec,
                max_value_bytes=limit,
                emits=emits,
            )
            self._arm_deadline(rs, (run.step_timeout_ms or defaults.STEP_TIMEOUT_MS) / 1000)
            try:
                result = await cfg.handler(ctx, **kwargs)
            finally:
                self._disarm_deadline(rs)
            if not isinstance(result, Directive):
                raise NextDirectiveMissingError(
                    f"handler {step_name!r} of workflow {run.wf_type!r} returned {type(result).__name__}, not a "
                    f"Directive: return ctx.next.step(...), ctx.next.wait(...), ctx.next.complete(...) or "
                    f"ctx.next.fail(...)"
                )
            if emits.records:
                if self._emit_topics is None:
                    raise InternalError("a step emitted records but the session has no topic directory")
                # Encoded and checked before anything is staged: a value that does not fit its
                # schema, a missing topic or an oversized record fails this step, instead of the
                # transaction of every run in the batch. Registry and topic lookups go to a thread.
                if not (emits.encode_cached() and self._emit_topics.check_cached(emits.records, wf_id)):
                    await asyncio.get_running_loop().run_in_executor(
                        None, _encode_and_check, emits, self._emit_topics, wf_id
                    )
            return _outcome(run, result, store.pending_writes(), emits.records, t0)
        except RemoteTaskSuspended as waiting:
            call = waiting.call
            if self._emit_topics is not None and self._task_topics is not None:
                # A queue without a topic fails the step here, clearly, not the transaction later.
                try:
                    topic = self._task_topics(call.queue)
                    await asyncio.get_running_loop().run_in_executor(
                        None, self._emit_topics.require, {topic: f"the queue of remote task {call.name!r}"}
                    )
                except (EmitTopicNotFoundError, InvalidArgumentError) as exc:
                    return StepOutcome(
                        run_id=run.run_id, seq=run.seq, next_kind="error", error=_err(ErrorDetails.from_exception(exc)),
                        duration_ms=_ms_since(t0),
                    )  # fmt: skip
            return StepOutcome(
                run_id=run.run_id, seq=run.seq, next_kind="remote", remote=call, duration_ms=_ms_since(t0),
            )  # fmt: skip
        except PermitSuspended as waiting:
            return StepOutcome(
                run_id=run.run_id, seq=run.seq, next_kind="limit", acquire=waiting.call, duration_ms=_ms_since(t0),
            )  # fmt: skip
        except StepSuspended as suspended:
            return StepOutcome(
                run_id=run.run_id, seq=run.seq, next_kind="suspend", resume_at_ms=suspended.resume_at_ms,
                duration_ms=_ms_since(t0),
            )  # fmt: skip
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if rs.timed_out and task is not None and task.cancelling() == 1 and not rs.cancelled:
                task.uncancel()  # the step deadline: the run fails with StepTimeout
                return StepOutcome(run_id=run.run_id, seq=run.seq, next_kind="timeout", duration_ms=_ms_since(t0))
            if task is not None and task.cancelling():
                raise  # the engine cancelled the step (revoked, terminated)
            err = ErrorDetails(type="CancelledError", message=f"step {step_name} was cancelled by its own code")
            return StepOutcome(run_id=run.run_id, seq=run.seq, next_kind="error", error=_err(err))
        except Exception as exc:  # noqa: BLE001  # user code: any exception fails the step, recorded
            return StepOutcome(
                run_id=run.run_id,
                seq=run.seq,
                next_kind="error",
                error=_err(ErrorDetails.from_exception(exc)),
                duration_ms=_ms_since(t0),
            )
        finally:
            StepRuntime.deactivate(token)


def _encode_and_check(emits: EmitBuffer, topics: TopicDirectory, wf_id: str) -> None:
    emits.encode()
    topics.check(emits.records, wf_id)


def _outcome(run: RunRecord, d: Directive, writes: dict[str, bytes], emits: list[Emit], t0: float) -> StepOutcome:
    base: dict[str, Any] = {
        "run_id": run.run_id, "seq": run.seq, "duration_ms": _ms_since(t0), "store": writes, "emits": emits,
    }  # fmt: skip
    if d.kind == DirectiveKind.step and d.step is not None:
        return StepOutcome(next_kind="step", next_step=d.step.step_name, next_step_timeout_ms=d.step.timeout_ms, **base)
    if d.kind == DirectiveKind.wait and d.wait is not None:
        return StepOutcome(
            next_kind="wait",
            wait_timeout_ms=d.wait.timeout_ms or None,
            wait_on_timeout=d.wait.timeout_step_name or None,
            **base,
        )
    if d.kind == DirectiveKind.complete and d.complete is not None:
        return StepOutcome(next_kind="complete", result=d.complete.result, **base)
    if d.kind == DirectiveKind.fail and d.fail is not None:
        return StepOutcome(next_kind="fail", error=_err(d.fail.error), **base)
    if d.kind == DirectiveKind.fail_step and d.fail_step is not None:
        base["store"] = {}
        base["emits"] = []  # a failed step publishes nothing
        return StepOutcome(next_kind="error", error=_err(d.fail_step.error), **base)
    raise NextDirectiveMissingError(f"malformed directive {d!r}")


def _ms_since(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)


def _new_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    return asyncio.Task(coro, loop=loop)  # loop.create_task minus its Python wrapper (~1 µs a step)


def _err(details: ErrorDetails) -> dict[str, Any]:
    """A step's error as recorded: message and stack trace cut to `MAX_ERROR_TEXT_BYTES` each."""
    out = {"type": details.type, "message": _cut(details.message, keep="head")}
    if details.stack_trace:
        out["stack_trace"] = _cut(details.stack_trace, keep="tail")
    if details.qualified_type:
        out["qualified_type"] = details.qualified_type
    return out


def _cut(text: str, *, keep: str) -> str:
    """`text` within `MAX_ERROR_TEXT_BYTES` (UTF-8), keeping its head or its tail (a stack's last frames)."""
    raw = text.encode()
    if len(raw) <= MAX_ERROR_TEXT_BYTES:
        return text
    note = f" [... {len(raw) - MAX_ERROR_TEXT_BYTES:,} bytes cut] "
    room = MAX_ERROR_TEXT_BYTES - len(note)
    if keep == "head":
        return raw[:room].decode(errors="ignore") + note
    return note + raw[-room:].decode(errors="ignore")
