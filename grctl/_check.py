"""Argument checks shared by the public calls (client, workflow definitions, step context).

Each raises `InvalidArgumentError` naming the parameter and the value it got.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from grctl.errors import InvalidArgumentError


def non_empty_str(value: Any, name: str) -> str:
    """`value`, which must be a non-empty string (the parameter is called `name`)."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}", argument=name)
    return value


def positive_ms(value: Any, name: str) -> int | None:
    """A positive `timedelta` (or None) as whole milliseconds, at least 1 (None stays None)."""
    if value is None:
        return None
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise InvalidArgumentError(f"{name} must be a positive timedelta, got {value!r}", argument=name)
    return max(1, int(value.total_seconds() * 1000))
