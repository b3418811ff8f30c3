"""The back-off schedule and the retry while a partition has no leader (`grctl.kafka.retry`), without a broker.

A clock the test advances stands in for time, so the pauses and the deadline are checked
exactly; the errors are librdkafka's own `KafkaError` values.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from grctl.errors import InvalidArgumentError
from grctl.kafka.retry import LEADER_BACKOFF, Backoff, is_leaderless, is_transient, retry_while_leaderless


def kafka_error(code: int, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "from the test", fatal=fatal))


class Clock:
    """Monotonic seconds that move only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def failing(errors: list[BaseException], result: str = "done") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return calls, call


def test_the_pauses_double_up_to_the_maximum() -> None:
    delays = Backoff(initial_s=0.05, max_s=1.0).delays()
    assert [round(next(delays), 3) for _ in range(8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert Backoff(initial_s=1.0, max_s=10.0, factor=3.0).after(3.0) == 9.0
    assert Backoff(initial_s=1.0, max_s=10.0, factor=3.0).after(9.0) == 10.0


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"initial_s": 0.0, "max_s": 1.0}, "initial_s"),
        ({"initial_s": 2.0, "max_s": 1.0}, "max_s"),
        ({"initial_s": 0.1, "max_s": 1.0, "factor": 0.5}, "factor"),
    ],
)
def test_a_schedule_that_cannot_work_is_refused(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        Backoff(**kwargs)


def test_leaderless_answers_are_retried_with_the_backoff_until_the_call_succeeds() -> None:
    clock = Clock()
    errors: list[BaseException] = [
        kafka_error(KafkaError.UNKNOWN_TOPIC_OR_PART),
        kafka_error(KafkaError.LEADER_NOT_AVAILABLE),
        kafka_error(KafkaError.NOT_LEADER_FOR_PARTITION),
    ]
    calls, call = failing(errors)
    assert retry_while_leaderless(call, timeout=10.0, clock=clock, sleep=clock.sleep) == "done"
    assert len(calls) == 4
    assert clock.pauses == [0.05, 0.1, 0.2]


def test_the_last_try_is_at_the_deadline_and_its_error_is_raised() -> None:
    clock = Clock()
    errors: list[BaseException] = [kafka_error(KafkaError.LEADER_NOT_AVAILABLE) for _ in range(100)]
    calls, call = failing(errors)
    with pytest.raises(KafkaException) as info:
        retry_while_leaderless(
            call,
            timeout=1.0,
            backoff=Backoff(initial_s=0.3, max_s=0.3),
            clock=clock,
            sleep=clock.sleep,
        )
    assert info.value.args[0].code() == KafkaError.LEADER_NOT_AVAILABLE
    # 0.3 + 0.3 + 0.3, then the 0.1 s left: no pause ends past the deadline, one last call at it.
    assert [round(p, 3) for p in clock.pauses] == [0.3, 0.3, 0.3, 0.1]
    assert len(calls) == 5 and clock.now == pytest.approx(1.0)


def test_other_errors_are_raised_at_once() -> None:
    clock = Clock()
    calls, call = failing([kafka_error(KafkaError.TOPIC_AUTHORIZATION_FAILED)])
    with pytest.raises(KafkaException):
        retry_while_leaderless(call, timeout=10.0, clock=clock, sleep=clock.sleep)
    assert len(calls) == 1 and clock.pauses == []
    calls, call = failing([ValueError("not Kafka")])
    with pytest.raises(ValueError, match="not Kafka"):
        retry_while_leaderless(call, timeout=10.0, clock=clock, sleep=clock.sleep)
    assert len(calls) == 1


def test_transient_retries_what_may_pass_and_never_a_refusal() -> None:
    assert is_transient(kafka_error(KafkaError._TIMED_OUT))
    assert is_transient(kafka_error(KafkaError._TRANSPORT))
    assert is_transient(kafka_error(KafkaError.UNKNOWN_TOPIC_OR_PART))
    assert not is_transient(kafka_error(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert not is_transient(kafka_error(KafkaError.SASL_AUTHENTICATION_FAILED))
    assert not is_transient(kafka_error(KafkaError._TIMED_OUT, fatal=True))
    assert not is_transient(TimeoutError("not Kafka"))
    clock = Clock()
    calls, call = failing([kafka_error(KafkaError._TIMED_OUT), kafka_error(KafkaError._TRANSPORT)])
    assert retry_while_leaderless(call, timeout=5.0, retry_on=is_transient, clock=clock, sleep=clock.sleep) == "done"
    assert len(calls) == 3


def test_leaderless_means_the_leader_or_the_metadata_is_missing() -> None:
    for code in (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
    ):
        assert is_leaderless(kafka_error(code)), code
    assert not is_leaderless(kafka_error(KafkaError._TIMED_OUT))
    assert not is_leaderless(KafkaException("no KafkaError inside"))
    assert LEADER_BACKOFF.initial_s < LEADER_BACKOFF.max_s
