"""The durable timers of one table of one partition that fall due soon, in memory.

A partition keeps its timers in tables ordered by due time (`t/`: the runs' own timers; `e/`:
the ended runs' retention, `grctl.engine.keys`). A `TimerQueue` holds in a heap every timer of
its table due before a horizon (`TIMER_HORIZON_MS` ahead), at most `TIMER_LOAD_LIMIT` at a
time; the others stay on disk until the horizon reaches them, so memory does not grow with
the retention window. A burst due at once is loaded in slices as it fires.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from grctl.engine import keys
from grctl.engine.records import timer_decoder
from grctl.state.partition_store import PartitionStore

#: Timers due within this much of now are in memory; later ones wait in their table.
TIMER_HORIZON_MS = 60_000
#: At most this many timers of a table are loaded at a time (a burst due at once is loaded in slices).
TIMER_LOAD_LIMIT = 20_000


class TimerQueue:
    """The timers of `table` due soon (see the module docstring).

    Args:
        store: the partition's store.
        table: the timer table's key prefix.
        now_ms: wall-clock ms of the first load.
    """

    def __init__(self, store: PartitionStore, table: bytes, now_ms: int) -> None:
        self._store = store
        self.table = table
        # (due_ms, key) of every timer of the table whose key is at most `_loaded`.
        self._heap: list[tuple[int, bytes]] = []
        self._loaded: bytes = table
        self._horizon_ms = 0  # when the loaded window is complete: its end; else 0
        self.load(now_ms)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """(due ms, key) of the timers in memory, in no particular order."""
        return iter(list(self._heap))

    def load(self, now_ms: int) -> None:
        """Load the timers due before `now_ms` + TIMER_HORIZON_MS not loaded yet, at most TIMER_LOAD_LIMIT.

        The heap then holds every timer whose key is at most `_loaded`: up to the horizon's
        bound (`_horizon_ms` set: the window is complete), or up to the last timer loaded when
        the limit cut the window short (`_horizon_ms` 0: load on).
        """
        horizon = now_ms + TIMER_HORIZON_MS
        bound = keys.timer_bound(horizon, self.table)
        loaded, last = 0, None
        for key, raw in self._store.scan(self.table, after=self._loaded):
            if key >= bound:
                break
            if loaded >= TIMER_LOAD_LIMIT:
                assert last is not None
                self._loaded, self._horizon_ms = last, 0
                return
            heapq.heappush(self._heap, (timer_decoder.decode(raw).due_ms, key))
            loaded, last = loaded + 1, key
        self._loaded, self._horizon_ms = bound, horizon

    def maybe_load(self, now_ms: int) -> None:
        """Load more when the horizon is half used up, or when a cut-short window runs low."""
        if self._horizon_ms:
            if now_ms + TIMER_HORIZON_MS // 2 >= self._horizon_ms:
                self.load(now_ms)
        elif len(self._heap) < TIMER_LOAD_LIMIT // 2:
            self.load(now_ms)

    def armed(self, due_ms: int, key: bytes) -> bool:
        """A timer of this table was armed: held now if its key is in the loaded window (True)."""
        if key <= self._loaded:  # later ones are loaded when the horizon gets there
            heapq.heappush(self._heap, (due_ms, key))
            return True
        return False

    def next_due(self) -> int | None:
        """Due time of the earliest timer in memory."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ms: int) -> bytes | None:
        """The key of the earliest timer due at `now_ms`, taken out of memory (None: none due)."""
        heap = self._heap
        if heap and heap[0][0] <= now_ms:
            return heapq.heappop(heap)[1]
        return None

    def due_count(self, now_ms: int) -> int:
        """How many timers in memory are due at `now_ms` (a scan of the heap: for metrics)."""
        return sum(1 for due, _ in self._heap if due <= now_ms)
