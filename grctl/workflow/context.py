"""`Context`: the first argument of every handler, and `NextBuilder` (`ctx.next`)."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from ulid import ULID

from grctl import defaults, tracing
from grctl._check import non_empty_str, positive_ms
from grctl.codec import CodecRegistry
from grctl.errors import (
    InvalidArgumentError,
    LimiterNotFoundError,
    NoParentWorkflowError,
    PayloadTooLargeError,
    RemoteTaskError,
    RemoteTaskTimeoutError,
)
from grctl.models.directive import START_STEP_NAME, Complete, Directive, DirectiveKind, Fail, FailStep, Step, Wait
from grctl.models.errors import ErrorDetails
from grctl.models.limits import PendingAcquire, check_name, check_priority
from grctl.models.remote_task import RemoteTask
from grctl.models.retry import RetryPolicy
from grctl.models.run_info import RunInfo, RunStatus
from grctl.workflow.child import ChildHandle
from grctl.workflow.emit import EmitBuffer, EmitFormat, KeyFormat
from grctl.workflow.runtime import PermitSuspended, RemoteTaskSuspended, StepRuntime, StepSuspended
from grctl.workflow.store import Store

if TYPE_CHECKING:
    from grctl.workflow.workflow import Workflow

__all__ = ["Context", "NextBuilder", "QueryContext"]

#: The journal entry kind of a remote task's outcome (written by the engine, `grctl.engine.remote`).
JOURNAL_REMOTE = "remote_task"
JOURNAL_LIMIT = "limit"
#: The longest key and fairness key of a `ctx.limit` call (they are record fields and labels).
MAX_LIMIT_KEY_CHARS = 100


def _own_step(workflow: Workflow, fn: Callable[..., Any] | None, what: str) -> str:
    """The name of `fn`, which must be a handler of `workflow` (passed as `what`)."""
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"{what} must be a step handler function (something with a __name__), got {fn!r}")
    if workflow.handler_for(name) is None:
        raise InvalidArgumentError(
            f"Step handler {name!r} is not defined in workflow {workflow.workflow_type!r} (passed to {what}): "
            f"decorate it with @wf.step()",
            argument=what,
        )
    return name


class NextBuilder:
    """Builds the `Directive` a handler returns (`ctx.next`)."""

    def __init__(self, workflow: Workflow, codec: CodecRegistry, max_value_bytes: int | None = None) -> None:
        self._wf = workflow
        self._codec = codec
        self._max_value_bytes = max_value_bytes

    def step(self, step_fn: Callable[..., Any]) -> Directive:
        """Run `step_fn` next."""
        name = _own_step(self._wf, step_fn, "ctx.next.step()")
        if name == START_STEP_NAME:
            raise InvalidArgumentError("ctx.next.step() cannot run the start handler again", argument="step_fn")
        return Directive(kind=DirectiveKind.step, step=Step(step_name=name, timeout_ms=self._wf.timeout_ms_for(name)))

    def wait(self, timeout: timedelta | None = None, on_timeout: Callable[..., Any] | None = None) -> Directive:
        """Wait for an event.

        Args:
            timeout: give up waiting after this long (default: wait without limit).
            on_timeout: step to run when the timeout expires (default: the run fails with WaitTimeout).
        """
        timeout_ms = positive_ms(timeout, "timeout") or 0
        name = _own_step(self._wf, on_timeout, "on_timeout") if on_timeout is not None else ""
        return Directive(kind=DirectiveKind.wait, wait=Wait(timeout_ms=timeout_ms, timeout_step_name=name))

    wait_for_event = wait

    def complete(self, result: Any) -> Directive:
        """Complete the run with `result` (encoded now: an unserializable result fails here).

        Raises:
            PayloadTooLargeError: the encoded result is over the value limit.
        """
        primitive = self._codec.to_primitive(result)
        limit = self._max_value_bytes
        if limit is not None:
            size = len(self._codec.encode(primitive))
            if size > limit:
                raise PayloadTooLargeError("run result", size=size, limit=limit)
        return Directive(kind=DirectiveKind.complete, complete=Complete(result=primitive))

    def fail(self, error: ErrorDetails | BaseException | str) -> Directive:
        """Fail the run with `error` (ErrorDetails, an exception, or a message)."""
        if isinstance(error, BaseException):
            details = ErrorDetails.from_exception(error)
        elif isinstance(error, str):
            details = ErrorDetails(type="WorkflowError", message=error)
        else:
            details = error
        return Directive(kind=DirectiveKind.fail, fail=Fail(error=details))

    def fail_step(self, step_name: str, error: ErrorDetails) -> Directive:
        """Fail the run because step `step_name` raised `error`."""
        return Directive(kind=DirectiveKind.fail_step, fail_step=FailStep(step_name=step_name, error=error))


class _StepLogger(logging.LoggerAdapter):  # type: ignore[type-arg]  # generic only in typeshed
    """The replay-aware logger: silent while recorded calls are replayed."""

    def __init__(self, logger: logging.Logger, runtime: StepRuntime) -> None:
        fields = {
            "wf_id": runtime.wf_id,
            "run_id": runtime.run_id,
            "step": runtime.step_name,
            "wf_type": runtime.wf_type,
        }
        super().__init__(logger, fields)
        self._rt = runtime

    def isEnabledFor(self, level: int) -> bool:  # logging's name
        return not self._rt.is_replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


class QueryContext:
    """What a query handler sees: the run's info and a read-only view of its committed store."""

    def __init__(self, *, run: RunInfo, store: Store) -> None:
        self.run = run
        self._store = store
        self.logger = logging.getLogger(f"grctl.workflow.{run.wf_type}.query")

    @property
    def store(self) -> Store:
        """The run's committed store (read-only)."""
        return self._store


