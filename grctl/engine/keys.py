"""Every key layout of the partition state tables, built (and parsed) here and nowhere else.

One RocksDB per partition holds several tables, told apart by a two-byte prefix; the same
keys are the keys of the `state` changelog topic (DESIGN.md §4). Parts of a key are joined by
a NUL byte, which neither workflow ids nor run ids contain in practice and which sorts before
every printable character, so all keys of one workflow id (or one run) are contiguous.

| table | key | value |
|---|---|---|
| runs | `r/<wf_id>` | `RunRecord` of the latest run of the workflow id |
| store | `s/<wf_id>\\0<run_id>\\0<key>` | a store value (user codec bytes) |
| inbox | `i/<wf_id>\\0<seq:016d>` | `InboxEntry`, in arrival order |
| timers | `t/<due_ms:016d>\\0<wf_id>\\0<kind>` | `TimerEntry`, in due order: a run's own timers |
| expiries | `e/<due_ms:016d>\\0<wf_id>\\0retention` | `TimerEntry`, in due order: ended runs' retention |
| journal | `j/<wf_id>\\0<run_id>\\0<step seq:08d>\\0<position:06d>` | `[kind, name, value]` |
| children | `c/<wf_id>\\0<run_id>\\0<child wf_id>` | a child's outcome dict |
| run index | `x/<status>\0<newest first:016d>\0<wf_id>` | the run id: every latest run, by status, newest first |
| run counts | `n/<status>\0<wf_type>` | how many latest runs have that status and type |
| version counts | `v/<wf_type>\0<version:08d>\0<status>` | runs not ended of a type and version, by status (0 kept) |
| schedules | `k/<schedule_id>` | `ScheduleRecord`: spec, what it starts, recent ticks (its next tick is a `t/` timer) |
| limiters | `L/<name>` | `LimiterRecord`: what a limiter allows, its bucket and counters |
| limiter waiters | `W/<name>\\0<arrival:016d>` | `LimitWaiter`: a request for a permit, in arrival order |
| limiter holders | `H/<name>\\0<holder>` | `LimitHolder`: a permit held (`<run_id>/<acquire_id>`) |
| partition | `p/<name>` | per-partition facts kept in the changelog (`p/retention`: every ended run has a timer) |
| meta | `m/checkpoint` | the changelog offset RocksDB has reached, and when (RocksDB only, never produced) |
"""

from __future__ import annotations

from typing import Final

RUN_PREFIX: Final = b"r/"
STORE_PREFIX: Final = b"s/"
INBOX_PREFIX: Final = b"i/"
TIMER_PREFIX: Final = b"t/"
#: Retention timers have a table of their own: they are background work, fired at a pace of their
#: own (`grctl.worker._session.timers`), and a backlog of them must not hide the run timers due
#: after it from a loader that reads a table in due order (issue 24). Retention timers armed before
#: this table existed stay in `t/` and fire from there.
EXPIRY_PREFIX: Final = b"e/"
#: The timer kind kept in the expiry table.
EXPIRY_KIND: Final = "retention"
JOURNAL_PREFIX: Final = b"j/"
CHILD_PREFIX: Final = b"c/"
META_PREFIX: Final = b"m/"
PARTITION_PREFIX: Final = b"p/"
INDEX_PREFIX: Final = b"x/"
COUNT_PREFIX: Final = b"n/"
VERSION_PREFIX: Final = b"v/"
SCHEDULE_PREFIX: Final = b"k/"
LIMITER_PREFIX: Final = b"L/"
WAITER_PREFIX: Final = b"W/"
HOLDER_PREFIX: Final = b"H/"
SEP: Final = b"\x00"

