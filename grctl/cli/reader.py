"""Read runs and history straight from the namespace's topics (no worker needed).

Runs: the ``state`` topic is the compacted changelog of the workers' tables; a run record has
the key ``r/<wf_id>`` and sits on the partition of its workflow id. The latest committed value
of a key is the run's current state (a tombstone deletes it). `StateScanner` reads the topic
*backwards*, one chunk per partition at a time (`read_committed`): reading a chunk forward and
then going to the chunk before it, the first value met for a key is its latest, so the runs come
out most recently changed first and ``list`` can stop as soon as it has a page. It never reads
more than it needs for that page (and never below ``--since``), so the first page costs the
same on a namespace with 100 runs or 100,000.

History: `iter_history` seeks the run's ``history`` partition by time (the run id is a ULID, so
it carries the run's start time) and reads from there, optionally tailing until the run ends.
"""

from __future__ import annotations

import base64
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # untyped re-exports
    AdminClient,
    OffsetSpec,
)
from ulid import ULID

from grctl.client.client import HISTORY_SEEK_SLACK_MS, run_info_from_reply, to_history_event
from grctl.engine.keys import RUN_PREFIX, run_key
from grctl.engine.machine import Machine
from grctl.engine.records import ReplyTo, RunRecord, history_decoder, run_decoder
from grctl.errors import InvalidArgumentError, KafkaSetupError, WorkflowNotFoundError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.models.history import TERMINAL_KINDS, HistoryEvent
from grctl.models.run_info import RunInfo

TERMINAL_STATUSES = {"completed", "failed", "cancelled", "timed_out", "terminated"}
ALL_STATUSES = ("pending", "scheduled", "running", "completed", "failed", "cancelled", "timed_out", "terminated")

#: Records read per partition in the first backward step; it doubles each step up to the max.
FIRST_CHUNK = 1_000
MAX_CHUNK = 200_000
#: One chunk read gives up after this long without progress.
READ_STALL_S = 30.0
OFFSETS_TIMEOUT_S = 15.0


def _consumer(conn: Connection, purpose: str, **extra: Any) -> Consumer:
    cfg = conn.client_config(
        **{
            "group.id": f"grctl.{conn.namespace}.cli-{purpose}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            **extra,
        }
    )
    return Consumer(cfg)


_admins: weakref.WeakKeyDictionary[Connection, AdminClient] = weakref.WeakKeyDictionary()


def admin_for(conn: Connection) -> AdminClient:
    """One admin client per connection (each new one costs a broker round trip)."""
    admin = _admins.get(conn)
    if admin is None:
        admin = _admins[conn] = AdminClient(conn.client_config())
    return admin


def _batch(c: Consumer, timeout: float, n: int = 10_000) -> list[Any]:
    """What the consumer has now, waiting at most `timeout` for the first record.

    (`consume(n, timeout)` alone waits the whole timeout unless n records arrive.)
    """
    first = c.poll(timeout)
    if first is None:
        return []
    return [first, *c.consume(n - 1, 0)]


def list_offsets(conn: Connection, topic: str, partitions: list[int], spec: Any) -> dict[int, int]:
    """Offsets of `partitions` for an `OffsetSpec` (read_committed: `latest` is the LSO)."""
    admin = admin_for(conn)
    request = {TopicPartition(topic, p): spec for p in partitions}
    try:
        futures = admin.list_offsets(request, isolation_level=IsolationLevel.READ_COMMITTED)
        return {tp.partition: fut.result(OFFSETS_TIMEOUT_S).offset for tp, fut in futures.items()}
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot read the offsets of {topic}: {exc.args[0] if exc.args else exc}") from None


