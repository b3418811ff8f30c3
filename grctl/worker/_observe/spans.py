"""Run spans (`grctl.tracing`), and the observer a session's processors get: metrics, spans, both or none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grctl import tracing

if TYPE_CHECKING:
    from grctl.engine.limiters import LimiterState, LimiterTransition
    from grctl.engine.machine import Transition
    from grctl.engine.schedules import ScheduleTransition
    from grctl.worker._observe.metrics import WorkerMetrics
    from grctl.worker._partition.ports import TransitionObserver

__all__ = ["RunSpans", "observer_for"]


class RunSpans:
    """Emits the `grctl.run` span of each run that ends (`grctl.tracing`)."""

    def transition_staged(self, tr: Transition) -> None:
        """Emit the run span if `tr` ends its run."""
        run = tr.run
        if run is not None and run.ended_ms:
            tracing.run_ended(run.traceparent, run.wf_type, run.wf_id, run.run_id, run.started_ms, tr.history)

    def dead_lettered(self, partition: int) -> None:
        """Nothing to trace."""

    def schedule_staged(self, tr: ScheduleTransition) -> None:
        """Nothing to trace (the runs a schedule starts are traced as runs)."""

    def limiter_staged(self, name: str, tr: LimiterTransition, state: LimiterState | None) -> None:
        """Nothing to trace (a permit's wait shows in its run's history)."""


class _Observers:
    def __init__(self, *observers: TransitionObserver) -> None:
        self._observers = observers

    def transition_staged(self, tr: Transition) -> None:
        for o in self._observers:
            o.transition_staged(tr)

    def dead_lettered(self, partition: int) -> None:
        for o in self._observers:
            o.dead_lettered(partition)

    def schedule_staged(self, tr: ScheduleTransition) -> None:
        for o in self._observers:
            o.schedule_staged(tr)

    def limiter_staged(self, name: str, tr: LimiterTransition, state: LimiterState | None) -> None:
        for o in self._observers:
            o.limiter_staged(name, tr, state)


def observer_for(metrics: WorkerMetrics | None) -> TransitionObserver | None:
    """The processors' observer of a new session: metrics, run spans (tracing on), both or none."""
    spans = RunSpans() if tracing.enabled() else None
    if metrics is not None and spans is not None:
        return _Observers(metrics, spans)
    return metrics if metrics is not None else spans
