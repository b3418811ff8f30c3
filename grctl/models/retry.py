"""`RetryPolicy`: how a task is retried when it raises (a public model of the original SDK).

Defaults and checks here; the arithmetic (whether to retry, how long to wait) is
`grctl.engine.retry`. A field that is None **or 0** takes its default, as in the original
(BEHAVIOUR.md §1.6).
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
