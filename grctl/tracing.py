"""OpenTelemetry traces of runs (optional: ``pip install 'grctl[otel]'``).

Off until `enable` (or `enable_otlp`) is called in the process. While off, nothing of
OpenTelemetry is imported and every hook costs one global read. Once on:

| span | made by | parent |
|---|---|---|
| ``grctl.start <type>`` (producer) | `Client.start_workflow` | the caller's current span |
| ``grctl.step <type>.<step>`` | the worker, per step execution | the start's context |
| ``grctl.task <name>`` | each attempt of a `@task` | its step's span |
| ``grctl.run <type>`` | the worker that ends the run, from the run's start time to its end | the start's context |
| a child's ``grctl.step`` and ``grctl.run`` spans | the child's workers | the step span that started the child |

The context travels in W3C ``traceparent`` form in the start directive (`StartCmd.traceparent`)
and is kept in the run's record, so every step of a run, on whichever worker and after any
crash, joins the trace of the client call that started it, and so do its children: a run is
one trace across processes. Spans follow the engine's at-least-once execution: a step that
re-executes after a crash has a span per execution, and a run span may be emitted twice if
the worker that ended the run crashed before its commit.

`enable()` uses the tracer provider the application configured (the global one, or the one
given); `enable_otlp(endpoint)` sets up the SDK with an OTLP/HTTP exporter (needs
``opentelemetry-exporter-otlp-proto-http``, part of the extra).

May import: errors, models (and opentelemetry, lazily).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from grctl.errors import TracingNotInstalledError
from grctl.models.history import RUN_END_STATUS

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

T = TypeVar("T")

INSTRUMENTATION_NAME = "grctl"
#: Run end history kinds that mark the run span as an error.
_ERROR_ENDS = frozenset({"run.failed", "run.timeout"})

_tracer: Tracer | None = None


def enabled() -> bool:
    """True once `enable` was called (and not `disable`)."""
    return _tracer is not None


def enable(tracer_provider: TracerProvider | None = None) -> None:
    """Trace runs with `tracer_provider` (default: OpenTelemetry's global provider).

    Raises:
        TracingNotInstalledError: OpenTelemetry is not installed (``pip install 'grctl[otel]'``).
    """
    global _tracer
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise TracingNotInstalledError(str(exc)) from None
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    _tracer = provider.get_tracer(INSTRUMENTATION_NAME)


def enable_otlp(endpoint: str | None = None, *, service_name: str = "grctl") -> SdkTracerProvider:
    """Set up the OpenTelemetry SDK with an OTLP/HTTP exporter and trace runs with it.

    Args:
        endpoint: the collector's traces URL (e.g. http://otel-collector:4318/v1/traces); None:
            the exporter's own default and ``OTEL_EXPORTER_OTLP_*`` variables.
        service_name: the ``service.name`` resource attribute.

    Returns:
        The SDK tracer provider (call its `shutdown()` to flush at exit).

    Raises:
        TracingNotInstalledError: the SDK or the OTLP exporter is not installed.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingNotInstalledError(str(exc)) from None
    provider = SdkProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    enable(provider)
    return provider


def disable() -> None:
    """Stop tracing (spans already started still end)."""
    global _tracer
    _tracer = None


# --------------------------------------------------------------------------- context


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (None: tracing off or no span)."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def _context_of(traceparent: str | None) -> Any:
    """The OpenTelemetry context of a traceparent (None: the current context)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


# --------------------------------------------------------------------------- spans


@contextlib.contextmanager
def start_span(wf_type: str, wf_id: str, run_id: str) -> Iterator[str | None]:
    """The client's ``grctl.start`` span; yields the traceparent to put into the start directive.

    With tracing off it yields None and does nothing.
    """
    tracer = _tracer
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    attributes = {"grctl.workflow_type": wf_type, "grctl.wf_id": wf_id, "grctl.run_id": run_id}
    with tracer.start_as_current_span(f"grctl.start {wf_type}", kind=SpanKind.PRODUCER, attributes=attributes):
        yield current_traceparent()


async def traced_step(
    traceparent: str | None, wf_type: str, wf_id: str, run_id: str, step: str, seq: int, execution: Awaitable[T]
) -> T:
    """Await a step's execution inside a ``grctl.step`` span (its outcome kind as an attribute).

    Call only while `enabled()`. The outcome's `next_kind` of "error" or "timeout" marks the
    span as failed, with the step's recorded error.
    """
    tracer = _tracer
    assert tracer is not None
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes: dict[str, Any] = {
        "grctl.workflow_type": wf_type,
        "grctl.wf_id": wf_id,
        "grctl.run_id": run_id,
        "grctl.step": step,
        "grctl.step_seq": seq,
    }
    with tracer.start_as_current_span(
        f"grctl.step {wf_type}.{step}", context=_context_of(traceparent), kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        outcome = await execution
        kind = getattr(outcome, "next_kind", None)
        if kind is not None:
            span.set_attribute("grctl.step_outcome", kind)
        if kind in ("error", "timeout"):
            error = getattr(outcome, "error", None) or {}
            message = f"{error.get('type', 'StepTimeout')}: {error.get('message', '')}" if error else "step timed out"
            span.set_status(Status(StatusCode.ERROR, message))
        return outcome


@contextlib.contextmanager
def task_span(task_name: str, attempt: int, wf_id: str, run_id: str, step: str) -> Iterator[Span | None]:
    """A ``grctl.task`` span around one attempt of a task (nothing while tracing is off)."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    attributes: dict[str, Any] = {
        "grctl.task": task_name,
        "grctl.task_attempt": attempt,
        "grctl.wf_id": wf_id,
        "grctl.run_id": run_id,
        "grctl.step": step,
    }
    with tracer.start_as_current_span(f"grctl.task {task_name}", attributes=attributes) as span:
        yield span


def run_ended(traceparent: str | None, wf_type: str, wf_id: str, run_id: str, started_ms: int, history: Any) -> None:
    """Emit the ``grctl.run`` span of a run whose end is in `history` (records with `kind`, `ts_ms`, `msg`).

    Call only while `enabled()`.
    """
    tracer = _tracer
    assert tracer is not None
    for h in history:
        if h.kind not in RUN_END_STATUS:
            continue
        from opentelemetry.trace import Status, StatusCode

        attributes = {
            "grctl.workflow_type": wf_type,
            "grctl.wf_id": wf_id,
            "grctl.run_id": run_id,
            "grctl.status": h.kind.removeprefix("run."),
        }
        span = tracer.start_span(
            f"grctl.run {wf_type}",
            context=_context_of(traceparent),
            attributes=attributes,
            start_time=(started_ms or h.ts_ms) * 1_000_000,
        )
        if h.kind in _ERROR_ENDS:
            error = (h.msg or {}).get("error") or {}
            span.set_status(Status(StatusCode.ERROR, f"{error.get('type', h.kind)}: {error.get('message', '')}"))
        span.end(end_time=h.ts_ms * 1_000_000)
        return
