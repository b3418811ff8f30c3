"""The partition store on a real RocksDB (in tmp_path): overlay reads, scans, commits, checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from grctl.errors import StateError
from grctl.state.partition_store import PartitionStore


def test_overlay_answers_first_and_commit_moves_writes_to_rocksdb(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.put(b"r/a", b"1", batch_id=1)
    assert store.get(b"r/a") == b"1" and store.get_committed(b"r/a") is None
    store.commit(1, {b"r/a": b"1"}, checkpoint=41)
    assert store.get_committed(b"r/a") == b"1" and store.overlay_size == 0
    store.close()
    reopened = PartitionStore(tmp_path / "p0")
    assert reopened.checkpoint == 41 and reopened.get(b"r/a") == b"1"
    reopened.close()


def test_scan_merges_overlay_of_its_table_only(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.commit(1, {b"j/x\x00a": b"old", b"j/x\x00b": b"b", b"j/y\x00a": b"other"}, checkpoint=1)
    store.put(b"j/x\x00a", b"new", batch_id=2)  # overwrite
    store.put(b"j/x\x00b", None, batch_id=2)  # delete
    store.put(b"j/x\x00c", b"c", batch_id=2)  # insert
    store.put(b"t/x\x00z", b"timer", batch_id=2)  # another table
    assert list(store.scan(b"j/x\x00")) == [(b"j/x\x00a", b"new"), (b"j/x\x00c", b"c")]
    store.commit(2, {b"j/x\x00a": b"new", b"j/x\x00b": None, b"j/x\x00c": b"c"}, checkpoint=2)
    assert list(store.scan(b"j/x\x00")) == [(b"j/x\x00a", b"new"), (b"j/x\x00c", b"c")]
    assert list(store.scan(b"t/")) == [(b"t/x\x00z", b"timer")]
    store.discard_overlay()
    assert list(store.scan(b"t/")) == []
    store.close()


def test_a_later_batch_write_survives_the_commit_of_an_earlier_one(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    store.put(b"r/a", b"v1", batch_id=1)
    store.put(b"r/a", b"v2", batch_id=2)  # staged while batch 1 commits
    store.commit(1, {b"r/a": b"v1"}, checkpoint=5)
    assert store.get(b"r/a") == b"v2" and store.get_committed(b"r/a") == b"v1"
    store.close()


def test_a_folder_has_one_owner(tmp_path: Path) -> None:
    first = PartitionStore(tmp_path / "p0")
    with pytest.raises(StateError, match="Another worker process may be using the same state directory"):
        PartitionStore(tmp_path / "p0")
    first.close()
