"""The partition store on a real RocksDB (in tmp_path): overlay reads, scans, commits, checkpoint."""

from __future__ import annotations

import gc
import random
from pathlib import Path

import pytest

from grctl.errors import InternalError, InvalidArgumentError, StateError
from grctl.state.partition_store import SMALL_GROUP, WRITE_BUFFER_BYTES, KeyIndex, PartitionStore, StoreMemory


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_overlay_answers_first_and_commit_moves_writes_to_rocksdb(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.put(b"r/a", b"1", batch_id=1)
    assert store.get(b"r/a") == b"1" and store.get_committed(b"r/a") is None
    store.commit(1, checkpoint=41)
    assert store.get_committed(b"r/a") == b"1" and store.overlay_size == 0
    store.close()
    reopened = PartitionStore(tmp_path / "p0")
    assert reopened.checkpoint == 41 and reopened.get(b"r/a") == b"1"
    reopened.close()


def test_committed_writes_reach_rocksdb_with_their_checkpoint_at_flush(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.put(b"r/a", b"1", batch_id=1)
    store.put(b"r/b", b"2", batch_id=1)
    store.commit(1, checkpoint=10)
    store.put(b"r/a", None, batch_id=2)
    store.commit(2, checkpoint=11)
    assert store.get(b"r/a") is None and store.get_committed(b"r/b") == b"2"
    store.flush()
    store.put(b"r/c", b"uncommitted", batch_id=3)  # never committed: must not reach RocksDB
    store.close()
    reopened = PartitionStore(tmp_path / "p0")
    assert reopened.checkpoint == 11
    assert (reopened.get(b"r/a"), reopened.get(b"r/b"), reopened.get(b"r/c")) == (None, b"2", None)
    reopened.close()


def test_a_flush_is_one_consistent_write_batch_with_its_checkpoint(tmp_path: Path) -> None:
    """What is not flushed is not in RocksDB, and the checkpoint says how far RocksDB is."""
    store = PartitionStore(tmp_path / "p0", clock=FakeClock())  # the clock stands still: no timed flush
    store.put(b"r/a", b"1", batch_id=1)
    store.commit(1, checkpoint=5)
    store.flush()
    store.put(b"r/a", b"2", batch_id=2)
    store.commit(2, checkpoint=6)  # committed in Kafka, not yet flushed
    assert store.get_committed(b"r/a") == b"2"
    raw = store._db.get(b"r/a")  # what a crash now would leave: the restore replays from offset 6
    assert raw == b"1" and store._flushed_checkpoint == 5
    store.close()


def test_committed_writes_are_flushed_once_the_interval_has_passed(tmp_path: Path) -> None:
    clock = FakeClock()
    store = PartitionStore(tmp_path / "p0", clock=clock, flush_interval_s=1.0)
    store.put(b"r/a", b"1", batch_id=1)
    store.commit(1, checkpoint=5)
    clock.advance(0.75)
    store.put(b"r/b", b"2", batch_id=2)
    store.commit(2, checkpoint=6)
    assert (store._db.get(b"r/a"), store._db.get(b"r/b"), store._flushed_checkpoint) == (None, None, -1)
    clock.advance(0.25)  # a full interval since the store opened (binary fractions: exact sums)
    store.put(b"r/c", b"3", batch_id=3)
    store.commit(3, checkpoint=7)
    assert (store._db.get(b"r/a"), store._db.get(b"r/b"), store._db.get(b"r/c")) == (b"1", b"2", b"3")
    assert store._flushed_checkpoint == 7
    # The interval counts from that flush.
    clock.advance(0.5)
    store.put(b"r/a", b"4", batch_id=4)
    store.commit(4, checkpoint=8)
    assert store._db.get(b"r/a") == b"1" and store.get_committed(b"r/a") == b"4"
    clock.advance(0.5)
    store.commit(4, checkpoint=8)  # nothing new committed, but the interval has passed
    assert store._db.get(b"r/a") == b"4" and store._flushed_checkpoint == 8
    store.close()


def test_committed_writes_are_flushed_once_enough_keys_wait(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0", clock=FakeClock(), flush_keys=3)
    store.put(b"r/a", b"1", batch_id=1)
    store.put(b"r/b", b"2", batch_id=1)
    store.commit(1, checkpoint=5)
    assert store._db.get(b"r/a") is None and store._flushed_checkpoint == -1
    store.put(b"r/a", b"1b", batch_id=2)  # the same key again: still two keys waiting
    store.commit(2, checkpoint=6)
    assert store._db.get(b"r/a") is None and store._flushed_checkpoint == -1
    store.put(b"r/c", b"3", batch_id=3)
    store.commit(3, checkpoint=7)
    assert (store._db.get(b"r/a"), store._db.get(b"r/b"), store._db.get(b"r/c")) == (b"1b", b"2", b"3")
    assert store._flushed_checkpoint == 7
    store.close()


def test_staging_into_an_older_batch_is_refused(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.put(b"r/a", b"1", batch_id=3)
    with pytest.raises(InternalError, match="older than the newest staged batch"):
        store.put(b"r/a", b"0", batch_id=2)
    store.close()


def test_scan_merges_committed_and_uncommitted_layers(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0", clock=FakeClock())  # flushes only when the test says so
    for key, value in {b"j/x\x00a": b"old", b"j/x\x00b": b"b", b"j/y\x00a": b"other"}.items():
        store.put(key, value, batch_id=1)
    store.commit(1, checkpoint=1)
    store.flush()
    store.put(b"j/x\x00a", b"new", batch_id=2)  # overwrite
    store.put(b"j/x\x00b", None, batch_id=2)  # delete
    store.put(b"j/x\x00c", b"c", batch_id=2)  # insert
    store.put(b"t/x\x00z", b"timer", batch_id=2)  # another table
    assert list(store.scan(b"j/x\x00")) == [(b"j/x\x00a", b"new"), (b"j/x\x00c", b"c")]
    store.put(b"t/x\x00y", b"timer-2", batch_id=3)  # a later batch, still uncommitted
    store.commit(2, checkpoint=2)  # committed, not flushed
    assert list(store.scan(b"j/x\x00")) == [(b"j/x\x00a", b"new"), (b"j/x\x00c", b"c")]
    assert list(store.scan(b"t/")) == [(b"t/x\x00y", b"timer-2"), (b"t/x\x00z", b"timer")]
    store.drop_uncommitted()
    assert list(store.scan(b"t/")) == [(b"t/x\x00z", b"timer")]
    store.flush()
    assert list(store.scan(b"j/")) == [(b"j/x\x00a", b"new"), (b"j/x\x00c", b"c"), (b"j/y\x00a", b"other")]
    store.close()


def test_scan_matches_a_model_of_every_write_through_layers_commits_and_flushes(tmp_path: Path) -> None:
    """Random writes, commits, flushes and failed batches; every scan equals a plain dict's answer.

    The in-memory writes are found through per-dict key indexes extended as the dicts grow
    (issue 24), so the scans are asked between writes to the same dicts, at every prefix
    granularity: nothing, a table, part of an owner, an owner, inside an owner, and with a cursor.
    """
    rng = random.Random(24)
    store = PartitionStore(tmp_path / "p0", clock=FakeClock(), flush_keys=10**9)
    committed: dict[bytes, bytes] = {}  # the model: what committed batches hold
    staged: list[tuple[int, dict[bytes, bytes | None]]] = []  # uncommitted batches, oldest first
    owners = [b"s/wf%d\x00run%d\x00" % (i, j) for i in range(6) for j in range(2)] + [b"r/wf", b"x/running\x00"]
    batch = 1

    def model() -> dict[bytes, bytes]:
        view = dict(committed)
        for _, writes in staged:
            for k, v in writes.items():
                if v is None:
                    view.pop(k, None)
                else:
                    view[k] = v
        return view

    for step in range(3000):
        op = rng.random()
        if op < 0.6:
            key = rng.choice(owners) + b"%d" % rng.randrange(8)
            value = None if rng.random() < 0.25 else b"v%d" % step
            store.put(key, value, batch_id=batch)
            if not staged or staged[-1][0] != batch:
                staged.append((batch, {}))
            staged[-1][1][key] = value
        elif op < 0.7:
            batch += 1  # a new batch opens while the older ones are in flight
        elif op < 0.8 and staged:
            done = staged.pop(0)
            for k, v in done[1].items():
                if v is None:
                    committed.pop(k, None)
                else:
                    committed[k] = v
            store.commit(done[0], checkpoint=step)
        elif op < 0.83:
            store.flush()
        elif op < 0.84:
            store.drop_uncommitted()  # a failed transaction: every uncommitted batch is gone
            staged.clear()
            batch += 1
        else:
            view = model()
            prefix = rng.choice(
                [b"", b"s", b"s/", b"s/wf1", b"s/wf1\x00", b"s/wf1\x00run0\x00", b"s/wf1\x00run0\x003", b"r/",
                 b"r/wf", b"x/running\x00", b"t/"]
            )  # fmt: skip
            after = rng.choice([None, None, prefix + b"\x00run1"])
            expected = sorted((k, v) for k, v in view.items() if k.startswith(prefix) and (after is None or k > after))
            # m/checkpoint is RocksDB's own key, not a write
            found = [(k, v) for k, v in store.scan(prefix, after) if not k.startswith(b"m/")]
            assert found == expected, (step, prefix, after)
    store.close()


def test_a_later_batch_write_survives_the_commit_of_an_earlier_one(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.put(b"r/a", b"v1", batch_id=1)
    store.put(b"r/a", b"v2", batch_id=2)  # staged while batch 1 commits
    store.commit(1, checkpoint=5)
    assert store.get(b"r/a") == b"v2" and store.get_committed(b"r/a") == b"v1"
    store.commit(2, checkpoint=6)
    assert store.get(b"r/a") == b"v2" and store.get_committed(b"r/a") == b"v2"
    store.close()


def test_a_folder_has_one_owner(tmp_path: Path) -> None:
    first = PartitionStore(tmp_path / "p0")
    with pytest.raises(StateError, match="Another worker process may be using the same state directory"):
        PartitionStore(tmp_path / "p0")
    first.close()


def test_size_counts_committed_keys_and_grows_with_what_is_written(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    empty_keys, empty_bytes = store.size()
    for i in range(200):
        store.put(f"r/{i:04}".encode(), b"x" * 100, batch_id=1)
    store.commit(1, checkpoint=1)
    unflushed_keys, _ = store.size()
    store.flush()
    keys, size = store.size()
    assert unflushed_keys >= empty_keys + 200 and keys >= empty_keys + 200
    assert size >= empty_bytes + 200 * 100
    store.close()


def test_stores_share_one_memory_budget_that_bounds_their_memtables(tmp_path: Path) -> None:
    memory = StoreMemory(16 * 2**20)
    stores = [PartitionStore(tmp_path / f"p{i}", memory=memory) for i in range(3)]
    value = b"v" * 1000
    peak = 0
    for batch in range(1, 61):  # 60 MB over three stores, almost four times the budget
        for store in stores:
            for k in range(333):
                store.put(b"r/%d/%d" % (batch, k), value, batch_id=batch)
            store.commit(batch, checkpoint=batch)
            store.flush()
            peak = max(peak, memory.usage())
    memtables = sum(s._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0 for s in stores)
    # RocksDB's defaults (64 MiB memtables) would hold all 60 MB in memory. The budget's write
    # buffer manager flushes at half of it; the limit is soft (flushes run in the background),
    # so a store may hold one more write buffer while its last one is written to a file.
    assert memtables < memory.total_bytes
    assert 0 < peak <= memory.total_bytes + len(stores) * WRITE_BUFFER_BYTES
    assert all(s.get(b"r/1/0") == value for s in stores)  # flushed to files, nothing lost
    for s in stores:
        s.close()


def test_a_memory_budget_under_16_mib_is_refused_with_its_size() -> None:
    with pytest.raises(InvalidArgumentError, match="at least 16 MiB, got 4 MiB"):
        StoreMemory(4 * 2**20)


def test_a_key_index_finds_every_key_as_an_owner_grows_past_a_small_group() -> None:
    writes: dict[bytes, bytes | None] = {}
    index = KeyIndex(writes)
    for i in range(SMALL_GROUP * 3):  # the owner's keys go from a tuple to a list on the way
        writes[b"s/run-1\x00" + str(i).encode()] = b"v"
        writes[b"r/run-" + str(i).encode()] = None
        expected = {b"s/run-1\x00" + str(j).encode() for j in range(i + 1)}
        assert set(index.matching(b"s/run-1\x00")) == expected
        assert set(index.matching(b"s/")) == expected
    assert len(index.matching(b"r/run-")) == SMALL_GROUP * 3
    assert index.matching(b"r/run-1") and not index.matching(b"x/")


def test_a_key_index_of_small_owners_leaves_the_garbage_collector_nothing_to_track() -> None:
    # Issue 32: an index held one list per owner (a run's keys), which the collector walks in
    # every full collection; a tuple of bytes it stops tracking.
    writes: dict[bytes, bytes | None] = {}
    for i in range(1000):
        writes[b"r/run-" + str(i).encode()] = b"v"
        writes[b"s/run-" + str(i).encode() + b"\x00" + b"0"] = b"v"
    index = KeyIndex(writes)
    assert len(index.matching(b"r/")) == 1000
    gc.collect()
    groups = [g for owners in index._groups.values() for g in owners.values()]
    assert len(groups) == 2000 and not any(gc.is_tracked(g) for g in groups)