def offsets_for_time(conn: Connection, topic: str, partitions: list[int], ts_ms: int) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is >= `ts_ms` (-1: none)."""
    return list_offsets(conn, topic, partitions, OffsetSpec.for_timestamp(ts_ms))  # type: ignore[no-untyped-call]


# --------------------------------------------------------------------------------------------
# Runs


@dataclass(frozen=True, slots=True)
class RunRow:
    """The latest committed record of one workflow id, with where and when it was written."""

    record: RunRecord
    updated_ms: int
    partition: int
    offset: int

    @property
    def wf_id(self) -> str:
        return self.record.wf_id

    @property
    def sort_key(self) -> tuple[int, str]:
        """Rows sort by this key, largest first: most recently changed first."""
        return (self.updated_ms, self.record.wf_id)

    def info(self) -> RunInfo:
        """The run as `describe` reports it."""
        return run_info_from_record(self.record)

    def to_dict(self) -> dict[str, Any]:
        """The row as ``list --json`` prints it."""
        r = self.record
        return {
            "wf_id": r.wf_id,
            "run_id": r.run_id,
            "wf_type": r.wf_type,
            "status": r.status,
            "state": r.state,
            "current_step": r.step,
            "created_ms": r.created_ms or None,
            "started_ms": r.started_ms or None,
            "ended_ms": r.ended_ms or None,
            "updated_ms": self.updated_ms,
        }


def run_info_from_record(rec: RunRecord) -> RunInfo:
    """A `RunInfo` from a committed run record, exactly as a worker's describe answer builds it."""
    _to, reply = Machine.describe(rec, ReplyTo(client_id="", request_id="", partition=0))
    return run_info_from_reply(reply.payload)


@dataclass
class RunFilter:
    """Which runs ``list`` shows. Every given criterion must match."""

    types: set[str] | None = None
    statuses: set[str] | None = None
    since_ms: int | None = None
    text: str | None = None
    before: tuple[int, str] | None = None  # the page cursor: rows strictly after it (sort order)

    def matches(self, row: RunRow) -> bool:
        r = row.record
        if self.types and r.wf_type not in self.types:
            return False
        if self.statuses and r.status not in self.statuses:
            return False
        if self.since_ms is not None and (r.created_ms or row.updated_ms) < self.since_ms:
            return False
        if self.text:
            t = self.text.lower()
            if t not in r.wf_id.lower() and t not in r.wf_type.lower() and t not in r.run_id.lower():
                return False
        return self.before is None or row.sort_key < self.before


