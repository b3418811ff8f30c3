"""What a metrics scrape reads of the current session: plain values, filled by the session on the event loop."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PartitionView", "SessionView"]


@dataclass(slots=True)
class PartitionView:
    """One owned partition as a scrape sees it (read on the event loop)."""

    partition: int
    next_offset: int | None
    committed_offset: int | None
    running_steps: int
    timers_pending: int
    next_timer_due_ms: int | None
    purges_due: int = 0
    next_purge_due_ms: int | None = None
    runs: dict[str, dict[str, int]] = field(default_factory=dict)  # status -> type -> latest runs
    versions: dict[str, dict[int, dict[str, int]]] = field(default_factory=dict)  # type -> version -> status -> open
    state_keys: int = 0
    state_bytes: int = 0


@dataclass(slots=True)
class SessionView:
    """What a scrape reads from the current session (on the event loop)."""

    partitions: list[PartitionView] = field(default_factory=list)
    #: Bytes of the RocksDB memory budget in use (block cache and memtables), and the budget.
    state_memory: tuple[int, int] | None = None
