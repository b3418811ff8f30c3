"""Limiters: durable concurrency and rate limits of a namespace (docs/tutorials/flow-control.md).

A model rather than an engine record because both a workflow module (`Limiter`, declared next to
its workflows) and the engine (the limiter's record) read it, and the authoring package may import
models, not the engine.

A limiter is kept by the partition that owns its name (`murmur2(name) % P`); a step asks it for a
permit with `async with ctx.limit(name, ...)`, waits durably while none is free, and gives it back
in the transaction that ends the limited section, its step or its run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from grctl.errors import InvalidArgumentError

__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_WEIGHT",
    "HeldPermit",
    "Limit",
    "LimitSpec",
    "Limiter",
    "PendingAcquire",
    "check_priority",
    "parse_rate",
]

#: Priorities run from 1 (first served) to 5 (last), as Temporal's task queue priorities; a run
#: without one has 3, and its children inherit its own.
MIN_PRIORITY: Final = 1
MAX_PRIORITY: Final = 5
DEFAULT_PRIORITY: Final = 3
#: The largest weight of a fairness key (weights are whole numbers, 1 by default).
MAX_WEIGHT: Final = 1000
#: The longest limiter name (it is a record key and a metrics label).
MAX_NAME_CHARS: Final = 200
#: Fairness keys with a weight of their own, at most (the spec is part of the limiter's record).
MAX_WEIGHTS: Final = 100
#: The longest fairness key with a weight of its own.
MAX_KEY_CHARS: Final = 100

_PERIODS_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(ms|s|m|min|h|d)\s*$")


def parse_rate(rate: str) -> tuple[int, int]:
    """A rate such as "50/s", "600/min" or "5/10s" as (permits, period in ms).

    Raises:
        InvalidArgumentError: not of the form `<n>/<period>` with n ≥ 1 and a period of ms, s,
            m (or min), h or d, optionally with a count ("5/10s").
    """
    m = _RATE.match(rate) if isinstance(rate, str) else None
    if m is None:
        raise InvalidArgumentError(
            f"rate must look like '50/s', '600/min' or '5/10s' (permits per period: ms, s, m, h, d), got {rate!r}",
            argument="rate",
        )
    n, count, unit = int(m.group(1)), int(m.group(2) or 1), m.group(3)
    if not 1 <= n <= MAX_LIMIT or not 1 <= count <= MAX_LIMIT:
        raise InvalidArgumentError(
            f"rate must grant at least 1 permit per period and at most {MAX_LIMIT:,} permits per period "
            f"(of 1 to {MAX_LIMIT:,} units), got {rate!r}",
            argument="rate",
        )
    return n, count * _PERIODS_MS[unit]


def format_rate(n: int, period_ms: int) -> str:
    """The inverse of `parse_rate`, in the largest unit that divides the period."""
    for unit, ms in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if period_ms % ms == 0:
            count = period_ms // ms
            return f"{n}/{'' if count == 1 else count}{unit}"
    return f"{n}/{period_ms}ms"


def check_priority(priority: Any, name: str = "priority") -> int:
    """`priority` if it is a whole number from 1 to 5."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidArgumentError(
            f"{name} must be a whole number from {MIN_PRIORITY} (first) to {MAX_PRIORITY} (last), got {priority!r}",
            argument=name,
        )
    return priority