def encode_cursor(row: RunRow) -> str:
    """An opaque page token: the sort key of the last row shown."""
    raw = f"{row.updated_ms}:{row.record.wf_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[int, str]:
    """The sort key in a page token; InvalidArgumentError (a ValueError) if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        ms, _, wf_id = raw.partition(":")
        return int(ms), wf_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgumentError(f"{token!r} is not a page token printed by `grctl workflow list`") from None


@dataclass
class _Part:
    low: int  # do not read below (earliest offset, or the --since offset)
    upper: int  # the next backward chunk ends here (exclusive)
    frontier_ms: int = 2**62  # timestamp of the oldest record read so far
    chunk: int = FIRST_CHUNK

    @property
    def exhausted(self) -> bool:
        return self.upper <= self.low


@dataclass
class Page:
    """One page of ``list``: the rows, and the token of the next page (None: no more rows)."""

    rows: list[RunRow]
    next_cursor: str | None
    scanned: int = 0  # records read
    elapsed_s: float = 0.0


@dataclass
class StateScanner:
    """Reads the run records of a namespace's ``state`` topic from its end backwards.

    Keep one scanner to page further back (the TUI's "load more"): it remembers which keys it
    has met, so an older value of a run already returned is never returned again.
    """

    conn: Connection
    since_ms: int | None = None
    partitions: list[int] | None = None
    _parts: dict[int, _Part] = field(default_factory=dict)
    _seen: set[bytes] = field(default_factory=set)
    _consumer: Consumer | None = None
    _buffer: list[RunRow] = field(default_factory=list)  # read and matching, not returned yet
    end_offsets: dict[int, int] = field(default_factory=dict)
    scanned: int = 0

    def __post_init__(self) -> None:
        topic = self.conn.topics.state
        parts = self.partitions if self.partitions is not None else list(range(self.conn.num_partitions))
        self.end_offsets = list_offsets(self.conn, topic, parts, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        lows = list_offsets(self.conn, topic, parts, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        if self.since_ms is not None:
            for p, off in offsets_for_time(self.conn, topic, parts, self.since_ms).items():
                # -1: nothing written since then in this partition.
                lows[p] = max(lows[p], off if off >= 0 else self.end_offsets[p])
        self._parts = {p: _Part(low=max(0, lows[p]), upper=self.end_offsets[p]) for p in parts}

    @property
    def exhausted(self) -> bool:
        """True when every partition has been read back to its start (or to --since)."""
        return all(p.exhausted for p in self._parts.values())

    def close(self) -> None:
        """Close the Kafka consumer."""
        if self._consumer is not None:
            c, self._consumer = self._consumer, None
            c.close()

    def __enter__(self) -> StateScanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def _read(self, ranges: dict[int, tuple[int, int]]) -> dict[int, list[tuple[bytes, bytes | None, int, int]]]:
        """Read [start, end) of each partition (run records only): (key, value, ts_ms, offset)."""
        if self._consumer is None:
            self._consumer = _consumer(
                self.conn,
                "list",
                **{"fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 8 * 1024 * 1024},
            )
        c = self._consumer
        topic = self.conn.topics.state
        out: dict[int, list[tuple[bytes, bytes | None, int, int]]] = {p: [] for p in ranges}
        first_ts: dict[int, int] = {}
        pending = set(ranges)
        assigned = [TopicPartition(topic, p, start) for p, (start, _end) in ranges.items()]
        c.assign(assigned)
        c.resume(assigned)  # librdkafka keeps a partition paused across unassign/assign
        last_progress = time.monotonic()
        try:
            while pending:
                msgs = _batch(c, 0.5)
                if not msgs:
                    if time.monotonic() - last_progress > READ_STALL_S:
                        raise KafkaSetupError(f"reading {topic} stalled at partitions {sorted(pending)}")
                    continue
                last_progress = time.monotonic()
                done = []
                for m in msgs:
                    p = m.partition() or 0
                    e = m.error()
                    if e is not None:
                        if e.code() == KafkaError._PARTITION_EOF:
                            if p in pending:
                                done.append(p)
                                pending.discard(p)
                            continue
                        raise KafkaSetupError(f"reading {topic}[{p}] failed: {e}")
                    if p not in pending:
                        continue
                    off = m.offset() or 0
                    _start, end = ranges[p]
                    if off >= end:
                        pending.discard(p)
                        done.append(p)
                        continue
                    if p not in first_ts:
                        first_ts[p] = m.timestamp()[1]
                    self.scanned += 1
                    key = m.key() or b""
                    if key.startswith(RUN_PREFIX):
                        out[p].append((key, m.value(), m.timestamp()[1], off))
                    if off >= end - 1:
                        pending.discard(p)
                        done.append(p)
                if done:
                    c.pause([TopicPartition(topic, p) for p in done])
        finally:
            c.unassign()
        for p, ts in first_ts.items():
            self._parts[p].frontier_ms = min(self._parts[p].frontier_ms, ts)
        return out

    def _step(self, which: list[int]) -> list[RunRow]:
        """Read one more chunk backwards in each partition of `which`; the new latest rows."""
        ranges = {}
        for p in which:
            part = self._parts[p]
            start = max(part.low, part.upper - part.chunk)
            ranges[p] = (start, part.upper)
        got = self._read(ranges)
        rows: list[RunRow] = []
        for p, (start, _end) in ranges.items():
            part = self._parts[p]
            part.upper = start
            if part.upper <= part.low:
                part.frontier_ms = -1  # nothing older
            part.chunk = min(MAX_CHUNK, part.chunk * 2)
            latest: dict[bytes, tuple[bytes | None, int, int]] = {}
            for key, value, ts, off in got[p]:
                latest[key] = (value, ts, off)
            for key, (value, ts, off) in latest.items():
                if key in self._seen:
                    continue
                self._seen.add(key)
                if value is None:
                    continue  # deleted run
                rows.append(RunRow(run_decoder.decode(value), ts, p, off))
        return rows

    def next_rows(self, flt: RunFilter, limit: int) -> tuple[list[RunRow], bool]:
        """The next `limit` matching rows (most recently changed first) and whether more may exist.

        Reads backwards until no unread record can be newer than the `limit`-th match.
        """
        matches = [r for r in self._buffer if flt.matches(r)]
        first = True
        while True:
            threshold = -(2**62)
            if len(matches) >= limit:
                matches.sort(key=lambda r: r.sort_key, reverse=True)
                threshold = matches[limit - 1].updated_ms
            which = [
                p for p, part in self._parts.items() if not part.exhausted and (first or part.frontier_ms >= threshold)
            ]
            if not which:
                break
            first = False
            matches.extend(r for r in self._step(which) if flt.matches(r))
        matches.sort(key=lambda r: r.sort_key, reverse=True)
        self._buffer = matches[limit:]
        more = len(matches) > limit or not self.exhausted
        return matches[:limit], more

    def find(self, wf_id: str) -> RunRow | None:
        """The latest committed record of `wf_id` (None: no such run). Reads only its partition."""
        key = run_key(wf_id)
        p = partition_for(wf_id, self.conn.num_partitions)
        part = self._parts[p]
        while not part.exhausted:
            start = max(part.low, part.upper - part.chunk)
            got = self._read({p: (start, part.upper)})
            part.upper = start
            part.chunk = min(MAX_CHUNK, part.chunk * 2)
            hit = None
            for k, value, ts, off in got[p]:
                if k == key:
                    hit = (value, ts, off)
            if hit is not None:
                value, ts, off = hit
                return None if value is None else RunRow(run_decoder.decode(value), ts, p, off)
        return None


def list_runs(conn: Connection, flt: RunFilter, limit: int) -> Page:
    """One page of runs, most recently changed first."""
    t0 = time.monotonic()
    with StateScanner(conn, since_ms=flt.since_ms) as scanner:
        rows, more = scanner.next_rows(flt, limit)
        cursor = encode_cursor(rows[-1]) if rows and more else None
        return Page(rows, cursor, scanner.scanned, time.monotonic() - t0)


def find_run(conn: Connection, wf_id: str) -> RunRow:
    """The latest run of `wf_id` from the state topic.

    Raises:
        WorkflowNotFoundError: no run has this workflow id.
    """
    p = partition_for(wf_id, conn.num_partitions)
    with StateScanner(conn, partitions=[p]) as scanner:
        row = scanner.find(wf_id)
    if row is None:
        raise WorkflowNotFoundError(f"workflow id {wf_id!r} not found", wf_id=wf_id)
    return row


class StateTail:
    """Follows the run records written after given offsets (the TUI's live updates)."""

    def __init__(self, conn: Connection, start: dict[int, int]) -> None:
        self.conn = conn
        self._consumer = _consumer(conn, "tail", **{"enable.partition.eof": False})
        self._consumer.assign([TopicPartition(conn.topics.state, p, off) for p, off in start.items()])

    def poll(self, timeout: float = 0.5) -> list[RunRow]:
        """The run records committed since the last call (latest per workflow id)."""
        latest: dict[bytes, RunRow | None] = {}
        for m in _batch(self._consumer, timeout):
            if m.error() is not None:
                continue
            key = m.key() or b""
            if not key.startswith(RUN_PREFIX):
                continue
            value = m.value()
            latest[key] = (
                None if value is None else RunRow(run_decoder.decode(value), m.timestamp()[1], m.partition() or 0, 0)
            )
        return [r for r in latest.values() if r is not None]

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


# --------------------------------------------------------------------------------------------
# History


def iter_history(
    conn: Connection,
    wf_id: str,
    run_id: str,
    *,
    follow: bool = False,
    timeout: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[HistoryEvent]:
    """The history events of one run, in order, from its first record.

    Without `follow`, stops at the committed end of the partition (or at the run's terminal
    event); with `follow`, waits for new events until the terminal one.

    Raises:
        TimeoutError: `timeout` seconds passed before the run ended (follow) or the read finished.
    """
    topic = conn.topics.history
    p = partition_for(wf_id, conn.num_partitions)
    since_ms = max(0, ULID.from_str(run_id).milliseconds - HISTORY_SEEK_SLACK_MS)
    start = offsets_for_time(conn, topic, [p], since_ms)[p]
    end = list_offsets(conn, topic, [p], OffsetSpec.latest())[p]  # type: ignore[no-untyped-call]
    if start < 0:
        start = end  # nothing written since the run began (yet)
    if not follow and start >= end:
        return
    key = wf_id.encode()
    deadline = None if timeout is None else time.monotonic() + timeout
    c = _consumer(conn, "history")
    try:
        c.assign([TopicPartition(topic, p, start)])
        while True:
            if should_stop is not None and should_stop():
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {run_id} of workflow id {wf_id!r} did not end within {timeout:g}s"
                    if follow
                    else f"reading the history of {wf_id!r} took longer than {timeout:g}s"
                )
            for m in _batch(c, 0.25, 5_000):
                e = m.error()
                if e is not None:
                    if e.code() == KafkaError._PARTITION_EOF:
                        if not follow:
                            return
                        continue
                    raise KafkaSetupError(f"reading {topic}[{p}] failed: {e}")
                off = m.offset() or 0
                if m.key() == key:
                    rec = history_decoder.decode(m.value() or b"")
                    if rec.run_id == run_id and rec.wf_id == wf_id:
                        event = to_history_event(rec, p, off)
                        yield event
                        if event.kind in TERMINAL_KINDS:
                            return
                if not follow and off >= end - 1:
                    return
    finally:
        c.close()
