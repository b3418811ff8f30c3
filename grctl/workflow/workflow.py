"""`Workflow`: the authoring API. Declares a workflow type and its handlers; no Kafka here."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

from grctl import defaults
from grctl.errors import DuplicateHandlerError, InvalidArgumentError, RegistrationError
from grctl.models.directive import START_STEP_NAME
from grctl.workflow.handlers import HandlerSpec, inspect_handler

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

F = TypeVar("F", bound=Callable[..., Any])

#: `@wf.step()` without a timeout gets 10 s, as the original SDK stores (BEHAVIOUR.md §1.2).

#: The name of the start handler's step on the wire and in history (BEHAVIOUR.md §2.1).


@dataclass
class HandlerConfig:
    """A registered handler: the function, its parameters and its timeout."""

    handler: Callable[..., Any]
    spec: HandlerSpec
    timeout: timedelta | None = None
    on_timeout_handler: Callable[..., Any] | None = None


@dataclass(frozen=True)
class EventDef:
    """An event handler's name and execution timeout (0: the engine default)."""

    name: str
    timeout_ms: int


@dataclass
class _Handlers:
    start: HandlerConfig | None = None
    steps: dict[str, HandlerConfig] = field(default_factory=dict)
    events: dict[str, HandlerConfig] = field(default_factory=dict)
    queries: dict[str, HandlerConfig] = field(default_factory=dict)


def _check_timeout(where: str, timeout: timedelta | None) -> None:
    if timeout is None:
        return
    if not isinstance(timeout, timedelta):
        raise InvalidArgumentError(f"{where}: timeout must be a datetime.timedelta, got {type(timeout).__name__}")
    if timeout <= timedelta(0):
        raise InvalidArgumentError(f"{where}: timeout must be positive, got {timeout}", argument="timeout")