#: Set once every ended run of the partition has a retention timer (runs ended before
#: retention existed get one when their partition is first assigned).
RETENTION_MARKER: Final = PARTITION_PREFIX + b"retention"
#: Set once the run index and counts of the partition hold every run (runs of older workers
#: are indexed when their partition is first assigned).
INDEX_MARKER: Final = PARTITION_PREFIX + b"index"
#: Set once the version counts of the partition hold every run not ended (runs of older
#: workers are counted, as version 1, when their partition is first assigned).
VERSIONS_MARKER: Final = PARTITION_PREFIX + b"versions"
#: Started times are stored as this minus the time, so that the index sorts newest first.
_NEWEST_FIRST: Final = 10**16 - 1

#: The restore checkpoint: the last changelog offset whose writes RocksDB holds.
CHECKPOINT_KEY: Final = META_PREFIX + b"checkpoint"


def run_key(wf_id: str) -> bytes:
    """Key of the run record of `wf_id`."""
    return RUN_PREFIX + wf_id.encode()


def schedule_key(schedule_id: str) -> bytes:
    """Key of the record of schedule `schedule_id`."""
    return SCHEDULE_PREFIX + schedule_id.encode()


def limiter_key(name: str) -> bytes:
    """Key of the record of limiter `name`."""
    return LIMITER_PREFIX + name.encode()


def limiter_name_of_key(key: bytes) -> str:
    """The name of a limiter record's key (the inverse of `limiter_key`)."""
    return key[len(LIMITER_PREFIX) :].decode()


def waiter_prefix(name: str) -> bytes:
    """Prefix of the waiting requests of limiter `name`."""
    return WAITER_PREFIX + name.encode() + SEP


def waiter_key(name: str, arrival: int) -> bytes:
    """Key of a waiting request of limiter `name` (arrival order)."""
    return waiter_prefix(name) + b"%016d" % arrival


def holder_prefix(name: str) -> bytes:
    """Prefix of the held permits of limiter `name`."""
    return HOLDER_PREFIX + name.encode() + SEP


def holder_key(name: str, holder: str) -> bytes:
    """Key of permit `holder` of limiter `name`."""
    return holder_prefix(name) + holder.encode()


def schedule_id_of_key(key: bytes) -> str:
    """The schedule id of a schedule record's key (the inverse of `schedule_key`)."""
    return key[len(SCHEDULE_PREFIX) :].decode()


def wf_id_of_run_key(key: bytes) -> str:
    """The workflow id of a run record's key (the inverse of `run_key`)."""
    return key[len(RUN_PREFIX) :].decode()


def store_key(wf_id: str, run_id: str, key: str) -> bytes:
    """Key of one store value of one run."""
    return STORE_PREFIX + wf_id.encode() + SEP + run_id.encode() + SEP + key.encode()


def store_prefix(wf_id: str, run_id: str) -> bytes:
    """Key prefix of every store value of one run."""
    return STORE_PREFIX + wf_id.encode() + SEP + run_id.encode() + SEP


def inbox_key(wf_id: str, seq: int) -> bytes:
    """Key of an inbox entry; the entries of one workflow id sort by arrival."""
    return INBOX_PREFIX + wf_id.encode() + SEP + b"%016d" % seq


def timer_table(kind: str) -> bytes:
    """The table of a timer of `kind`: the expiry table for retention, else the timer table."""
    return EXPIRY_PREFIX if kind == EXPIRY_KIND else TIMER_PREFIX


def timer_key(due_ms: int, wf_id: str, kind: str) -> bytes:
    """Key of a timer, in the table of its kind (`timer_table`), which sorts by due time."""
    return timer_table(kind) + b"%016d" % due_ms + SEP + wf_id.encode() + SEP + kind.encode()


def timer_bound(due_ms: int, table: bytes = TIMER_PREFIX) -> bytes:
    """A key of `table` above every timer due before `due_ms` and below every other (no timer's key)."""
    return table + b"%016d" % due_ms


def journal_prefix(wf_id: str, run_id: str, seq: int) -> bytes:
    """Key prefix of the journal of one step (step number `seq` of one run)."""
    return JOURNAL_PREFIX + wf_id.encode() + SEP + run_id.encode() + SEP + b"%08d" % seq + SEP


