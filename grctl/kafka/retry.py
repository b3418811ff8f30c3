"""Retrying a Kafka call while a partition has no leader yet: exponential back-off with a deadline.

Right after a topic is created (or while a leader moves), the brokers answer some requests with
NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PART for a moment, and
librdkafka does not flag those errors retriable. `retry_while_leaderless` calls again, after
pauses that double from `Backoff.initial_s` up to `Backoff.max_s`, until the call succeeds, an
error that is not of that kind comes, or the deadline passes (the last error is then raised).

`Backoff` is pure (the schedule alone), so its arithmetic is unit-tested without a broker.

May import: `grctl.errors`, confluent-kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, TypeVar

from confluent_kafka import KafkaError, KafkaException

from grctl.errors import InvalidArgumentError

__all__ = [
    "LEADERLESS",
    "LEADER_BACKOFF",
    "Backoff",
    "is_leaderless",
    "is_transient",
    "retry_while_leaderless",
]

T = TypeVar("T")

#: What brokers answer for a partition without a (known) leader: a topic created a moment ago, a
#: leader moving, metadata that has not reached the broker asked.
LEADERLESS: Final = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,  # also NOT_LEADER_OR_FOLLOWER: the same code, 6
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        # librdkafka's own answer to a list_offsets whose partitions it knows no leader of yet
        # ("Failed to query partition leaders: No leaders found").
        KafkaError._NOENT,
    }
)

#: Refusals no retry fixes (authorization, authentication): `is_transient` is False for them.
_PERMANENT: Final = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)


@dataclass(frozen=True, slots=True)
class Backoff:
    """An exponential back-off schedule: `initial_s`, then times `factor`, at most `max_s`.

    Attributes:
        initial_s: the first pause, in seconds.
        max_s: the longest pause.
        factor: each pause is the previous one times this.

    Raises:
        InvalidArgumentError: a pause that is not positive, `max_s` below `initial_s`, or a
            factor below 1.
    """

    initial_s: float
    max_s: float
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise InvalidArgumentError(f"initial_s must be > 0, got {self.initial_s!r}", argument="initial_s")
        if not self.max_s >= self.initial_s:
            raise InvalidArgumentError(
                f"max_s must be >= initial_s ({self.initial_s!r}), got {self.max_s!r}", argument="max_s"
            )
        if not self.factor >= 1:
            raise InvalidArgumentError(f"factor must be >= 1, got {self.factor!r}", argument="factor")

    def after(self, delay: float) -> float:
        """The pause that follows a pause of `delay` seconds."""
        return min(delay * self.factor, self.max_s)

    def delays(self) -> Iterator[float]:
        """The pauses, in order, without end."""
        delay = self.initial_s
        while True:
            yield delay
            delay = self.after(delay)


#: While a partition has no leader: 50 ms, 100 ms, ... up to 1 s (a new topic gets its leaders
#: within a few hundred ms on a local broker; a moving leader within the broker's election time).
LEADER_BACKOFF: Final = Backoff(initial_s=0.05, max_s=1.0)


def _error_of(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_leaderless(exc: BaseException) -> bool:
    """Whether `exc` is a `KafkaException` saying a partition has no (known) leader yet (`LEADERLESS`)."""
    err = _error_of(exc)
    return err is not None and err.code() in LEADERLESS


def is_transient(exc: BaseException) -> bool:
    """Whether another try may succeed: any `KafkaException` but a fatal error or a refusal (ACLs, credentials)."""
    if not isinstance(exc, KafkaException):
        return False
    err = _error_of(exc)
    return err is None or not (err.fatal() or err.code() in _PERMANENT)


def retry_while_leaderless(
    call: Callable[[], T],
    *,
    timeout: float,
    retry_on: Callable[[BaseException], bool] = is_leaderless,
    backoff: Backoff = LEADER_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Call `call` until it returns, pausing by `backoff` while it raises what `retry_on` accepts.

    Blocking: call it from a thread, never from the event loop.

    Args:
        call: the Kafka call (no arguments; use a lambda or `functools.partial`).
        timeout: seconds after the first call when no further pause begins; the call is made a
            last time at the deadline, and its error is raised if it fails again.
        retry_on: which exceptions are retried (default `is_leaderless`; `is_transient` retries
            every error but refusals and fatal ones).
        backoff: the pauses between calls.
        clock: monotonic seconds (tests pass their own).
        sleep: how to pause (tests pass their own).

    Returns:
        What `call` returned.

    Raises:
        Exception: what `call` raised last: an error `retry_on` rejects, or any error once the
            deadline passed.
    """
    deadline = clock() + timeout
    for delay in backoff.delays():
        try:
            return call()
        except Exception as exc:
            if not retry_on(exc):
                raise
            remaining = deadline - clock()
            if remaining <= 0:
                raise
        sleep(min(delay, remaining))
    raise AssertionError("unreachable: Backoff.delays() has no end")  # pragma: no cover
