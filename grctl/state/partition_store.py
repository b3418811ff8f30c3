"""One RocksDB per owned partition, with in-memory layers of writes not yet in it.

RocksDB is a cache of the `state` changelog: it only ever receives writes whose Kafka
transaction has committed, together with the changelog offset they reach (the restore
checkpoint, key `m/checkpoint`), in one WriteBatch. Reads see, newest first:

1. one layer per uncommitted batch (the batch being built, the transaction in flight): the
   layer is the batch's own dict of changelog writes for this partition, so staging a write
   costs one dict store and committing a batch moves its layer without a per-key loop;
2. the committed writes not yet flushed to RocksDB;
3. RocksDB.

A prefix scan must see these writes too, and it must cost what the prefix holds, not what
memory holds: a retention purge scans three prefixes of one run while tens of thousands of
other writes wait in the layers (issue 24: a scan that walked them all made a burst of purges
quadratic and stalled the worker for minutes). Each in-memory dict therefore gets a `KeyIndex`
of its keys grouped by table and owner (the first key part: a workflow id, a status, a due
time), built lazily when a scan needs it and extended with the keys added since (dicts keep
insertion order and no key is ever removed from one, so those are the newest ones): writing
costs nothing more, and every key is indexed at most once per dict it passes through.

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
from itertools import islice
from pathlib import Path

from rocksdict import (
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteBufferManager,
    WriteOptions,
)

from grctl.engine.keys import CHECKPOINT_KEY, SEP
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


#: Length of the table prefix of every key (`grctl.engine.keys`).
_TABLE = 2


#: Keys of one owner a `KeyIndex` keeps in a tuple (untracked by the garbage collector) before a list.
SMALL_GROUP = 8


class KeyIndex:
    """The keys of one in-memory write dict, by table, then by owner (see the module docstring).

    The owner of a key is its table prefix and first part (`s/<wf_id>`, `x/<status>`,
    `t/<due>`), or the whole key when it has one part only (`r/<wf_id>`). Built lazily and
    extended with the keys added to the dict since, which are its newest (a write dict only
    grows: a delete is a None value).

    An owner's keys are a tuple while they are few (most owners have one or two keys: a run
    record, a step journal), a list past `SMALL_GROUP`: a tuple of bytes is dropped from the
    garbage collector's sight at its first collection, a list never is (issue 32: a soak worker's
    indexes held about 1,400 lists at a time, each walked by every full collection).

    Args:
        writes: the dict indexed (not copied).
    """

    __slots__ = ("_groups", "_indexed", "writes")

    def __init__(self, writes: Writes) -> None:
        self.writes = writes
        self._indexed = 0
        self._groups: dict[bytes, dict[bytes, tuple[bytes, ...] | list[bytes]]] = {}

    def _refresh(self) -> None:
        writes, done = self.writes, self._indexed
        n = len(writes)
        if n == done:
            return
        groups = self._groups
        for key in islice(reversed(writes), n - done):  # the keys added since the last refresh
            cut = key.find(SEP, _TABLE)
            owner = key if cut < 0 else key[:cut]
            table = key[:_TABLE]
            owners = groups.get(table)
            if owners is None:
                owners = groups[table] = {}
            group = owners.get(owner)
            if group is None:
                owners[owner] = (key,)
            elif isinstance(group, list):
                group.append(key)
            else:
                owners[owner] = (*group, key) if len(group) < SMALL_GROUP else [*group, key]
        self._indexed = n

    def matching(self, prefix: bytes) -> list[bytes]:
        """The keys of the dict that start with `prefix` (any order)."""
        self._refresh()
        if len(prefix) < _TABLE:  # not within one table: every table
            return [k for owners in self._groups.values() for ks in owners.values() for k in ks if k.startswith(prefix)]
        owners = self._groups.get(prefix[:_TABLE])
        if not owners:
            return []
        cut = prefix.find(SEP, _TABLE)
        if cut >= 0:  # the prefix names one owner: only its keys
            return [k for k in owners.get(prefix[:cut], ()) if k.startswith(prefix)]
        return [k for owner, ks in owners.items() if owner.startswith(prefix) for k in ks if k.startswith(prefix)]


class _Layer:
    """The uncommitted writes of one batch, and their index once a scan asked for it."""

    __slots__ = ("batch_id", "index", "writes")

    def __init__(self, batch_id: int, writes: Writes) -> None:
        self.batch_id = batch_id
        self.writes = writes
        self.index: KeyIndex | None = None

    def matching(self, prefix: bytes) -> list[bytes]:
        if self.index is None:
            self.index = KeyIndex(self.writes)
        return self.index.matching(prefix)


#: RocksDB memory of one worker process, all its partitions together (block cache, memtables included).
DEFAULT_STATE_MEMORY_MB = 256
#: Memtable size of one partition's RocksDB before it is flushed to a file.
WRITE_BUFFER_BYTES = 2 * 2**20
#: A table file is compacted soon after it is written when any DELETION_WINDOW consecutive
#: entries of it hold DELETION_TRIGGER deletes, or half of it is deletes (RocksDB's
#: CompactOnDeletionCollector): the timer, index and run tables are rewritten and deleted in
#: bulk (a purge, a burst of timers), and a scan that meets a long run of tombstones skips
#: them one by one until compaction drops them.
DELETION_WINDOW = 10_000
DELETION_TRIGGER = 5_000
DELETION_RATIO = 0.5


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with `prefix` (None: there is none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


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
        # Uncommitted batches, oldest first: key -> value or None for a delete.
        self._layers: list[_Layer] = []
        # Committed, not yet written to RocksDB (and its index, once a scan asked for it).
        self._unflushed: Writes = {}
        self._unflushed_index: KeyIndex | None = None
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
        opts.add_compact_on_deletion_collector_factory(DELETION_WINDOW, DELETION_TRIGGER, DELETION_RATIO)
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
        self._unflushed_index = None
        self._open()

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        """The value of `key`: the newest uncommitted write, else the committed one."""
        for layer in reversed(self._layers):
            value = layer.writes.get(key, _MISSING)
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

        Costs what the prefix holds: the in-memory writes are found through their `KeyIndex`,
        RocksDB's by a seek bounded by the prefix's end (unbounded, a seek for a prefix with
        no live key walks every tombstone after it until the next live key: 2.5 ms behind
        20,000 deleted index entries, measured, which made each purge's scans cost ~1.5 ms).
        """
        low = prefix if after is None or after < prefix else after
        pending: Writes = {}
        if self._unflushed:
            if self._unflushed_index is None:
                self._unflushed_index = KeyIndex(self._unflushed)
            unflushed = self._unflushed
            for k in self._unflushed_index.matching(prefix):
                if after is None or k > after:
                    pending[k] = unflushed[k]
        for layer in self._layers:
            writes = layer.writes
            for k in layer.matching(prefix):
                if after is None or k > after:
                    pending[k] = writes[k]
        staged = sorted(pending)
        i = 0
        end = prefix_end(prefix)
        if end is None:
            it = self._db.iter()
        else:
            bounds = ReadOptions()
            bounds.set_iterate_upper_bound(end)
            it = self._db.iter(bounds)
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
        if layers and layers[-1].batch_id == batch_id:
            return layers[-1].writes
        if layers and layers[-1].batch_id > batch_id:
            raise InternalError(f"batch {batch_id} is older than the newest staged batch {layers[-1].batch_id}")
        writes: Writes = {}
        layers.append(_Layer(batch_id, writes))
        return writes

    def put(self, key: bytes, value: bytes | None, batch_id: int) -> None:
        """Stage a write (None deletes) as part of batch `batch_id`."""
        self.layer(batch_id)[key] = value

    def commit(self, batch_id: int, checkpoint: int) -> None:
        """Batch `batch_id` (and any older one) committed in Kafka, reaching changelog `checkpoint`.

        Its writes become committed and reach RocksDB with the next flush.
        """
        layers = self._layers
        while layers and layers[0].batch_id <= batch_id:
            self._unflushed.update(layers.pop(0).writes)
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
        self._unflushed_index = None
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
        return sum(len(layer.writes) for layer in self._layers)

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
