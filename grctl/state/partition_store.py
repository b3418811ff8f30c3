"""One RocksDB per owned partition, with in-memory layers of writes not yet in it.

RocksDB is a cache of the `state` changelog: it only ever receives writes whose Kafka
transaction has committed, together with the changelog offset they reach (the restore
checkpoint, key `m/checkpoint`), in one WriteBatch. Reads see, newest first:

1. one layer per uncommitted batch (the batch being built, the transaction in flight): the
   layer is the batch's own dict of changelog writes for this partition, so staging a write
   costs one dict store and committing a batch moves its layer without a per-key loop;
2. the committed writes not yet flushed to RocksDB;
3. RocksDB.

Committed writes are flushed in one WriteBatch when FLUSH_INTERVAL_S has passed or
FLUSH_KEYS keys are waiting; a run record rewritten by every step reaches RocksDB once per
flush instead of once per step. RocksDB's write-ahead log is off: after a crash the store
holds a consistent prefix of its WriteBatches (each carries its checkpoint) and the restore
replays the changelog from there, as Kafka Streams does with its RocksDB stores.
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager, WriteOptions

from grctl.engine.keys import CHECKPOINT_KEY
from grctl.errors import InternalError, InvalidArgumentError, StateError

logger = logging.getLogger(__name__)

#: Committed writes wait in memory at most this long before they are written to RocksDB...
FLUSH_INTERVAL_S = 1.0
#: ...or until this many keys wait.
FLUSH_KEYS = 20_000

_MISSING = object()
#: The checkpoint's value: the changelog offset and the wall-clock ms it was written at.
_CHECKPOINT = struct.Struct(">qq")
Writes = dict[bytes, bytes | None]


#: RocksDB memory of one worker process, all its partitions together (block cache, memtables included).
DEFAULT_STATE_MEMORY_MB = 256
#: Memtable size of one partition's RocksDB before it is flushed to a file.
WRITE_BUFFER_BYTES = 2 * 2**20


class StoreMemory:
    """The memory budget every partition store of a worker shares.

    One LRU block cache of `total_bytes`; the memtables of every store are charged to it
    through one write buffer manager (half of it at most), so a worker's RocksDB memory is
    bounded by the budget whatever the number of partitions it owns. RocksDB's defaults
    (a 64 MiB memtable, two of them, and a block cache per database) would let a worker
    with 12 partitions hold over 1.5 GiB before its first flush.

    Args:
        total_bytes: the budget.
    """

    _shared: StoreMemory | None = None

    def __init__(self, total_bytes: int = DEFAULT_STATE_MEMORY_MB * 2**20) -> None:
        if total_bytes < 16 * 2**20:
            raise InvalidArgumentError(
                f"the state memory budget must be at least 16 MiB, got {total_bytes / 2**20:g} MiB",
                argument="state_memory_mb",
            )
        self.total_bytes = total_bytes
        self.cache = Cache(total_bytes)
        self.write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(total_bytes // 2, False, self.cache)

    @classmethod
    def shared(cls) -> StoreMemory:
        """The process's default budget (for stores opened without one)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def usage(self) -> int:
        """Bytes in use: blocks cached and memtables."""
        return int(self.cache.get_usage())


