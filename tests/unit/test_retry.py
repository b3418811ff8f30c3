"""Unit tests for grctl.engine.retry (BEHAVIOUR.md §1.6 RetryPolicy, §2.6 task retries)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from grctl.engine.retry import error_is_retryable, retry_delay_ms, should_retry
from grctl.models.retry import (
    DEFAULT_BACKOFF_MULTIPLIER,
    DEFAULT_INITIAL_DELAY_MS,
    DEFAULT_JITTER,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELAY_MS,
    RetryPolicy,
)

# -- the policy struct ---------------------------------------------------------------------------


def test_defaults_table() -> None:
    assert (DEFAULT_MAX_ATTEMPTS, DEFAULT_INITIAL_DELAY_MS, DEFAULT_BACKOFF_MULTIPLIER) == (1, 100, 2.0)
    assert (DEFAULT_MAX_DELAY_MS, DEFAULT_JITTER) == (5000, 0.0)


def test_every_field_defaults_to_none() -> None:
    policy = RetryPolicy()
    assert msgspec.structs.asdict(policy) == {
        "max_attempts": None,
        "initial_delay_ms": None,
        "backoff_multiplier": None,
        "max_delay_ms": None,
        "jitter": None,
        "retryable_errors": None,
        "non_retryable_errors": None,
    }


@pytest.mark.parametrize("unset", [None, 0], ids=["none", "zero"])
def test_effective_values_default_when_none_or_zero(unset: Any) -> None:
    policy = RetryPolicy(
        max_attempts=unset, initial_delay_ms=unset, backoff_multiplier=unset, max_delay_ms=unset, jitter=unset
    )
    assert policy.effective_max_attempts == 1
    assert policy.effective_initial_delay_ms == 100
    assert policy.effective_backoff_multiplier == 2.0
    assert policy.effective_max_delay_ms == 5000
    assert policy.effective_jitter == 0.0


def test_effective_values_use_the_fields() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay_ms=1, backoff_multiplier=1.0, max_delay_ms=10, jitter=0.5)
    assert policy.effective_max_attempts == 3
    assert policy.effective_initial_delay_ms == 1
    assert policy.effective_backoff_multiplier == 1.0
    assert policy.effective_max_delay_ms == 10
    assert policy.effective_jitter == 0.5


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[misc]


def test_wire_form_omits_defaults_and_round_trips() -> None:
    policy = RetryPolicy(
        max_attempts=3, initial_delay_ms=1, backoff_multiplier=1.0, non_retryable_errors=["ValueError"]
    )
    data = msgspec.msgpack.encode(policy)
    assert msgspec.msgpack.decode(data) == {
        "max_attempts": 3,
        "initial_delay_ms": 1,
        "backoff_multiplier": 1.0,
        "non_retryable_errors": ["ValueError"],
    }
    assert msgspec.msgpack.decode(data, type=RetryPolicy) == policy
    assert msgspec.msgpack.encode(RetryPolicy()) == msgspec.msgpack.encode({})


def test_tuple_of_names_is_stored_as_list() -> None:
    assert RetryPolicy(retryable_errors=("TimeoutError",)).retryable_errors == ["TimeoutError"]  # type: ignore[arg-type]


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "shown"),
    [
        ({"max_attempts": -1}, "max_attempts", "-1"),
        ({"initial_delay_ms": -5}, "initial_delay_ms", "-5"),
        ({"max_delay_ms": -100}, "max_delay_ms", "-100"),
        ({"backoff_multiplier": -2.0}, "backoff_multiplier", "-2.0"),
        ({"backoff_multiplier": math.inf}, "backoff_multiplier", "inf"),
        ({"backoff_multiplier": math.nan}, "backoff_multiplier", "nan"),
        ({"jitter": -0.1}, "jitter", "-0.1"),
        ({"jitter": 1.5}, "jitter", "1.5"),
        ({"jitter": math.nan}, "jitter", "nan"),
    ],
)
def test_invalid_numbers_raise_value_error(kwargs: dict[str, Any], field: str, shown: str) -> None:
    with pytest.raises(ValueError, match=rf"RetryPolicy\.{field} .*got {shown}"):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": "3"}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"initial_delay_ms": 1.5}, "initial_delay_ms"),
        ({"jitter": "0.1"}, "jitter"),
        ({"retryable_errors": "ValueError"}, "retryable_errors"),
        ({"non_retryable_errors": [ValueError]}, "non_retryable_errors"),
        ({"retryable_errors": {"TimeoutError": 1}}, "retryable_errors"),
    ],
)
def test_wrong_types_raise_type_error(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(TypeError, match=rf"RetryPolicy\.{field}"):
        RetryPolicy(**kwargs)


def test_exception_class_instead_of_name_suggests_the_name() -> None:
    with pytest.raises(TypeError, match="use 'ValueError'"):
        RetryPolicy(non_retryable_errors=[ValueError])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"jitter": 0.0},
        {"jitter": 1.0},
        {"jitter": 1},
        {"backoff_multiplier": 0.5},
        {"backoff_multiplier": 1},
        {"retryable_errors": []},
    ],
)
def test_valid_edge_values(kwargs: dict[str, Any]) -> None:
    policy = RetryPolicy(**kwargs)
    assert {name: getattr(policy, name) for name in kwargs} == kwargs  # accepted as given, not adjusted


def test_validation_applies_when_decoding() -> None:
    with pytest.raises(msgspec.ValidationError, match="jitter"):
        msgspec.msgpack.decode(msgspec.msgpack.encode({"jitter": 2.0}), type=RetryPolicy)


# -- delay sequence ------------------------------------------------------------------------------


def test_default_delay_sequence() -> None:
    policy = RetryPolicy()
    assert [retry_delay_ms(policy, n, 0.0) for n in range(1, 11)] == [
        100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(max_attempts=3, initial_delay_ms=1, backoff_multiplier=1.0), [1, 1, 1, 1]),
        (RetryPolicy(initial_delay_ms=10, backoff_multiplier=3.0, max_delay_ms=200), [10, 30, 90, 200]),
        (RetryPolicy(initial_delay_ms=1000, backoff_multiplier=0.5), [1000, 500, 250, 125]),
        (RetryPolicy(initial_delay_ms=0, backoff_multiplier=0, max_delay_ms=0), [100, 200, 400, 800]),
        (RetryPolicy(initial_delay_ms=9000), [5000, 5000, 5000, 5000]),
        (RetryPolicy(initial_delay_ms=150, backoff_multiplier=1.5), [150, 225, 337, 506]),
    ],
)
def test_delay_sequences(policy: RetryPolicy, expected: list[int]) -> None:
    assert [retry_delay_ms(policy, n, 0.0) for n in range(1, len(expected) + 1)] == expected


def test_huge_attempt_number_is_capped() -> None:
    assert retry_delay_ms(RetryPolicy(), 100_000, 0.0) == 5000
    assert retry_delay_ms(RetryPolicy(backoff_multiplier=10.0, jitter=0.5), 10_000, 0.5) == 6250


def test_jitter_bounds() -> None:
    policy = RetryPolicy(initial_delay_ms=1000, jitter=0.2)
    assert retry_delay_ms(policy, 1, 0.0) == 1000
    assert retry_delay_ms(policy, 1, 0.5) == 1100
    # rand < 1, but float rounding of 1 + rand * jitter may reach the bound: delay * (1 + jitter)
    # is inclusive, as with the original's random.uniform(0, jitter).
    assert retry_delay_ms(policy, 1, math.nextafter(1.0, 0.0)) <= 1200
    assert retry_delay_ms(policy, 1, 0.99) == 1198
    for i in range(100):
        assert 1000 <= retry_delay_ms(policy, 1, i / 100) <= 1200


def test_jitter_is_applied_after_the_cap() -> None:
    policy = RetryPolicy(jitter=0.5)
    assert retry_delay_ms(policy, 10, 0.0) == 5000
    assert retry_delay_ms(policy, 10, 0.5) == 6250  # above max_delay_ms
    assert retry_delay_ms(policy, 10, 0.999) == 7497


def test_no_jitter_ignores_rand() -> None:
    policy = RetryPolicy()
    assert {retry_delay_ms(policy, 2, r) for r in (0.0, 0.3, 0.99)} == {200}


def test_delay_is_an_int() -> None:
    assert type(retry_delay_ms(RetryPolicy(initial_delay_ms=3, backoff_multiplier=1.5, jitter=0.3), 3, 0.7)) is int


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.0), (-1, 0.0), (1, -0.1), (1, 1.0), (1, math.nan)])
def test_delay_argument_errors(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError, match=r"attempt|rand"):
        retry_delay_ms(RetryPolicy(), attempt, rand)


# -- should_retry --------------------------------------------------------------------------------


def test_no_policy_never_retries() -> None:
    assert not should_retry(None, 1, "RuntimeError")


@pytest.mark.parametrize(
    ("max_attempts", "attempt", "expected"),
    [
        (None, 1, False),  # default: one attempt
        (0, 1, False),  # 0 means the default
        (1, 1, False),
        (2, 1, True),
        (2, 2, False),
        (3, 1, True),
        (3, 2, True),
        (3, 3, False),  # TASK-4: attempts 1 and 2 retried, 3 fails
        (3, 4, False),  # continued count after redelivery, already past the limit
    ],
)
def test_attempt_limit(max_attempts: int | None, attempt: int, expected: bool) -> None:
    assert should_retry(RetryPolicy(max_attempts=max_attempts), attempt, "RuntimeError") is expected


def test_cancelled_error_is_never_retried() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert not should_retry(policy, 1, "CancelledError")
    assert not should_retry(RetryPolicy(max_attempts=3, retryable_errors=["CancelledError"]), 1, "CancelledError")


def test_should_retry_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="1-based"):
        should_retry(RetryPolicy(max_attempts=3), 0, "RuntimeError")


FILTER_ROWS: list[tuple[str, list[str] | None, list[str] | None, str, bool]] = [
    # (row, retryable_errors, non_retryable_errors, raised, retried)
    ("neither", None, None, "RuntimeError", True),
    ("neither-any-name", None, None, "ValueError", True),
    ("only-retryable-listed", ["TimeoutError"], None, "TimeoutError", True),  # TASK-20
    ("only-retryable-unlisted", ["TimeoutError"], None, "ValueError", False),  # TASK-20
    ("only-retryable-empty", [], None, "TimeoutError", False),
    ("only-non-retryable-listed", None, ["ValueError"], "ValueError", False),  # TASK-5, TASK-19
    ("only-non-retryable-unlisted", None, ["ValueError"], "RuntimeError", True),
    ("only-non-retryable-empty", None, [], "ValueError", True),
    ("both-allowed", ["TimeoutError", "OSError"], ["ValueError"], "TimeoutError", True),
    ("both-not-in-retryable", ["TimeoutError"], ["ValueError"], "RuntimeError", False),
    ("both-in-both", ["ValueError"], ["ValueError"], "ValueError", False),
    ("both-only-denied", ["TimeoutError"], ["ValueError"], "ValueError", False),
    ("exact-name-not-substring", ["TimeoutError"], None, "Timeout", False),
    ("subclass-not-matched", ["OSError"], None, "ConnectionError", False),  # names only, no MRO
]


@pytest.mark.parametrize(
    ("retryable", "non_retryable", "raised", "retried"),
    [row[1:] for row in FILTER_ROWS],
    ids=[row[0] for row in FILTER_ROWS],
)
def test_error_filter(retryable: list[str] | None, non_retryable: list[str] | None, raised: str, retried: bool) -> None:
    policy = RetryPolicy(max_attempts=3, retryable_errors=retryable, non_retryable_errors=non_retryable)
    assert error_is_retryable(policy, raised) is retried
    assert should_retry(policy, 1, raised) is retried
    assert should_retry(policy, 3, raised) is False  # the attempt limit applies whatever the filter
