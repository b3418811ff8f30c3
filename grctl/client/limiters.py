"""What a client reads of limiters, and how their refusals become errors (docs/tutorials/flow-control.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from grctl.engine.records import LimiterRecord, Reply, ReplyCode, limiter_decoder
from grctl.errors import InvalidArgumentError, LimiterInUseError, LimiterNotFoundError
from grctl.models.limits import LimitSpec, format_rate

_encoder = msgspec.msgpack.Encoder()


@dataclass(frozen=True)
class LimiterDescription:
    """A limiter as the partition that keeps it holds it.

    Attributes:
        name: its name.
        spec: what it allows.
        in_use: permits held now.
        waiting: requests waiting for a permit.
        granted / released / refused: counters since it was created.
        mean_wait_ms: the mean wait of the granted requests.
        waiting_by_priority / waiting_by_fairness / in_use_by_key: its queue (describe only; the
            50 largest fairness keys and keys).
        oldest_waiting_since: when the oldest waiting request asked (describe only).
    """

    name: str
    spec: LimitSpec
    in_use: int
    waiting: int
    granted: int
    released: int
    refused: int
    mean_wait_ms: float
    created_at: datetime | None
    updated_at: datetime | None
    created_by: str | None
    updated_by: str | None
    waiting_by_priority: dict[str, int] = field(default_factory=dict)
    waiting_by_fairness: dict[str, int] = field(default_factory=dict)
    in_use_by_key: dict[str, int] = field(default_factory=dict)
    oldest_waiting_since: datetime | None = None
    record: LimiterRecord | None = field(default=None, repr=False)

    @property
    def rate(self) -> str | None:
        """The rate as written ("50/s"), or None."""
        s = self.spec
        return format_rate(s.rate_n, s.rate_period_ms) if s.rate_n and s.rate_period_ms else None

    @classmethod
    def of(cls, record: LimiterRecord, summary: dict[str, Any] | None = None) -> LimiterDescription:
        """Describe a limiter record (with its queue summary, from a describe answer)."""
        summary = summary or {}
        oldest = summary.get("oldest_waiting_since_ms")
        return cls(
            name=record.name,
            spec=record.spec,
            in_use=record.in_use,
            waiting=record.waiting,
            granted=record.granted,
            released=record.released,
            refused=record.refused,
            mean_wait_ms=record.waited_ms / record.granted if record.granted else 0.0,
            created_at=_dt(record.created_ms),
            updated_at=_dt(record.updated_ms),
            created_by=record.created_by,
            updated_by=record.updated_by,
            waiting_by_priority=dict(summary.get("waiting_by_priority") or {}),
            waiting_by_fairness=dict(summary.get("waiting_by_fairness") or {}),
            in_use_by_key=dict(summary.get("in_use_by_key") or {}),
            oldest_waiting_since=_dt(oldest) if oldest else None,
            record=record,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (`grctl limiter describe --json`)."""
        return {
            "name": self.name,
            "concurrency": self.spec.concurrency,
            "rate": self.rate,
            "burst": self.spec.capacity if self.spec.rate_n else None,
            "per_key": self.spec.per_key,
            "weights": dict(self.spec.weights),
            "in_use": self.in_use,
            "waiting": self.waiting,
            "granted": self.granted,
            "released": self.released,
            "refused": self.refused,
            "mean_wait_ms": round(self.mean_wait_ms, 1),
            "waiting_by_priority": self.waiting_by_priority,
            "waiting_by_fairness": self.waiting_by_fairness,
            "in_use_by_key": self.in_use_by_key,
            "oldest_waiting_since": self.oldest_waiting_since.isoformat() if self.oldest_waiting_since else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "created_by": self.created_by,
            "updated_by": self.updated_by,
        }


def record_of(raw: Any) -> LimiterRecord:
    """A limiter record from a reply's payload (decoded as builtins by the reply decoder)."""
    return limiter_decoder.decode(_encoder.encode(raw))


def raise_for(reply: Reply, name: str) -> None:
    """Raise the error a refused limiter request means (nothing if it was accepted)."""
    if reply.ok:
        return
    if reply.code == ReplyCode.limiter_not_found:
        raise LimiterNotFoundError(reply.message or f"no limiter named {name!r}", limiter=name)
    if reply.code == ReplyCode.limiter_in_use:
        raise LimiterInUseError(reply.message, limiter=name)
    if reply.code == ReplyCode.invalid_limiter:
        raise InvalidArgumentError(reply.message)
    raise LimiterNotFoundError(f"limiter {name!r}: {reply.code}: {reply.message}", limiter=name)


def _dt(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None