class Workflow:
    """A workflow type and its handlers.

    Example:
        ```python
        order = Workflow(workflow_type="Order")

        @order.start()
        async def start(ctx: Context, order_id: str) -> Directive:
            ctx.store.put("order_id", order_id)
            return ctx.next.step(charge)
        ```

    Args:
        workflow_type: the type name clients start runs with (no dots, not empty).
    """

    def __init__(
        self,
        workflow_type: str,
        *,
        results_topic: str | None = None,
        version: int = 1,
        upgrade: Literal["pinned", "auto"] = "pinned",
    ) -> None:
        """A workflow type.

        Args:
            workflow_type: its name (no dots or whitespace).
            results_topic: a topic every ended run publishes its outcome to, as JSON keyed by
                workflow id (wf_id, run_id, wf_type, status, result, error, reason, started_ms,
                ended_ms, duration_ms, parent_wf_id; a ``grctl.status`` header), in the
                transaction that ends the run: exactly one record per ended run for
                `read_committed` readers. The topic must exist when the worker starts.
            version: the version of the type this definition is (1, 2, ...). A worker may serve
                several versions of one type; a run starts on the newest its worker serves (or
                the one the client names) and records it. Runs execute on their own version's
                handlers (pinned): change the code of a type under a new version while runs of
                the old one are in flight (docs/tutorials/deploying-a-new-version.md).
            upgrade: "pinned" (default): runs started on this version finish on it. "auto":
                they move to the newest version served at their next step; a step that changed
                branches on `ctx.patched(...)`.
        """
        if not isinstance(workflow_type, str) or not workflow_type.strip():
            raise InvalidArgumentError(f"workflow_type must be a non-empty string, got {workflow_type!r}")
        if "." in workflow_type or any(c.isspace() for c in workflow_type):
            raise InvalidArgumentError(
                f"workflow_type {workflow_type!r} must not contain dots or whitespace", argument="workflow_type"
            )
        if results_topic is not None and (
            not isinstance(results_topic, str)
            or not _TOPIC_NAME.match(results_topic)
            or results_topic.startswith("grctl.")
        ):
            raise InvalidArgumentError(
                f"results_topic {results_topic!r} must be a topic name (letters, digits, '.', '_', '-') outside "
                "the engine's grctl.* topics",
                argument="results_topic",
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidArgumentError(f"version must be an integer >= 1, got {version!r}", argument="version")
        if upgrade not in ("pinned", "auto"):
            raise InvalidArgumentError(f'upgrade must be "pinned" or "auto", got {upgrade!r}', argument="upgrade")
        self._type = workflow_type
        self._h = _Handlers()
        self.results_topic = results_topic
        self.version = version
        self.upgrade = upgrade

    @property
    def workflow_type(self) -> str:
        """The workflow type name."""
        return self._type

    # ------------------------------------------------------------------ decorators

    def start(self, timeout: timedelta | None = None) -> Callable[[F], F]:
        """Register the start handler (exactly one per workflow).

        Args:
            timeout: how long the start handler may run (default: 5 minutes).
        """
        _check_timeout(f"{self._type}.start", timeout)

        def deco(fn: F) -> F:
            if self._h.start is not None:
                raise DuplicateHandlerError(
                    f"workflow {self._type!r} already has a start handler "
                    f"({self._h.start.handler.__name__}); a workflow has exactly one",
                    wf_type=self._type,
                    name=START_STEP_NAME,
                )
            self._h.start = HandlerConfig(fn, inspect_handler(fn, kind="start"), timeout)
            return fn

        return deco

    def step(self, timeout: timedelta | None = None) -> Callable[[F], F]:
        """Register a step handler, keyed by its function name.

        Args:
            timeout: how long the step may run (default: 10 seconds).
        """
        _check_timeout(f"{self._type}.step", timeout)

        def deco(fn: F) -> F:
            return self._register(self._h.steps, "step", fn.__name__, fn, timeout or defaults.DECORATED_STEP_TIMEOUT)

        return deco

    def event(self, name: str | None = None, timeout: timedelta | None = None) -> Callable[[F], F]:
        """Register an event handler.

        Args:
            name: the event name (default: the function name).
            timeout: how long the handler may run once the event is delivered (default: 5 minutes).
        """
        _check_timeout(f"{self._type}.event", timeout)

        def deco(fn: F) -> F:
            return self._register(self._h.events, "event", name or fn.__name__, fn, timeout)

        return deco

    def query(self, name: str | None = None) -> Callable[[F], F]:
        """Register a query handler (answered from committed state)."""

        def deco(fn: F) -> F:
            return self._register(self._h.queries, "query", name or fn.__name__, fn, None)

        return deco

    def _register(self, table: dict[str, HandlerConfig], kind: str, key: str, fn: F, timeout: timedelta | None) -> F:
        """Add `fn` under `key` to `table` (the steps, events or queries); refuse a name used twice."""
        if key == START_STEP_NAME and kind != "query":
            raise DuplicateHandlerError(
                f"workflow {self._type!r}: a {kind} handler cannot be named {START_STEP_NAME!r} "
                f"(reserved for the start handler); rename it",
                wf_type=self._type,
                name=key,
            )
        if key in table:
            raise DuplicateHandlerError(
                f"workflow {self._type!r} already has a {kind} handler named {key!r}", wf_type=self._type, name=key
            )
        table[key] = HandlerConfig(fn, inspect_handler(fn, kind=kind), timeout)
        return fn

    # ------------------------------------------------------------------ introspection

    @property
    def start_handler(self) -> HandlerConfig | None:
        """The start handler, if registered."""
        return self._h.start

    @property
    def start_step_name(self) -> str:
        """The start handler's function name."""
        return self._h.start.handler.__name__ if self._h.start else ""

    @property
    def step_names(self) -> list[str]:
        """Names of the step handlers."""
        return list(self._h.steps)

    @property
    def event_names(self) -> list[str]:
        """Names of the event handlers."""
        return list(self._h.events)

    @property
    def query_names(self) -> list[str]:
        """Names of the query handlers."""
        return list(self._h.queries)

    @property
    def event_defs(self) -> list[EventDef]:
        """The event handlers with their execution timeouts in ms (0: default)."""
        return [
            EventDef(name, int(cfg.timeout.total_seconds() * 1000) if cfg.timeout else 0)
            for name, cfg in self._h.events.items()
        ]

    def handler_for(self, step: str) -> HandlerConfig | None:
        """The handler that runs for a step name: start, then events, then steps."""
        if step == START_STEP_NAME:
            return self._h.start
        return self._h.events.get(step) or self._h.steps.get(step)

    def timeout_ms_for(self, step: str) -> int | None:
        """The execution timeout of the handler of `step`, in ms (None: engine default)."""
        cfg = self.handler_for(step)
        if cfg is None or cfg.timeout is None:
            return None
        return int(cfg.timeout.total_seconds() * 1000)

    def has_event(self, name: str) -> bool:
        """True if `name` is deliverable as an event (an event handler, or a step used as a callback)."""
        return name in self._h.events or name in self._h.steps

    def query_handler(self, name: str) -> HandlerConfig | None:
        """The query handler named `name`."""
        return self._h.queries.get(name)

    def validate(self) -> None:
        """Check the definition is complete; raise `RegistrationError` naming every problem."""
        problems = []
        if self._h.start is None:
            problems.append("it has no start handler (decorate one async function with @wf.start())")
        clash = set(self._h.events) & set(self._h.steps)
        if clash:
            problems.append(f"names used both as event and step: {sorted(clash)}")
        if problems:
            raise RegistrationError(f"workflow {self._type!r} is invalid: " + "; ".join(problems))

    def __repr__(self) -> str:
        if self.version == 1 and self.upgrade == "pinned":
            return f"Workflow({self._type!r})"
        return f"Workflow({self._type!r}, version={self.version}, upgrade={self.upgrade!r})"