class PartitionStore:
    """The state tables of one partition.

    Args:
        path: folder of this partition's RocksDB.
        clock: monotonic seconds, for the flush interval (a test passes a clock it advances).
        flush_interval_s: committed writes wait at most this long before a flush.
        flush_keys: ...or until this many keys wait.
        memory: the RocksDB memory budget it shares with the worker's other stores (default:
            the process's, `StoreMemory.shared()`).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        flush_keys: int = FLUSH_KEYS,
        memory: StoreMemory | None = None,
    ) -> None:
        self.path = path
        self._memory = memory or StoreMemory.shared()
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        self._flush_keys = flush_keys
        # Uncommitted batches, oldest first: (batch id, key -> value or None for a delete).
        self._layers: list[tuple[int, Writes]] = []
        # Committed, not yet written to RocksDB.
        self._unflushed: Writes = {}
        self._flushed_at = clock()
        self._open()

    def _open(self) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_max_background_jobs(2)
        opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
        opts.set_write_buffer_manager(self._memory.write_buffers)
        table = BlockBasedOptions()
        table.set_block_cache(self._memory.cache)
        opts.set_block_based_table_factory(table)
        try:
            self._db = Rdict(str(path), opts)
        except Exception as exc:  # rocksdict raises plain Exception for lock and corruption errors
            raise StateError(
                f"cannot open the state store at {path}: {exc}. Another worker process may be using the "
                f"same state directory: give each worker its own state_dir."
            ) from exc
        wopts = WriteOptions()
        wopts.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; the stub says method
        self._db.set_write_options(wopts)
        raw = self._db.get(CHECKPOINT_KEY)
        #: The last changelog offset RocksDB holds (-1: none).
        self.checkpoint: int = -1
        #: When RocksDB was last known to hold the changelog up to `checkpoint` (wall ms;
        #: None for a store written before this was recorded).
        self.checkpoint_ms: int | None = None
        if raw is not None:
            if len(raw) == _CHECKPOINT.size:
                self.checkpoint, self.checkpoint_ms = _CHECKPOINT.unpack(raw)
            else:
                (self.checkpoint,) = struct.unpack(">q", raw)
        self._flushed_checkpoint = self.checkpoint

    def reset(self) -> None:
        """Delete everything this partition's RocksDB holds (the restore then starts from scratch)."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._layers.clear()
        self._unflushed = {}
        self._open()

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        """The value of `key`: the newest uncommitted write, else the committed one."""
        for _, writes in reversed(self._layers):
            value = writes.get(key, _MISSING)
            if value is not _MISSING:
                return value  # type: ignore[return-value]  # bytes or None, not the sentinel
        return self.get_committed(key)

    def get_committed(self, key: bytes) -> bytes | None:
        """The committed value of `key` (ignores writes not yet committed)."""
        value = self._unflushed.get(key, _MISSING)
        if value is not _MISSING:
            return value  # type: ignore[return-value]  # bytes or None, not the sentinel
        stored: bytes | None = self._db.get(key)
        return stored

    def scan(self, prefix: bytes, after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with `prefix`, in key order, including uncommitted writes.

        Args:
            prefix: the keys wanted start with it.
            after: only keys greater than this one (a cursor).

        Walks the in-memory layers whole: scans are for restores, timers and indexes at
        assignment, the journal of a re-executed step and listing pages, not for every step.
        """
        low = prefix if after is None or after < prefix else after

        def wanted(k: bytes) -> bool:
            return k.startswith(prefix) and (after is None or k > after)

        pending: Writes = {k: v for k, v in self._unflushed.items() if wanted(k)}
        for _, writes in self._layers:
            pending.update((k, v) for k, v in writes.items() if wanted(k))
        staged = sorted(pending)
        i = 0
        it = self._db.iter()
        it.seek(low)
        while it.valid():
            key: bytes = it.key()
            if not key.startswith(prefix):
                break
            if after is not None and key <= after:
                it.next()
                continue
            while i < len(staged) and staged[i] < key:  # staged keys RocksDB does not have, in order
                value = pending[staged[i]]
                if value is not None:
                    yield staged[i], value
                i += 1
            if i < len(staged) and staged[i] == key:
                value = pending[key]
                i += 1
                if value is not None:
                    yield key, value
            else:
                yield key, it.value()
            it.next()
        for key in staged[i:]:
            value = pending[key]
            if value is not None:
                yield key, value

    # ------------------------------------------------------------------ writes

    def layer(self, batch_id: int) -> Writes:
        """The dict of uncommitted writes of batch `batch_id` (batch ids only grow).

        The caller may store into it directly (key -> value, None deletes).
        """
        layers = self._layers
        if layers and layers[-1][0] == batch_id:
            return layers[-1][1]
        if layers and layers[-1][0] > batch_id:
            raise InternalError(f"batch {batch_id} is older than the newest staged batch {layers[-1][0]}")
        writes: Writes = {}
        layers.append((batch_id, writes))
        return writes

    def put(self, key: bytes, value: bytes | None, batch_id: int) -> None:
        """Stage a write (None deletes) as part of batch `batch_id`."""
        self.layer(batch_id)[key] = value

    def commit(self, batch_id: int, checkpoint: int) -> None:
        """Batch `batch_id` (and any older one) committed in Kafka, reaching changelog `checkpoint`.

        Its writes become committed and reach RocksDB with the next flush.
        """
        layers = self._layers
        while layers and layers[0][0] <= batch_id:
            self._unflushed.update(layers.pop(0)[1])
        if checkpoint > self.checkpoint:
            self.checkpoint = checkpoint
        if len(self._unflushed) >= self._flush_keys or self._clock() - self._flushed_at >= self._flush_interval_s:
            self.flush()

    def flush(self, *, stamp: bool = False) -> None:
        """Write the committed writes and the checkpoint (with the time) to RocksDB in one WriteBatch.

        Args:
            stamp: write the checkpoint's time even if nothing changed (closing: the store was
                current until now).
        """
        self._flushed_at = self._clock()
        if not self._unflushed and self.checkpoint == self._flushed_checkpoint and not stamp:
            return
        wb = WriteBatch(raw_mode=True)
        for key, value in self._unflushed.items():
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        if self.checkpoint >= 0 and (self.checkpoint > self._flushed_checkpoint or stamp):
            self.checkpoint_ms = int(time.time() * 1000)
            wb.put(CHECKPOINT_KEY, _CHECKPOINT.pack(self.checkpoint, self.checkpoint_ms))
        self._db.write(wb)
        self._unflushed = {}
        self._flushed_checkpoint = self.checkpoint

    def apply_restored(self, writes: Writes, checkpoint: int) -> None:
        """Write records read back from the changelog during restore."""
        self._unflushed.update(writes)
        self.checkpoint = max(self.checkpoint, checkpoint)
        self.flush()

    def drop_uncommitted(self) -> None:
        """Forget every write not committed yet (the group committer, after a failed transaction)."""
        self._layers.clear()

    def size(self) -> tuple[int, int]:
        """(keys, bytes) this store holds, as RocksDB estimates them (plus writes not flushed yet)."""
        keys = self._db.property_int_value("rocksdb.estimate-num-keys") or 0
        files = self._db.property_int_value("rocksdb.total-sst-files-size") or 0
        memory = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return keys + len(self._unflushed), files + memory

    @property
    def overlay_size(self) -> int:
        """Number of writes staged and not yet committed."""
        return sum(len(writes) for _, writes in self._layers)

    def close(self) -> None:
        """Flush what committed and close the database (the partition was revoked or the worker stops)."""
        try:
            self.flush(stamp=True)
        except Exception:  # noqa: BLE001  # already closed; the changelog has every committed write
            logger.debug("state store %s: nothing flushed at close", self.path)
        try:
            self._db.close()
        except Exception:  # noqa: BLE001  # closing twice is harmless
            logger.debug("state store %s already closed", self.path)

    @staticmethod
    def wipe(path: Path) -> None:
        """Delete a partition's local state (it is rebuilt from the changelog)."""
        shutil.rmtree(path, ignore_errors=True)