def journal_run_prefix(wf_id: str, run_id: str) -> bytes:
    """Key prefix of the journals of every step of one run."""
    return JOURNAL_PREFIX + wf_id.encode() + SEP + run_id.encode() + SEP


def journal_key(prefix: bytes, position: int) -> bytes:
    """Key of the journal entry at `position` of the step whose `journal_prefix` is `prefix`."""
    return prefix + b"%06d" % position


def journal_prefix_of(key: bytes) -> bytes:
    """The `journal_prefix` of a journal entry's key."""
    return key[: key.rindex(SEP) + 1]


def journal_run_prefix_of(prefix: bytes) -> bytes:
    """The `journal_run_prefix` of a step's `journal_prefix` (its step number and separator cut)."""
    return prefix[: prefix.rindex(SEP, 0, len(prefix) - 1) + 1]


def child_prefix(wf_id: str, run_id: str) -> bytes:
    """Key prefix of the recorded outcomes of one run's children."""
    return CHILD_PREFIX + wf_id.encode() + SEP + run_id.encode() + SEP


def child_key(wf_id: str, run_id: str, child_wf_id: str) -> bytes:
    """Key of the recorded outcome of a child run, kept for the parent's awaiting steps."""
    return CHILD_PREFIX + wf_id.encode() + SEP + run_id.encode() + SEP + child_wf_id.encode()


def index_prefix(status: str) -> bytes:
    """Key prefix of the index entries of one status."""
    return INDEX_PREFIX + status.encode() + SEP


def index_key(status: str, started_ms: int, wf_id: str) -> bytes:
    """Key of a run in the index: under its status, newest first, then by workflow id."""
    return index_prefix(status) + b"%016d" % (_NEWEST_FIRST - started_ms) + SEP + wf_id.encode()


def index_position(key: bytes) -> bytes:
    """The status-free part of an index key (newest-first time and workflow id): a page cursor."""
    return key[key.index(SEP) + 1 :]


def index_wf_id(key: bytes) -> str:
    """The workflow id of an index key."""
    return key[key.rindex(SEP) + 1 :].decode()


def count_key(status: str, wf_type: str) -> bytes:
    """Key of the count of latest runs of one status and type."""
    return COUNT_PREFIX + status.encode() + SEP + wf_type.encode()


def count_of_key(key: bytes) -> tuple[str, str]:
    """(status, workflow type) of a count key."""
    status, _, wf_type = key[len(COUNT_PREFIX) :].partition(SEP)
    return status.decode(), wf_type.decode()


def version_count_key(wf_type: str, version: int, status: str) -> bytes:
    """Key of the count of latest runs of one type and version with one (non-terminal) status."""
    return VERSION_PREFIX + wf_type.encode() + SEP + b"%08d" % version + SEP + status.encode()


def version_count_of_key(key: bytes) -> tuple[str, int, str]:
    """(workflow type, version, status) of a version count key."""
    wf_type, version, status = key[len(VERSION_PREFIX) :].split(SEP)
    return wf_type.decode(), int(version), status.decode()


def wf_id_of(key: bytes) -> str | None:
    """The workflow id a state key belongs to (None for metadata keys and unknown tables)."""
    prefix, rest = key[:2], key[2:]
    if prefix == RUN_PREFIX:
        return rest.decode()
    if prefix in (STORE_PREFIX, INBOX_PREFIX, JOURNAL_PREFIX, CHILD_PREFIX):
        return rest.split(SEP, 1)[0].decode()
    if prefix in (TIMER_PREFIX, EXPIRY_PREFIX):
        parts = rest.split(SEP)
        return parts[1].decode() if len(parts) == 3 else None
    if prefix == INDEX_PREFIX:
        return index_wf_id(key)
    return None
