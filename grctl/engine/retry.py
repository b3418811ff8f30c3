"""Retry arithmetic: whether a task is retried and how long it waits; session restart back-off.

The policy itself (`RetryPolicy`, its defaults and checks) is a public model in
`grctl.models.retry`.

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

from typing import Final

from grctl.errors import InvalidArgumentError
from grctl.models.retry import RetryPolicy

__all__ = [
    "error_is_retryable",
    "retry_delay_ms",
    "session_restart_delay",
    "should_retry",
]

_NEVER_RETRIED: Final = "CancelledError"
"""``asyncio.CancelledError``: the step is being cancelled, never a reason to try again."""


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
