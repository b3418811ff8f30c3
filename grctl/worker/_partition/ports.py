"""The ports of a partition processor: what it is served by, and what it serves.

A processor stages into an `Outbox` (the session's group committer), tells a
`TransitionObserver` (metrics, run spans) what it staged, and starts steps and queries through
callables of `ProcessorServices`; the step executor and the query answerer see it as a
`StepHost`. Every one of these is a Protocol or a plain value defined here, so the processor
imports nothing of the session or of the observers, and they import only this module of it.

A record Kafka refused in an earlier session (a run's record over a limit, an emit to a topic
that is gone or may not be written) comes back as a `Refusal`, kept by workflow id until the
run's next transition fails it instead.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from grctl.workflow.runtime import JournalEntry, StepPort

if TYPE_CHECKING:
    from grctl.engine.limiters import LimiterState, LimiterTransition
    from grctl.engine.machine import Machine, StepOutcome, Transition
    from grctl.engine.records import QueryCmd, ReplyTo, RunRecord
    from grctl.engine.schedules import ScheduleTransition
    from grctl.kafka.limits import RecordLimits
    from grctl.kafka.topics import TopicNames
    from grctl.workflow.runtime import StepRuntime

__all__ = [
    "Outbox",
    "ProcessorServices",
    "Refusal",
    "RunningStep",
    "StepHost",
    "TransitionObserver",
    "now_ms",
]


def now_ms() -> int:
    """Wall-clock milliseconds (only the engine reads the clock; runs read it through the journal)."""
    return int(time.time() * 1000)


class Outbox(Protocol):
    """What a partition processor may do with the open batch (the session's group committer)."""

    def stage(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write a state key (None deletes) in the open batch."""
        ...

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]] | None = None,
        origin: str | None = None,
    ) -> None:
        """Add a record to the open batch (`origin`: the workflow id whose transition made it)."""
        ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the open batch has committed."""
        ...

    def offsets_moved(self) -> None:
        """The processor's consumer position moved: commit it with the next batch, or soon."""
        ...

    @property
    def full(self) -> bool:
        """The open batch holds more than its bound: inputs and pipelined steps wait for a commit."""
        ...


class TransitionObserver(Protocol):
    """What a partition processor tells about what it stages (metrics, run spans)."""

    def transition_staged(self, tr: Transition) -> None:
        """A transition was staged in the open batch."""
        ...

    def dead_lettered(self, partition: int) -> None:
        """An input record of `partition` went to dead-letter."""
        ...

    def schedule_staged(self, tr: ScheduleTransition) -> None:
        """A schedule's transition was staged (ticks fired, skipped, buffered, missed)."""
        ...

    def limiter_staged(self, name: str, tr: LimiterTransition, state: LimiterState | None) -> None:
        """A limiter's transition was staged (grants, releases, refusals; its state after it)."""
        ...


#: What Kafka's refusal of a run's record fails the run with, by librdkafka's error name.
_REFUSED_TOPIC = ("TOPIC_AUTHORIZATION_FAILED", "UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_ID")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a run's next transition cannot be published: its run fails instead.

    Attributes:
        code: librdkafka's error name ("MSG_SIZE_TOO_LARGE", "TOPIC_AUTHORIZATION_FAILED", ...),
            or "too_large" when the processor found a record over its topic's limit itself.
        topic: the topic of the record.
        message: what happened, for the run's error.
    """

    code: str
    topic: str
    message: str

    @property
    def error_type(self) -> str:
        """The error the run fails with: the topic is gone or may not be written, or a record is too large."""
        return "EmitRefusedError" if self.code in _REFUSED_TOPIC else "PayloadTooLargeError"


@dataclass(eq=False)
class RunningStep:
    """A step executing in this worker."""

    wf_id: str
    run_id: str
    seq: int
    task: asyncio.Task[None] | None = None
    runtime: StepRuntime | None = None
    cancelled: bool = False
    timed_out: bool = False  # the executor cancelled the task at its step deadline
    deadline_slot: int = 0


class StepHost(StepPort, Protocol):
    """The partition a step or a query runs for, as the step executor and the query answerer see it.

    Besides the `StepPort` a step's runtime talks to: the reads a step and a query make, the
    outcome a step reports, and the answer a query sends.
    """

    partition: int

    @property
    def value_limit(self) -> int:
        """The largest value (store value, payload, answer) the namespace's topics take."""
        ...

    def read_store(self, wf_id: str, run_id: str, key: str) -> bytes | None:
        """A store value of a run, with the writes staged and not committed yet (what a step sees)."""
        ...

    def read_committed_store(self, wf_id: str, run_id: str, key: str) -> bytes | None:
        """A committed store value of a run (what a query sees)."""
        ...

    def get_committed_run(self, wf_id: str) -> RunRecord | None:
        """The committed run record of `wf_id`."""
        ...

    def load_journal(self, wf_id: str, run_id: str, seq: int) -> list[JournalEntry]:
        """The journal entries recorded by earlier executions of a step."""
        ...

    def step_finished(self, rs: RunningStep, outcome: StepOutcome) -> None:
        """A step's task ended with `outcome` (applied through the state machine)."""
        ...

    def send_reply(self, to: ReplyTo, value: bytes, wf_id: str) -> None:
        """Produce an encoded reply to a client's partition of `replies` in the open batch."""
        ...


@dataclass(frozen=True, slots=True)
class ProcessorServices:
    """What every processor of a session shares: the outbox and the session's other parts.

    Attributes:
        outbox: the open batch (the group committer).
        machine: the state machine.
        topics: the namespace's topics.
        num_partitions: their partition count.
        worker_id: written into history events.
        start_step: executes a step in a task of its own (None if it finished at once).
        answer_query: answers a query from committed state in a task of its own.
        timer_armed: a timer due at the given ms was armed (wakes the timer loop).
        limits: the record and value size limits of the namespace.
        quarantine: workflow ids whose next transition must fail the run instead (a record of
            theirs was refused by Kafka in an earlier session), with the refusal; shared with
            the worker, which fills it.
        observer: sees every staged transition and dead letter (metrics, run spans; None: nobody).
        pipeline_steps: start a dispatched step at once, on the uncommitted state, before the
            transaction of its dispatch commits (False: once it committed).
        now_ms: the wall clock of transitions, timers and history (`grctl.testing`'s
            environment passes one it moves).
        local: the limiter traffic between partitions this worker owns, applied in the open batch
            instead of produced (None: every such record goes through Kafka).
    """

    outbox: Outbox
    machine: Machine
    topics: TopicNames
    num_partitions: int
    worker_id: str
    start_step: Callable[[StepHost, RunningStep, RunRecord], asyncio.Task[None] | None]
    answer_query: Callable[[StepHost, QueryCmd], None]
    timer_armed: Callable[[int], None]
    limits: RecordLimits
    quarantine: dict[str, Refusal]
    observer: TransitionObserver | None = None
    pipeline_steps: bool = True
    now_ms: Callable[[], int] = now_ms
    local: LocalInputs | None = None


class LocalInputs:
    """Limiter requests, releases and grants for partitions this worker owns, applied in the open batch.

    A run's request for a permit, its release, and a limiter's grant are directives for another
    partition. When this worker owns that partition too, the record would only go out to Kafka and
    come back to this worker; instead it is applied to that partition's processor in the same open
    batch, so it commits in the same transaction as the transition that sent it (the record's
    effect and its cause together, as a produced record and its consumption would commit, minus
    two round trips). A partition that is closing is not owned any more: records for it are produced.
    Applications run one after another from a queue (a release may grant, a grant may release):
    no recursion, whatever the chain.

    Args:
        lookup: the processor of a partition this worker owns (None: not owned).
    """

    def __init__(self, lookup: Callable[[int], LocalTarget | None]) -> None:
        self._lookup = lookup
        self._queue: collections.deque[tuple[LocalTarget, Any]] = collections.deque()
        self._draining = False
        self.applied = 0

    def target(self, partition: int) -> LocalTarget | None:
        """The owned, open processor of `partition` (None: produce the record)."""
        proc = self._lookup(partition)
        return proc if proc is not None and not proc.closing else None

    def put(self, target: LocalTarget, cmd: Any) -> None:
        """Queue `cmd` for `target` (applied by `drain`)."""
        self._queue.append((target, cmd))

    def drain(self) -> None:
        """Apply the queued records in order, including those their applications queue."""
        if self._draining:
            return  # the outer call goes on with what was queued
        self._draining = True
        try:
            while self._queue:
                target, cmd = self._queue.popleft()
                target.apply_local(cmd)
                self.applied += 1
        finally:
            self._draining = False


class LocalTarget(Protocol):
    """A partition processor as `LocalInputs` sees it."""

    closing: bool

    def apply_local(self, cmd: Any) -> None:
        """Apply a limiter request, release or grant addressed to this partition."""
        ...