class Context:
    """What a handler can do: its run's store, the next directive, deterministic values, logging."""

    def __init__(
        self,
        *,
        run: RunInfo | Callable[[], RunInfo],
        workflow: Workflow,
        store: Store,
        runtime: StepRuntime,
        codec: CodecRegistry,
        max_value_bytes: int | None = None,
        emits: EmitBuffer | None = None,
    ) -> None:
        # A function: `ctx.run` is built on first use (most steps never read it; the worker
        # builds a context for every step).
        self._run: RunInfo | None = None if callable(run) else run
        self._run_of = run if callable(run) else None
        self._wf = workflow
        self._store = store
        self._rt = runtime
        self._codec = codec
        self._next = NextBuilder(workflow, codec, max_value_bytes)
        self._max_value_bytes = max_value_bytes
        self._logger: _StepLogger | None = None  # built on first use: most steps never log
        self._emits = emits

    @property
    def run(self) -> RunInfo:
        """Metadata of the run: `id`, `wf_id`, `wf_type`, the step, the parent, the schedule's tick."""
        info = self._run
        if info is None:
            assert self._run_of is not None
            info = self._run = self._run_of()
        return info

    def emit(
        self,
        topic: str,
        value: Any,
        *,
        key: Any = None,
        headers: Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]] | None = None,
        format: EmitFormat = "json",
        schema: Any = None,
        serializer: Callable[[Any], bytes] | None = None,
        key_format: KeyFormat = "raw",
        key_schema: Any = None,
        key_serializer: Callable[[Any], bytes] | None = None,
    ) -> None:
        """Publish a record to `topic` exactly once, with this step's outcome.

        The record is produced in the Kafka transaction that commits the step: a
        `read_committed` consumer sees it once if the step completes (its directive commits),
        and never if the step raises, times out or is re-executed after a crash (the
        re-execution emits afresh). The producer's partitioner places it by `key`.

        Args:
            topic: an existing topic outside the engine's own (``grctl.*``).
            value: the value, encoded by `format` or `serializer`.
            key: the record key, encoded by `key_format` or `key_serializer` (None: no key).
            headers: record headers (str values are UTF-8 encoded).
            format: "json" (default: the codec's primitives as JSON), "msgpack", "raw" (bytes
                as they are, str as UTF-8), or in the schema registry's wire format with the
                worker's registry (`Worker(schema_registry=...)`): "avro" (a dict fastavro
                takes), "protobuf" (an instance of the message class) or "jsonschema" (any
                value the codec makes JSON of), registered under ``<topic>-value``.
            schema: the schema of a registry format: Avro schema (str or dict), protobuf
                message class, or JSON Schema (str or dict).
            serializer: encodes the value to bytes instead of `format`.
            key_format: "raw" (default: bytes as they are, str as UTF-8), "json", "msgpack", or
                a registry format ("avro", "protobuf", "jsonschema") with `key_schema`,
                registered under ``<topic>-key``.
            key_schema: the schema of a registry `key_format` (as `schema`).
            key_serializer: encodes the key to bytes instead of `key_format`.

        Raises:
            InvalidArgumentError: a bad topic name, an engine topic, a bad key or header, a
                registry format (of the value or the key) without a schema or without a
                registry, a `key_schema` for a plain key format, both a `key_format` and a
                `key_serializer`.
            CodecError: the value or key cannot be encoded.

        When the handler returns, the step fails with `EmitTopicNotFoundError` if a topic does
        not exist, `PayloadTooLargeError` if a record is larger than its topic takes,
        `SchemaSerializationError` if a value or key does not fit its schema (or the registry
        refuses the schema; its `field` says which), `SchemaRegistryUnavailableError` if the
        registry does not answer.
        """
        if self._emits is None:
            raise InvalidArgumentError("ctx.emit is only available in a step handler", argument="topic")
        self._emits.add(
            topic, value, key=key, headers=headers, format=format, schema=schema, serializer=serializer,
            key_format=key_format, key_schema=key_schema, key_serializer=key_serializer,
        )  # fmt: skip

    @property
    def store(self) -> Store:
        """The run's key-value store."""
        return self._store

    @property
    def next(self) -> NextBuilder:
        """The directive builder."""
        return self._next

    @property
    def logger(self) -> logging.LoggerAdapter:  # type: ignore[type-arg]  # generic only in typeshed
        """A logger that stays silent while the step replays recorded calls."""
        if self._logger is None:
            self._logger = _StepLogger(logging.getLogger(f"grctl.workflow.{self.run.wf_type}"), self._rt)
        return self._logger

    @property
    def is_replaying(self) -> bool:
        """True while the step re-executes calls that an earlier execution recorded."""
        return self._rt.is_replaying

    # ------------------------------------------------------------------ deterministic values

    async def now(self) -> datetime:
        """The current UTC time, recorded on first execution and replayed afterwards."""

        clock = self._rt.clock

        async def compute() -> datetime:
            return datetime.fromtimestamp(clock.time(), UTC)

        value = await self._rt.record("now", "now", compute, lambda v: ("timestamp.recorded", {"value": v}))
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value  # type: ignore[no-any-return]  # the journal holds what compute() returned

    async def random(self) -> float:
        """A float in [0, 1), recorded on first execution and replayed afterwards."""

        async def compute() -> float:
            return random.random()  # not for cryptography

        return float(await self._rt.record("random", "random", compute, lambda v: ("random.recorded", {"value": v})))

    async def uuid4(self) -> uuid.UUID:
        """A random UUID, recorded on first execution and replayed afterwards."""

        async def compute() -> str:
            return str(uuid.uuid4())

        value = await self._rt.record("uuid4", "uuid4", compute, lambda v: ("uuid.recorded", {"value": v}))
        return uuid.UUID(value)

    async def sleep(self, duration: timedelta | float) -> None:
        """Sleep durably, then record `sleep.recorded` (`duration_ms`, `until_ms`) in history.

        The wake-up deadline is journaled when the sleep starts, so a re-execution after a crash
        waits only for what remains of it. The history event is written when the sleep has
        ended (as the original SDK does), together with a journal entry saying so: a
        re-execution that replays a sleep which had ended returns at once and writes no second
        event, and one that replays a sleep cut short by a crash writes the event when the
        rest of it has passed.

        Args:
            duration: a timedelta, or seconds as a number; must not be negative.
        """
        if isinstance(duration, timedelta):
            seconds = duration.total_seconds()
        elif isinstance(duration, int | float) and not isinstance(duration, bool):
            seconds = float(duration)
        else:
            raise InvalidArgumentError(f"ctx.sleep() takes a timedelta or seconds, got {type(duration).__name__}")
        if seconds < 0 or seconds != seconds:
            raise InvalidArgumentError(f"ctx.sleep() duration must be >= 0, got {duration!r}", argument="duration")
        duration_ms = int(seconds * 1000)

        rt = self._rt
        clock = rt.clock

        async def compute() -> int:
            return int(clock.time() * 1000) + duration_ms

        operation_id = f"sleep:{rt.position}"  # the event names the journal entry of the deadline
        deadline_ms = await rt.record("sleep", "sleep", compute)
        remaining = deadline_ms / 1000 - clock.time()
        if remaining > 0:
            await clock.sleep(remaining)
        rt.record_once(
            "sleep_end",
            "sleep",
            ("sleep.recorded", {"duration_ms": duration_ms, "until_ms": deadline_ms}),
            operation_id,
        )

    # ------------------------------------------------------------------ changing code

    def patched(self, patch_id: str) -> bool:
        """True where this run takes the new branch of a code change made while runs were in flight.

        ```python
        if ctx.patched("send-sms"):
            await send_sms(order)        # new code
        else:
            await send_email(order)      # what runs that already passed here did
        ```

        On a live call it records a marker in the step's journal (and `patch.recorded` in
        history) and returns True. When the step re-executes, it returns True only where the
        recorded execution took that branch (the marker is at this position), False where the
        journal holds something else: the code the run already executed goes on the same way.
        Once no run can still need the old branch, keep only the new code and call
        `deprecate_patch` in place of `patched` (Temporal's semantics).

        Args:
            patch_id: names the change; unique within the workflow type.
        """
        non_empty_str(patch_id, "patch_id")
        rt = self._rt
        recorded = rt.peek()
        if recorded is not None:
            if recorded.kind == "patch" and recorded.name == patch_id:
                rt.advance()
                return True
            return False  # the recorded execution passed here before the patch existed
        if rt.whole:
            return False  # a replay of a finished step: its execution went on without the patch
        rt.history("patch.recorded", {"patch_id": patch_id}, f"patch:{rt.position}")
        rt.append("patch", patch_id, None)
        return True

    def deprecate_patch(self, patch_id: str) -> None:
        """The code of `patched(patch_id)` is the only code now: replay a recorded marker, record none.

        Args:
            patch_id: the patch whose old branch was removed.
        """
        non_empty_str(patch_id, "patch_id")
        recorded = self._rt.peek()
        if recorded is not None and recorded.kind == "patch" and recorded.name == patch_id:
            self._rt.advance()

    # ------------------------------------------------------------------ remote tasks

    async def remote_task(
        self,
        name: str,
        payload: Any = None,
        *,
        queue: str,
        timeout: timedelta | None = None,
        schedule_to_start: timedelta | None = None,
        heartbeat: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        result_type: Any = None,
    ) -> Any:
        """Run task `name` on a task worker of `queue` (any language) and return its result.

        The request goes to `grctl.<namespace>.tasks.<queue>` in the transaction that commits
        this step's suspension; the step gives its worker back while the task runs and
        re-executes when the answer is journaled, replaying its calls, so the task is asked
        once per attempt, never again on a re-execution (docs/remote-tasks.md). One remote task
        is awaited at a time per step; call it again for the next.

        Args:
            name: the task's name (the handler a task worker registered).
            payload: its input (any value the codec encodes; JSON-compatible for other languages).
            queue: the queue whose workers run it.
            timeout: start-to-close timeout of each attempt (default
                `defaults.REMOTE_TASK_TIMEOUT_MS`): from the worker's start (or the request, if
                it reports none) to its answer.
            schedule_to_start: how long an attempt may wait in the queue before a worker starts it.
            heartbeat: the longest silence between a started attempt's heartbeats.
            retry_policy: how failed and timed-out attempts are retried (default: one attempt).
                Timeouts fail as `ScheduleToStartTimeout`, `StartToCloseTimeout`, `HeartbeatTimeout`.
            result_type: convert the result to this type.

        Raises:
            RemoteTaskError: the task failed and no attempt is left.
            RemoteTaskTimeoutError: its last attempt timed out.
        """
        non_empty_str(name, "name")
        non_empty_str(queue, "queue")
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise InvalidArgumentError(f"retry_policy must be a RetryPolicy, got {type(retry_policy).__name__}")
        start_to_close = positive_ms(timeout, "timeout") or defaults.REMOTE_TASK_TIMEOUT_MS
        rt = self._rt
        recorded = rt.next_recorded(JOURNAL_REMOTE, name)
        if recorded is not None:
            value = recorded.value
            if value.get("ok"):
                result = value.get("result")
                return self._codec.from_primitive(result, result_type) if result_type is not None else result
            err = dict(value.get("error") or {})
            etype = str(err.get("type") or "RemoteTaskError")
            cls = RemoteTaskTimeoutError if err.get("timeout") else RemoteTaskError
            raise cls(
                f"remote task {name!r} on queue {queue!r} failed after attempt {value.get('attempt')}: "
                f"{etype}: {err.get('message') or ''}",
                task=name, queue=queue, error_type=etype, attempt=int(value.get("attempt") or 0), details=err,
            )  # fmt: skip
        raw = self._codec.to_primitive(payload)
        if self._max_value_bytes is not None:
            size = len(self._codec.encode(raw))
            if size > self._max_value_bytes:
                raise PayloadTooLargeError(
                    f"payload of remote task {name!r}", size=size, limit=self._max_value_bytes, wf_id=rt.wf_id
                )
        call = RemoteTask(
            task_id="",
            name=name,
            queue=queue,
            position=rt.position,
            payload=raw,
            retry=msgspec.to_builtins(retry_policy) if retry_policy is not None else None,
            schedule_to_start_ms=positive_ms(schedule_to_start, "schedule_to_start"),
            start_to_close_ms=start_to_close,
            heartbeat_ms=positive_ms(heartbeat, "heartbeat"),
        )
        raise RemoteTaskSuspended(call)

    # ------------------------------------------------------------------ limiters

    def limit(
        self, limiter: str, *, key: str | None = None, fairness: str | None = None, priority: int | None = None
    ) -> LimitSection:
        """A section of the step that runs only with a permit of `limiter` (docs/tutorials/flow-control.md).

        ``async with ctx.limit("payments-api", key=customer_id, fairness=tenant): ...``

        Entering it the first time suspends the step (its worker is free meanwhile) until the
        limiter, kept on the partition that owns its name, grants a permit; the step then
        re-executes, replaying what it did before, and the section runs with the permit held.
        The permit goes back in the transaction that commits the step's outcome once the section
        is left, and whatever happens: when the step ends (in any way), or the run is cancelled,
        terminated or times out. While the run waits, describe shows what for.

        Args:
            limiter: the limiter's name (`Worker(limiters=[...])` or `grctl limiter set`).
            key: the key whose own limit applies (the limiter's `per_key`), e.g. a customer id.
            fairness: the fairness key (a tenant): keys are served in turn, by their weights.
            priority: 1 (first) to 5 (last); default: the run's own priority (3 unless started with one).

        Raises:
            LimiterNotFoundError: (when entered) no limiter has that name.
        """
        check_name(limiter)
        for value, what in ((key, "key"), (fairness, "fairness")):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_LIMIT_KEY_CHARS):
                raise InvalidArgumentError(
                    f"{what} must be a string of at most {MAX_LIMIT_KEY_CHARS} characters, got {value!r}", argument=what
                )
        if priority is not None:
            check_priority(priority)
        return LimitSection(self._rt, limiter, key or "", fairness or "", priority or 0)

    # ------------------------------------------------------------------ child workflows

    async def start_child(
        self,
        workflow_type: str,
        workflow_id: str,
        workflow_input: Any | None = None,
        workflow_timeout: timedelta | None = None,
        on_completed_step: Callable[..., Any] | None = None,
    ) -> ChildHandle:
        """Start a child run; its start is committed with this step's journal (exactly once).

        Args:
            workflow_type: the child's workflow type.
            workflow_id: the child's workflow id.
            workflow_input: the child's input.
            workflow_timeout: the child's workflow timeout.
            on_completed_step: a step of this workflow that receives the child's `ChildOutcome`
                as an event when the child ends (the run must be waiting to handle it).

        Returns:
            A handle whose `future` resolves with the child's result inside this step.
        """
        non_empty_str(workflow_type, "workflow_type")
        non_empty_str(workflow_id, "workflow_id")
        callback = _own_step(self._wf, on_completed_step, "on_completed_step") if on_completed_step else None
        timeout_ms = positive_ms(workflow_timeout, "workflow_timeout")
        rt = self._rt
        name = f"{workflow_type}:{workflow_id}"
        entry = rt.next_recorded("start_child", name)
        if entry is not None:
            run_id = entry.value["run_id"]
        else:
            run_id = str(ULID())
            raw_input = self._codec.to_primitive(workflow_input)
            rt.sink.start_child(
                rt, wf_type=workflow_type, wf_id=workflow_id, run_id=run_id, input=raw_input, timeout_ms=timeout_ms,
                callback_step=callback, traceparent=tracing.current_traceparent(),
            )  # fmt: skip
            rt.history(
                "child.started",
                {"run_id": run_id, "wf_type": workflow_type, "wf_id": workflow_id, "input": raw_input},
                f"start:{rt.position}",
            )
            rt.append("start_child", name, {"run_id": run_id})
        info = RunInfo(
            id=run_id, wf_id=workflow_id, wf_type=workflow_type, status=RunStatus.running,
            parent_wf_id=rt.wf_id, parent_run_id=rt.run_id, parent_wf_type=rt.wf_type, parent_callback_step=callback,
            timeout=timeout_ms / 1000 if timeout_ms else None,
        )  # fmt: skip
        return ChildHandle(info, rt, self._codec)

    start = start_child

    async def run_child(
        self,
        workflow_type: str,
        workflow_id: str,
        workflow_input: Any | None = None,
        workflow_timeout: timedelta | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Start a child and wait for its result inside this step.

        Raises:
            WorkflowError: the child failed.
            asyncio.CancelledError: the child was cancelled or terminated.
            TimeoutError: `timeout` seconds passed.
        """
        handle = await self.start_child(workflow_type, workflow_id, workflow_input, workflow_timeout)
        return await handle.result(timeout=timeout)

    async def send_to_parent(self, event_name: str, payload: Any | None = None) -> None:
        """Send an event to the parent run (once, even if this step re-executes).

        Raises:
            RuntimeError: this run has no parent.
        """
        if self.run.parent_wf_id is None or self.run.parent_run_id is None:
            raise NoParentWorkflowError("No parent workflow to send event to.")
        non_empty_str(event_name, "event_name")
        rt = self._rt
        if rt.next_recorded("send_to_parent", event_name) is not None:
            return
        raw = self._codec.to_primitive(payload)
        rt.sink.send_event(
            rt, wf_id=self.run.parent_wf_id, run_id=self.run.parent_run_id, event_name=event_name, payload=raw,
            event_id=str(ULID()),
        )  # fmt: skip
        rt.history(
            "parent.event_sent",
            {"event_name": event_name, "payload": raw, "parent_wf_type": self.run.parent_wf_type,
             "parent_wf_id": self.run.parent_wf_id},
            f"send_to_parent:{rt.position}",
        )  # fmt: skip
        rt.append("send_to_parent", event_name, None)


class LimitSection:
    """The section a permit covers (`Context.limit`): an async context manager, entered once."""

    __slots__ = ("_acquire_id", "_fairness", "_key", "_limiter", "_priority", "_rt")

    def __init__(self, rt: StepRuntime, limiter: str, key: str, fairness: str, priority: int) -> None:
        self._rt = rt
        self._limiter = limiter
        self._key = key
        self._fairness = fairness
        self._priority = priority
        self._acquire_id: str | None = None

    async def __aenter__(self) -> LimitSection:
        if self._acquire_id is not None:
            raise InvalidArgumentError("a ctx.limit(...) section is entered once: call ctx.limit again for another")
        rt = self._rt
        recorded = rt.next_recorded(JOURNAL_LIMIT, self._limiter)
        if recorded is None:
            raise PermitSuspended(
                PendingAcquire(
                    limiter=self._limiter, acquire_id="", position=rt.position, key=self._key,
                    fairness=self._fairness, priority=self._priority,
                )
            )  # fmt: skip
        value = recorded.value
        if not value.get("ok"):
            err = value.get("error") or {}
            raise LimiterNotFoundError(
                str(err.get("message") or f"limiter {self._limiter!r} refused"), limiter=self._limiter
            )
        self._acquire_id = str(value["acquire_id"])
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        # A step that suspends inside the section (a remote task, another permit, a long back-off)
        # has not left it: the permit stays held until the section ends in its re-execution.
        if self._acquire_id is not None and not (exc_type is not None and issubclass(exc_type, StepSuspended)):
            self._rt.released.append(self._acquire_id)

    @property
    def acquire_id(self) -> str | None:
        """The permit's id inside its run (`<step seq>.<position>`), once granted."""
        return self._acquire_id