def check_name(name: Any) -> str:
    """A limiter name: a non-empty string of at most `MAX_NAME_CHARS` without NUL."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS or "\x00" in name:
        raise InvalidArgumentError(
            f"a limiter name must be a non-empty string of at most {MAX_NAME_CHARS} characters, got {name!r}",
            argument="name",
        )
    return name


#: The largest limit a limiter takes (a permit count, a rate's permits, a bucket).
MAX_LIMIT: Final = 1_000_000_000


def _positive(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidArgumentError(f"{what} must be a whole number from 1 to {MAX_LIMIT:,} (or None), got {value!r}")
    return value


@dataclass(frozen=True)
class Limit:
    """The limit every key of a limiter has on its own (`Limiter(..., per_key=Limit(concurrency=2))`).

    Args:
        concurrency: permits one key may hold at once.
    """

    concurrency: int

    def __post_init__(self) -> None:
        _positive(self.concurrency, "per_key concurrency")


class LimitSpec(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """What a limiter allows (the wire form of `Limiter`, and of `grctl limiter set`).

    Fields left None are not limited; at least one of `concurrency`, `rate_n` and `per_key` is set.
    """

    concurrency: int | None = None
    rate_n: int | None = None
    rate_period_ms: int | None = None
    burst: int | None = None
    per_key: int | None = None
    #: Weights of fairness keys (1 when not named): a key of weight 3 gets 3 grants to another's 1.
    weights: dict[str, int] = {}

    def check(self) -> LimitSpec:
        """This spec, if it is valid.

        Raises:
            InvalidArgumentError: a limit ≤ 0, a rate without its period, a weight out of range, or
                no limit at all.
        """
        _positive(self.concurrency, "concurrency")
        _positive(self.rate_n, "rate")
        _positive(self.burst, "burst")
        _positive(self.per_key, "per_key concurrency")
        if (self.rate_n is None) != (self.rate_period_ms is None) or (
            self.rate_period_ms is not None and self.rate_period_ms < 1
        ):
            raise InvalidArgumentError("a rate needs both its permits and its period (use parse_rate)")
        if self.burst is not None and self.rate_n is None:
            raise InvalidArgumentError("burst sizes a rate's bucket: set a rate too")
        if self.concurrency is None and self.rate_n is None and self.per_key is None:
            raise InvalidArgumentError("a limiter needs a concurrency, a rate or a per-key limit")
        if len(self.weights) > MAX_WEIGHTS:
            raise InvalidArgumentError(f"at most {MAX_WEIGHTS} fairness keys may have a weight of their own")
        for key, weight in self.weights.items():
            if isinstance(key, str) and len(key) > MAX_KEY_CHARS:
                raise InvalidArgumentError(f"a fairness key has at most {MAX_KEY_CHARS} characters, got {key!r}")
            if not isinstance(key, str) or isinstance(weight, bool) or not isinstance(weight, int):
                raise InvalidArgumentError(f"weights map fairness keys (str) to whole numbers, got {key!r}: {weight!r}")
            if not 1 <= weight <= MAX_WEIGHT:
                raise InvalidArgumentError(
                    f"the weight of fairness key {key!r} must be 1 to {MAX_WEIGHT}, got {weight}"
                )
        return self

    @property
    def capacity(self) -> int:
        """The rate's bucket size: `burst`, else one period's permits (0 without a rate)."""
        return self.burst or self.rate_n or 0

    def describe(self) -> str:
        """One line: "concurrency 20, 50/s (burst 50), 2 per key"."""
        parts = []
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        if self.rate_n is not None and self.rate_period_ms is not None:
            parts.append(f"{format_rate(self.rate_n, self.rate_period_ms)} (burst {self.capacity})")
        if self.per_key is not None:
            parts.append(f"{self.per_key} per key")
        if self.weights:
            parts.append("weights " + ", ".join(f"{k}={w}" for k, w in sorted(self.weights.items())))
        return ", ".join(parts)

    def fingerprint(self) -> str:
        """A digest of the spec: a declaration in code applies again only when it changes."""
        return hashlib.blake2b(msgspec.msgpack.encode(self), digest_size=8).hexdigest()


def make_spec(
    *,
    concurrency: int | None = None,
    rate: str | None = None,
    burst: int | None = None,
    per_key: Limit | int | None = None,
    weights: dict[str, int] | None = None,
) -> LimitSpec:
    """A checked `LimitSpec` from the arguments users write (`rate="50/s"`, `per_key=Limit(2)`)."""
    rate_n, period = parse_rate(rate) if rate is not None else (None, None)
    per = per_key.concurrency if isinstance(per_key, Limit) else _positive(per_key, "per_key concurrency")
    return LimitSpec(
        concurrency=concurrency,
        rate_n=rate_n,
        rate_period_ms=period,
        burst=burst,
        per_key=per,
        weights=dict(weights or {}),
    ).check()


@dataclass(frozen=True)
class Limiter:
    """A limiter declared in code: `Worker(..., limiters=[Limiter("payments-api", concurrency=20)])`.

    A worker that starts with it creates the limiter, or changes it to this declaration if the
    declaration changed since it was last applied. A change made at runtime (`grctl limiter set`)
    stands until the declaration in code changes.

    Args:
        name: the limiter's name (what `ctx.limit(name)` asks).
        concurrency: permits held at once, by all runs of the namespace together.
        rate: permits granted per period ("50/s", "600/min"): a token bucket.
        burst: the bucket's size (default: one period's permits).
        per_key: the limit of each key on its own (`Limit(concurrency=2)` or 2).
        weights: fairness keys with a weight other than 1.
    """

    name: str
    concurrency: int | None = None
    rate: str | None = None
    burst: int | None = None
    per_key: Limit | int | None = None
    weights: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)
        self.spec()  # fails here, at the declaration, if anything is wrong

    def spec(self) -> LimitSpec:
        """The declaration as a checked `LimitSpec`."""
        return make_spec(
            concurrency=self.concurrency, rate=self.rate, burst=self.burst, per_key=self.per_key, weights=self.weights
        )


class PendingAcquire(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The permit a run's suspended step asked for (`RunRecord.acquire`): one at a time per run.

    `acquire_id` is `<step seq>.<journal position>` of the `ctx.limit` call; `since_ms` when it asked.
    `priority` 0 (as a step asks when given none) means the run's own.
    """

    limiter: str
    acquire_id: str
    position: int
    key: str = ""
    fairness: str = ""
    priority: int = 0
    since_ms: int = 0


class HeldPermit(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A permit a run holds: released when its section, its step (`seq`) or the run ends."""

    limiter: str
    acquire_id: str
    seq: int
    since_ms: int = 0
