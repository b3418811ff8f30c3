"""One RocksDB per owned partition, with an in-memory overlay of uncommitted writes.

RocksDB is a cache of the `state` changelog: it only ever receives writes whose Kafka
transaction has committed, in one WriteBatch per commit, together with the changelog offset
they reach (the restore checkpoint, key `m/checkpoint`). Writes of the batch being built and
of the transaction in flight live in the overlay, which answers reads first (read-your-writes
inside a batch).
"""

from __future__ import annotations

import logging
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from grctl.errors import StateError

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = b"m/checkpoint"
_TOMBSTONE = None


class PartitionStore:
    """The state tables of one partition.

    Args:
        path: folder of this partition's RocksDB.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_background_jobs(2)
        try:
            self._db = Rdict(str(path), opts)
        except Exception as exc:  # rocksdict raises plain Exception for lock and corruption errors
            raise StateError(
                f"cannot open the state store at {path}: {exc}. Another worker process may be using the "
                f"same state directory: give each worker its own state_dir."
            ) from exc
        # key -> (batch id, value or None for a delete)
        self._overlay: dict[bytes, tuple[int, bytes | None]] = {}
        # Overlay keys by table prefix (b"j/", b"t/", ...), so a scan walks only its table's
        # pending keys: scanning the whole overlay for every step's journal cost 8-11 % of a
        # worker's CPU in the chain benchmark (benchmarks/README.md, profile).
        self._overlay_tables: dict[bytes, set[bytes]] = {}
        raw = self._db.get(CHECKPOINT_KEY)
        self.checkpoint: int = struct.unpack(">q", raw)[0] if raw is not None else -1

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        """The value of `key`: the overlay's, else the committed one."""
        hit = self._overlay.get(key)
        if hit is not None:
            return hit[1]
        value: bytes | None = self._db.get(key)
        return value

    def get_committed(self, key: bytes) -> bytes | None:
        """The committed value of `key` (ignores writes not yet committed)."""
        value: bytes | None = self._db.get(key)
        return value

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed entries whose key starts with `prefix`, in key order, merged with the overlay."""
        overlay = self._overlay
        table = self._overlay_tables.get(prefix[:2], ())
        pending = {k: overlay[k][1] for k in table if k.startswith(prefix)}
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(prefix):
                break
            if key in pending:
                value = pending.pop(key)
                if value is not None:
                    yield key, value
            else:
                yield key, it.value()
            it.next()
        for key in sorted(pending):
            value = pending[key]
            if value is not None:
                yield key, value

    # ------------------------------------------------------------------ writes

    def put(self, key: bytes, value: bytes | None, batch_id: int) -> None:
        """Stage a write (None deletes) in the overlay, as part of batch `batch_id`."""
        if key not in self._overlay:
            self._overlay_tables.setdefault(key[:2], set()).add(key)
        self._overlay[key] = (batch_id, value)

    def commit(self, batch_id: int, writes: dict[bytes, bytes | None], checkpoint: int) -> None:
        """Write a committed batch to RocksDB in one WriteBatch with its changelog checkpoint.

        Overlay entries are dropped unless a later batch overwrote them meanwhile.
        """
        wb = WriteBatch(raw_mode=True)
        for key, value in writes.items():
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        if checkpoint > self.checkpoint:
            wb.put(CHECKPOINT_KEY, struct.pack(">q", checkpoint))
            self.checkpoint = checkpoint
        self._db.write(wb)
        overlay = self._overlay
        tables = self._overlay_tables
        for key in writes:
            hit = overlay.get(key)
            if hit is not None and hit[0] <= batch_id:
                del overlay[key]
                tables[key[:2]].discard(key)

    def apply_restored(self, writes: dict[bytes, bytes | None], checkpoint: int) -> None:
        """Write records read back from the changelog during restore."""
        self.commit(-1, writes, checkpoint)

    def discard_overlay(self) -> None:
        """Forget every write that was not committed (after an aborted transaction)."""
        self._overlay.clear()
        self._overlay_tables.clear()

    @property
    def overlay_size(self) -> int:
        """Number of keys staged and not yet written to RocksDB."""
        return len(self._overlay)

    def close(self) -> None:
        """Close the database (the partition was revoked or the worker stops)."""
        try:
            self._db.close()
        except Exception:  # noqa: BLE001  # closing twice is harmless
            logger.debug("state store %s already closed", self.path)

    @staticmethod
    def wipe(path: Path) -> None:
        """Delete a partition's local state (it is rebuilt from the changelog)."""
        shutil.rmtree(path, ignore_errors=True)
