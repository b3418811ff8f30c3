"""Task retry arithmetic: the retry policy, whether to retry, and how long to wait.

Pure functions with no clock and no randomness of their own: the caller draws the random
number for the jitter and journals it, so a replayed step computes the same delay.

The rules are the original grctl's (BEHAVIOUR.md §1.6, §2.6):

- A policy field that is None **or 0** takes its default (the original tested them with
  ``or``): `DEFAULT_MAX_ATTEMPTS`, `DEFAULT_INITIAL_DELAY_MS`, `DEFAULT_BACKOFF_MULTIPLIER`,
  `DEFAULT_MAX_DELAY_MS`, `DEFAULT_JITTER`.
- Attempt ``n`` (1-based) failed: retry only if there is a policy, ``n < max_attempts``, the
  error is not ``CancelledError`` and the error filter allows the error's class ``__name__``.
- The delay after attempt ``n`` is ``min(initial * multiplier ** (n - 1), max_delay)``, then
  scaled by ``1 + rand * jitter``: jitter is applied after the cap, so it can exceed it.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from grctl.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_BACKOFF_MULTIPLIER",
    "DEFAULT_INITIAL_DELAY_MS",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELAY_MS",
    "RetryPolicy",
    "error_is_retryable",
    "retry_delay_ms",
    "should_retry",
]

DEFAULT_MAX_ATTEMPTS: Final = 1
"""Total attempts, the first included: without ``max_attempts`` a task is not retried."""
DEFAULT_INITIAL_DELAY_MS: Final = 100
"""Delay after the first failed attempt."""
DEFAULT_BACKOFF_MULTIPLIER: Final = 2.0
"""Each further delay is this many times the previous one."""
DEFAULT_MAX_DELAY_MS: Final = 5000
"""Cap of the delay before jitter."""
DEFAULT_JITTER: Final = 0.0
"""Fraction of the delay added at random (0: none)."""

_NEVER_RETRIED: Final = "CancelledError"
"""``asyncio.CancelledError``: the step is being cancelled, never a reason to try again."""


class RetryPolicy(msgspec.Struct, kw_only=True, omit_defaults=True):
    """How a task is retried when it raises.

    Every field is optional; None or 0 means the default (see the module docstring).

    Example:
        ```python
        @task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=1, backoff_multiplier=1.0))
        async def charge(order_id: str) -> str: ...
        ```

    Attributes:
        max_attempts: Total attempts, the first one included (default 1: no retry).
        initial_delay_ms: Delay after the first failed attempt (default 100).
        backoff_multiplier: Factor between consecutive delays (default 2.0).
        max_delay_ms: Cap of the delay before jitter is added (default 5000).
        jitter: Fraction in [0, 1]: up to ``jitter * delay`` is added at random (default 0).
        retryable_errors: Exception class ``__name__``s to retry; others are not retried.
        non_retryable_errors: Exception class ``__name__``s never retried.
    """

    max_attempts: int | None = None
    initial_delay_ms: int | None = None
    backoff_multiplier: float | None = None
    max_delay_ms: int | None = None
    jitter: float | None = None
    retryable_errors: list[str] | None = None
    non_retryable_errors: list[str] | None = None

    def __post_init__(self) -> None:
        """Validate the fields.

        Raises:
            InvalidArgumentError: (also a TypeError) If a field has the wrong type (e.g. a str for a
                number, or a single str instead of a list of error names).
            InvalidArgumentError: (also a ValueError) If a number is negative or not finite, or jitter
                is outside [0, 1].
        """
        for name in ("max_attempts", "initial_delay_ms", "max_delay_ms"):
            _check_count(name, getattr(self, name))
        for name in ("backoff_multiplier", "jitter"):
            _check_factor(name, getattr(self, name))
        if self.jitter is not None and self.jitter > 1:
            raise InvalidArgumentError(
                f"RetryPolicy.jitter must be a fraction between 0 and 1, got {self.jitter!r} "
                "(0.1 adds up to 10% to each delay)"
            )
        self.retryable_errors = _check_names("retryable_errors", self.retryable_errors)
        self.non_retryable_errors = _check_names("non_retryable_errors", self.non_retryable_errors)

    @property
    def effective_max_attempts(self) -> int:
        """``max_attempts``, or the default when None or 0."""
        return self.max_attempts or DEFAULT_MAX_ATTEMPTS

    @property
    def effective_initial_delay_ms(self) -> int:
        """``initial_delay_ms``, or the default when None or 0."""
        return self.initial_delay_ms or DEFAULT_INITIAL_DELAY_MS

    @property
    def effective_backoff_multiplier(self) -> float:
        """``backoff_multiplier``, or the default when None or 0."""
        return self.backoff_multiplier or DEFAULT_BACKOFF_MULTIPLIER

    @property
    def effective_max_delay_ms(self) -> int:
        """``max_delay_ms``, or the default when None or 0."""
        return self.max_delay_ms or DEFAULT_MAX_DELAY_MS

    @property
    def effective_jitter(self) -> float:
        """``jitter``, or the default when None (0 is the default too)."""
        return self.jitter or DEFAULT_JITTER


def _check_count(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"RetryPolicy.{name} must be an int or None, got {type(value).__name__} {value!r}")
    if value < 0:
        raise InvalidArgumentError(f"RetryPolicy.{name} must be >= 0 (0 means the default), got {value!r}")


def _check_factor(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"RetryPolicy.{name} must be a number or None, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(
            f"RetryPolicy.{name} must be a finite number >= 0 (0 means the default), got {value!r}"
        )


def _check_names(name: str, value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidArgumentError(
            f"RetryPolicy.{name} must be a list of exception class names, e.g. ['TimeoutError'], "
            f"got {type(value).__name__} {value!r}"
        )
    for item in value:
        if not isinstance(item, str):
            hint = f"; use {item.__name__!r}" if isinstance(item, type) else ""
            raise InvalidArgumentError(f"RetryPolicy.{name} must hold exception class names (str), got {item!r}{hint}")
    return list(value)


def error_is_retryable(policy: RetryPolicy, error_type_name: str) -> bool:
    """Apply the policy's error filter to an exception class name.

    | lists set | retried when |
    |---|---|
    | neither | always |
    | only ``retryable_errors`` | the name is in it |
    | only ``non_retryable_errors`` | the name is not in it |
    | both | in ``retryable_errors`` and not in ``non_retryable_errors`` |

    An empty list counts as set (``retryable_errors=[]`` retries nothing).

    Args:
        policy: The task's retry policy.
        error_type_name: ``type(exc).__name__`` of the raised exception.

    Returns:
        Whether the filter lets the error be retried (attempts are not considered).
    """
    allowed = policy.retryable_errors
    denied = policy.non_retryable_errors
    if allowed is not None and error_type_name not in allowed:
        return False
    return denied is None or error_type_name not in denied


def should_retry(policy: RetryPolicy | None, attempt: int, error_type_name: str) -> bool:
    """Decide whether a task is tried again after attempt ``attempt`` raised.

    Args:
        policy: The task's retry policy; None means the task is never retried.
        attempt: The attempt that just failed, 1-based.
        error_type_name: ``type(exc).__name__`` of the raised exception.

    Returns:
        True when there is a policy, ``attempt < max_attempts``, the error is not a
        ``CancelledError`` and the error filter (`error_is_retryable`) allows it.

    Raises:
        InvalidArgumentError: If ``attempt`` is less than 1.
    """
    if attempt < 1:
        raise InvalidArgumentError(f"attempt is 1-based, got {attempt!r}")
    if policy is None or error_type_name == _NEVER_RETRIED:
        return False
    if attempt >= policy.effective_max_attempts:
        return False
    return error_is_retryable(policy, error_type_name)


def retry_delay_ms(policy: RetryPolicy, attempt: int, rand: float) -> int:
    """Return how long to wait after failed attempt ``attempt`` before the next one.

    ``int(min(initial * multiplier ** (attempt - 1), max_delay) * (1 + rand * jitter))``. With
    the defaults: 100, 200, 400, 800, 1600, 3200, 5000, 5000, ... ms.

    Args:
        policy: The task's retry policy.
        attempt: The attempt that just failed, 1-based.
        rand: A number in [0, 1) drawn (and journaled) by the caller; it scales the jitter.

    Returns:
        The delay in milliseconds. Jitter is applied after the cap, so the result can exceed
        ``max_delay_ms`` by up to ``jitter * max_delay_ms``.

    Raises:
        InvalidArgumentError: If ``attempt`` is less than 1 or ``rand`` is outside [0, 1).
    """
    if attempt < 1:
        raise InvalidArgumentError(f"attempt is 1-based, got {attempt!r}")
    if not 0.0 <= rand < 1.0:
        raise InvalidArgumentError(f"rand must be in [0, 1), got {rand!r}; pass random.random()")
    max_delay = policy.effective_max_delay_ms
    try:
        delay = min(
            policy.effective_initial_delay_ms * policy.effective_backoff_multiplier ** (attempt - 1),
            max_delay,
        )
    except OverflowError:  # multiplier ** (attempt - 1) beyond float range: long past the cap
        delay = max_delay
    return int(delay * (1.0 + rand * policy.effective_jitter))


#: A worker's first session restart waits this long; each further failure in a row doubles it...
SESSION_RESTART_INITIAL_S: Final = 0.5
#: ...up to this;
SESSION_RESTART_MAX_S: Final = 30.0
#: and a session that ran at least this long before failing starts the count again.
SESSION_HEALTHY_S: Final = 60.0


def session_restart_delay(failures_in_row: int) -> float:
    """Seconds a worker waits before its next session, after `failures_in_row` failed ones (>= 1).

    0.5, 1, 2, 4, ... 30 s: a fault that clears at once (a transaction aborted by a rebalance)
    costs half a second; one that persists (a broker down, an engine bug on one record) is
    retried without spinning.

    Raises:
        InvalidArgumentError: If `failures_in_row` is less than 1.
    """
    if failures_in_row < 1:
        raise InvalidArgumentError(f"failures_in_row is 1-based, got {failures_in_row!r}")
    return min(SESSION_RESTART_MAX_S, SESSION_RESTART_INITIAL_S * float(2 ** min(failures_in_row - 1, 16)))
