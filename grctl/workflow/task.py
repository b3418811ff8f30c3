"""`@task`: a side-effecting async function called from a step, with retries, journaled.

A finished task's outcome (result, final error, or cancellation) is recorded in the step's
journal, so when the step re-executes after a crash the task is not called again: the
recorded result is returned (converted to the function's return annotation) or the recorded
error is raised again. Each failed attempt is journaled with the deadline of its retry, so a
crash during a back-off resumes the wait where it was instead of starting over, and the
attempt count continues.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import random
import sys
import time
import typing
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from grctl import tracing
from grctl.codec import CodecRegistry, default_codec
from grctl.engine.retry import retry_delay_ms, should_retry
from grctl.errors import (
    CodecError,
    HandlerDefinitionError,
    InvalidArgumentError,
    JournalMismatchError,
    NonDeterminismError,
)
from grctl.models.errors import ErrorDetails
from grctl.models.retry import RetryPolicy
from grctl.workflow.runtime import StepRuntime, StepSuspended, get_step_runtime

__all__ = ["RetryPolicy", "RetryRunner", "TaskExecutor", "task"]

P = ParamSpec("P")
R = TypeVar("R")

#: Retry back-offs at least this long suspend the step on a durable timer instead of sleeping.
DURABLE_BACKOFF_MS = 2000

JOURNAL_TASK = "task"
JOURNAL_ATTEMPT = "task_attempt"


def _rebuild_error(err: dict[str, Any]) -> BaseException:
    """Re-create a recorded exception from its class, else a RuntimeError.

    The class is looked up only in modules this process has already imported: the journal is
    data, and data must never make the worker import a module (an import runs its code). An
    exception class of a module not loaded yet becomes the RuntimeError fallback.
    """
    qualified = err.get("qualified_type") or ""
    message = err.get("message") or ""
    module_name, _, qualname = qualified.rpartition(".")
    obj: Any = sys.modules.get(module_name)
    if obj is not None:
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            try:
                return obj(message)
            except Exception:  # noqa: BLE001  # a constructor wanting other arguments: the fallback
                pass
    return RuntimeError(f"{err.get('type') or 'Error'}: {message}")


def _error_dict(exc: BaseException) -> dict[str, Any]:
    d = ErrorDetails.from_exception(exc)
    return {
        "type": d.type,
        "message": d.message,
        "qualified_type": d.qualified_type,
        "stack_trace": d.stack_trace,
    }


class TaskExecutor:
    """Runs one task call inside a step: replay from the journal, or live attempts."""

    def __init__(self, fn: Callable[..., Awaitable[Any]], policy: RetryPolicy | None) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.policy = policy
        self.signature = inspect.signature(fn)
        try:
            self.return_type: Any = typing.get_type_hints(fn).get("return", Any)
        except Exception:  # noqa: BLE001  # unresolvable annotation: return raw values
            self.return_type = Any

    def _codec(self, rt: StepRuntime) -> CodecRegistry:
        return rt.codec if rt.codec is not None else default_codec()

    def _args_primitive(self, codec: CodecRegistry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return codec.to_primitive(dict(bound.arguments))
        except Exception:  # noqa: BLE001  # recording arguments is informative only
            return {"repr": repr((args, kwargs))[:500]}

    def _convert(self, rt: StepRuntime, codec: CodecRegistry, raw: Any) -> Any:
        """The recorded result as the return annotation asks for it (the original's rule)."""
        tp = self.return_type
        if tp is Any or tp is None or tp is type(None):
            return raw
        try:
            return codec.from_primitive(raw, tp)
        except CodecError as exc:
            name = getattr(tp, "__qualname__", repr(tp))
            raise JournalMismatchError(
                f"step {rt.step_name!r} of workflow {rt.wf_type!r} (wf_id {rt.wf_id!r}) re-executes, and the result "
                f"that task {self.name!r} returned in the recorded execution no longer converts to its return "
                f"annotation {name}: {exc}. The task's return type changed since that execution; change it back "
                f"until the runs recorded with the old type have ended, or accept the recorded value (annotate Any).",
                step=rt.step_name,
                name=self.name,
                expected=name,
            ) from exc

    def _check_args(self, rt: StepRuntime, recorded: dict[str, Any], args_hash: str) -> None:
        was = recorded.get("args_hash")
        if was is not None and was != args_hash:
            raise NonDeterminismError(
                f"step {rt.step_name!r} of workflow {rt.wf_type!r} (wf_id {rt.wf_id!r}) called task "
                f"{self.name!r} at journal position {rt.position} with other arguments than the recorded "
                f"execution (args hash {args_hash} vs {was}). Workflow code must make the same calls with the "
                f"same arguments when re-executed.",
                step=rt.step_name,
                position=rt.position,
                expected=f"task:{self.name}({was})",
                got=f"task:{self.name}({args_hash})",
            )

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        rt = get_step_runtime()
        codec = self._codec(rt)
        args_primitive = self._args_primitive(codec, args, kwargs)
        args_hash = hashlib.sha256(codec.encode(args_primitive)).hexdigest()[:16]
        attempt = 1
        retry_at_ms: int | None = None
        # 1. Replay: skip recorded failed attempts; a recorded outcome ends the call.
        while True:
            entry = rt.peek()
            if entry is None:
                break
            if entry.kind == JOURNAL_ATTEMPT and entry.name == self.name:
                self._check_args(rt, entry.value, args_hash)
                rt.advance()
                attempt = int(entry.value["attempt"]) + 1
                retry_at_ms = int(entry.value["retry_at_ms"])
                continue
            if entry.kind == JOURNAL_TASK and entry.name == self.name:
                self._check_args(rt, entry.value, args_hash)
            recorded = rt.next_recorded(JOURNAL_TASK, self.name)  # raises NonDeterminismError on mismatch
            assert recorded is not None
            value = recorded.value
            if value.get("cancelled"):
                raise asyncio.CancelledError(f"task {self.name} was cancelled")
            if not value.get("ok"):
                raise _rebuild_error(value.get("error") or {})
            return self._convert(rt, codec, value.get("result"))
        # 2. Live.
        task_id = f"{self.name}:{rt.position}"
        if attempt == 1:
            rt.history(
                "task.started",
                {"task_id": task_id, "task_name": self.name, "args": args_primitive,
                 "step_name": rt.step_name},
                task_id,
            )  # fmt: skip
        if retry_at_ms is not None:
            remaining = retry_at_ms / 1000 - rt.clock.time()
            if remaining > 0:
                await rt.clock.sleep(remaining)
        max_attempts = self.policy.effective_max_attempts if self.policy else 1
        while True:
            t0 = time.monotonic()
            try:
                if not tracing.enabled():
                    result = await self.fn(*args, **kwargs)
                else:
                    with tracing.task_span(self.name, attempt, rt.wf_id, rt.run_id, rt.step_name):
                        result = await self.fn(*args, **kwargs)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the engine cancels the step: nothing to record
                rt.history("task.cancelled", {"task_id": task_id, "task_name": self.name}, task_id)
                rt.append(JOURNAL_TASK, self.name, {"ok": False, "cancelled": True, "args_hash": args_hash})
                raise
            except Exception as exc:
                duration = int((time.monotonic() - t0) * 1000)
                err = _error_dict(exc)
                if should_retry(self.policy, attempt, type(exc).__name__):
                    assert self.policy is not None
                    delay = retry_delay_ms(self.policy, attempt, random.random())
                    rt.history(
                        "task.attempt_failed",
                        {"task_id": task_id, "task_name": self.name, "attempt": attempt,
                         "max_attempts": max_attempts, "error": err, "next_retry_delay_ms": delay,
                         "duration_ms": duration},
                        task_id,
                    )  # fmt: skip
                    resume_at_ms = int(rt.clock.time() * 1000) + delay
                    rt.append(
                        JOURNAL_ATTEMPT,
                        self.name,
                        {"attempt": attempt, "retry_at_ms": resume_at_ms, "error": err, "args_hash": args_hash},
                    )
                    if delay >= DURABLE_BACKOFF_MS:
                        # Long back-off: give the worker back; a durable timer resumes the step.
                        raise StepSuspended(resume_at_ms) from None
                    attempt += 1
                    await rt.clock.sleep(delay / 1000)
                    continue
                rt.history(
                    "task.failed",
                    {"task_id": task_id, "task_name": self.name, "error": err, "duration_ms": duration},
                    task_id,
                )
                rt.append(JOURNAL_TASK, self.name, {"ok": False, "error": err, "args_hash": args_hash})
                raise
            duration = int((time.monotonic() - t0) * 1000)
            primitive = codec.to_primitive(result)
            # Journaled first: a result over the value limit raises PayloadTooLargeError here,
            # into the step, and history does not claim a completion the journal could not keep.
            rt.append(JOURNAL_TASK, self.name, {"ok": True, "result": primitive, "args_hash": args_hash})
            rt.history(
                "task.completed",
                {
                    "task_id": task_id,
                    "task_name": self.name,
                    "output": {"result": primitive},
                    "duration_ms": duration,
                },
                task_id,
            )
            return result


#: The original SDK's name for the task executor (BEHAVIOUR.md §1.1 lists it among `grctl.worker.task`'s exports).
RetryRunner = TaskExecutor


@overload
def task(fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...


@overload
def task(
    *, retry_policy: RetryPolicy | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]: ...


def task(fn: Any = None, /, *, retry_policy: RetryPolicy | None = None) -> Any:
    """Declare a task: `@task` or `@task(retry_policy=RetryPolicy(max_attempts=3))`.

    A task can only be called from inside a step; its outcome is journaled so it runs at most
    once per step execution that commits (at-least-once if the worker dies mid-task).
    """
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise InvalidArgumentError(f"retry_policy must be a RetryPolicy, got {type(retry_policy).__name__}")

    def deco(f: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if not inspect.iscoroutinefunction(f):
            raise HandlerDefinitionError(f"task {getattr(f, '__name__', f)!r} must be declared with async def")
        executor = TaskExecutor(f, retry_policy)

        @functools.wraps(f)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await executor(*args, **kwargs)

        wrapper.__grctl_task__ = executor  # type: ignore[attr-defined]  # introspection
        return wrapper

    if fn is not None:
        return deco(fn)
    return deco
