"""The group-commit batch: everything published by the next Kafka transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Batch:
    """Records and state writes accumulated since the last commit.

    Attributes:
        id: increasing batch number (overlay entries are tagged with it).
        records: (topic, partition, key, value, headers) to produce, in order.
        state: per partition, changelog writes (key → value, None deletes); the last write wins.
        after_commit: callbacks run once the transaction has committed (start steps, ...).
    """

    id: int
    records: list[tuple[str, int, bytes, bytes, list[tuple[str, bytes]] | None]] = field(default_factory=list)
    state: dict[int, dict[bytes, bytes | None]] = field(default_factory=dict)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records) + sum(len(w) for w in self.state.values())
