"""An in-memory `Publisher` for the group committer's unit tests (no broker).

It stands in for the Kafka transaction only; the committer, the stores (real RocksDB in
tmp_path), the processors and the state machine under test are the real ones. What it keeps is
what a transaction would have made visible, so the tests assert on that.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from grctl.worker._session.commit import Batch, Record


@dataclass
class Published:
    """One committed transaction."""

    records: list[Record]
    state: dict[int, dict[bytes, bytes | None]]
    offsets: list[tuple[int, int]]


@dataclass
class InMemoryPublisher:
    """Commits into lists; `fail_next` makes the next publish raise; `hold` keeps it open."""

    committed: list[Published] = field(default_factory=list)
    fail_next: BaseException | None = None
    hold: asyncio.Event | None = None
    in_flight: asyncio.Event = field(default_factory=asyncio.Event)
    _changelog_end: dict[int, int] = field(default_factory=dict)

    async def publish(self, batch: Batch, offsets: list[tuple[int, int]]) -> dict[int, int]:
        self.in_flight.set()
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.fail_next is not None:
                exc, self.fail_next = self.fail_next, None
                raise exc
            checkpoints = {}
            for p, writes in batch.state.items():
                end = self._changelog_end.get(p, -1) + len(writes)
                self._changelog_end[p] = checkpoints[p] = end
            self.committed.append(
                Published(list(batch.records), {p: dict(w) for p, w in batch.state.items()}, list(offsets))
            )
            return checkpoints
        finally:
            self.in_flight.clear()

    def records_of(self, topic: str) -> list[Record]:
        """Every committed record of `topic`, in order."""
        return [r for pub in self.committed for r in pub.records if r[0] == topic]
