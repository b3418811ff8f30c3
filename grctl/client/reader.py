"""Runs and history for the CLI, the TUI and the web UI (`grctl.cli.reader` re-exports it).

Listing: `RunLister` asks the workers (`Client.list_workflows`: every partition's owner answers
from its run index), so a page costs the same on a namespace with 100 runs or 100 million, and
nothing reads the state topic. It needs running workers.

One run without a worker: the ``state`` topic is the compacted changelog of the workers'
tables; a run record has the key ``r/<wf_id>`` and sits on the partition of its workflow id.
`find_run` reads that one partition *backwards*, one chunk at a time (`read_committed`):
reading a chunk forward and then going to the chunk before it, the first value met for the key
is its latest, so it stops as soon as it meets the run (and retention bounds the partition).

History: `iter_history` seeks the run's ``history`` partition by time (the run id is a ULID, so
it carries the run's start time) and reads from there, optionally tailing until the run ends.

Every read goes through the Kafka toolkit (`grctl.kafka.offsets`, `grctl.kafka.reading`).

May import: `grctl.client`, `grctl.engine`, `grctl.kafka`, `grctl.models`, `grctl.errors`, confluent-kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # untyped re-export
from ulid import ULID

from grctl.client.client import HISTORY_SEEK_SLACK_MS, Client, run_info_from_reply, to_history_event
from grctl.client.listing import ListFilter, VersionCount, decode_page_token
from grctl.engine.keys import RUN_PREFIX, run_key
from grctl.engine.machine import Machine
from grctl.engine.records import DECODE_ERRORS, ReplyTo, RunRecord, history_decoder, run_decoder
from grctl.errors import KafkaSetupError, WorkflowNotFoundError
from grctl.kafka.connection import Connection
from grctl.kafka.offsets import OFFSETS_TIMEOUT_S, earliest_offsets, latest_offsets, offsets_for_time
from grctl.kafka.partitioner import partition_for
from grctl.kafka.reading import read_partitions, reading_consumer
from grctl.models import run_info
from grctl.models.history import TERMINAL_KINDS, HistoryEvent
from grctl.models.run_info import RunInfo, RunStateKind, RunStatus

#: The statuses of a run that ended, as strings (`grctl.models.run_info.TERMINAL_STATUSES`).
TERMINAL_STATUSES: frozenset[str] = frozenset(s.value for s in run_info.TERMINAL_STATUSES)
#: Every run status, in `RunStatus` order.
ALL_STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus)

#: Records read per partition in the first backward step; it doubles each step up to the max.
FIRST_CHUNK = 1_000
MAX_CHUNK = 200_000
#: One chunk read gives up after this long without progress.
READ_STALL_S = 30.0
#: How long a listing waits for the partitions' answers.
LIST_TIMEOUT_S = 10.0


def read_consumer(conn: Connection, purpose: str, **extra: Any) -> Consumer:
    """A consumer of committed records for the readers of the CLI and the UI (group ``grctl.<ns>.cli-<purpose>``)."""
    return reading_consumer(conn, f"cli-{purpose}", **{"fetch.wait.max.ms": 50, **extra})


_admins: weakref.WeakKeyDictionary[Connection, AdminClient] = weakref.WeakKeyDictionary()


def admin_for(conn: Connection) -> AdminClient:
    """One admin client per connection (each new one costs a broker round trip)."""
    admin = _admins.get(conn)
    if admin is None:
        admin = _admins[conn] = AdminClient(conn.client_config())
    return admin


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

    @classmethod
    def from_listing(cls, info: RunInfo) -> RunRow:
        """A row from a run as the workers' listing reports it."""

        def ms(value: datetime | None) -> int:
            return int(value.timestamp() * 1000) if value is not None else 0

        record = RunRecord(
            run_id=info.id, wf_id=info.wf_id, wf_type=info.wf_type, status=info.status,
            state=info.state or RunStateKind.start, seq=info.step_seq, step=info.current_step,
            created_ms=ms(info.created_at), started_ms=ms(info.started_at), ended_ms=ms(info.ended_at),
            timeout_ms=int(info.timeout * 1000) if info.timeout else None, error=info.error,
            version=info.version, missing=info.awaiting,
        )  # fmt: skip
        return cls(record, record.ended_ms or record.started_ms, -1, -1)

    def to_dict(self) -> dict[str, Any]:
        """The row as ``list --json`` prints it."""
        r = self.record
        return {
            "wf_id": r.wf_id,
            "run_id": r.run_id,
            "wf_type": r.wf_type,
            "version": r.version,
            "status": r.status,
            "state": r.state,
            "current_step": r.step,
            "awaiting": r.missing,
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
    page_token: str | None = None  # the next page of an earlier listing with the same filters

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
        return True


@dataclass
class _Part:
    low: int  # do not read below (earliest offset, or the --since offset)
    upper: int  # the next backward chunk ends here (exclusive)
    chunk: int = FIRST_CHUNK

    @property
    def exhausted(self) -> bool:
        return self.upper <= self.low


@dataclass
class Page:
    """One page of ``list``: the rows, and the token of the next page (None: no more rows)."""

    rows: list[RunRow]
    next_cursor: str | None
    elapsed_s: float = 0.0
    unavailable_partitions: list[int] = field(default_factory=list)
    counts: dict[str, dict[str, int]] | None = None
    versions: list[VersionCount] | None = None


class RunLister:
    """Lists runs through the workers (`Client.list_workflows`) from code that is not async.

    Owns a `Client` on an event loop of its own thread, so a TUI or a web UI reuses one client
    for every page. Close it when done (or use it as a context manager).

    Args:
        conn: the namespace.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grctl-lister", daemon=True)
        self._thread.start()
        self._client = Client(conn)
        self._closed = False
        self._lock = threading.Lock()  # no page is scheduled once close() began

    def page(self, flt: RunFilter, limit: int, *, counts: bool = False, timeout: float = LIST_TIMEOUT_S) -> Page:
        """One page of runs matching `flt`, newest first.

        Raises:
            InvalidArgumentError: a bad filter or page token.
            NoWorkerAnsweredError: the namespace has no running worker.
        """
        call = self._client.list_workflows(
            status=sorted(flt.statuses) if flt.statuses else None,
            workflow_type=sorted(flt.types) if flt.types else None,
            started_after=_started_after(flt), limit=limit, page_token=flt.page_token, text=flt.text,
            counts=counts, timeout=timeout,
        )  # fmt: skip
        t0 = time.monotonic()
        with self._lock:
            if self._closed:  # a view shutting down
                call.close()
                raise KafkaSetupError("this run lister is closed")
            future = asyncio.run_coroutine_threadsafe(call, self._loop)
        result = future.result(timeout + OFFSETS_TIMEOUT_S)
        return Page(
            [RunRow.from_listing(info) for info in result.runs],
            result.next_page_token,
            time.monotonic() - t0,
            result.unavailable_partitions,
            result.counts,
            result.versions,
        )

    def close(self) -> None:
        """Close the client and stop the loop."""
        with self._lock:
            self._closed = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(OFFSETS_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(OFFSETS_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> RunLister:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class StateScanner:
    """Reads run records of a namespace's ``state`` topic from its end backwards (`find`)."""

    conn: Connection
    partitions: list[int] | None = None
    _parts: dict[int, _Part] = field(default_factory=dict)
    _consumer: Consumer | None = None
    end_offsets: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        topic = self.conn.topics.state
        parts = self.partitions if self.partitions is not None else list(range(self.conn.num_partitions))
        admin = admin_for(self.conn)
        self.end_offsets = latest_offsets(admin, topic, parts)
        lows = earliest_offsets(admin, topic, parts)
        self._parts = {p: _Part(low=max(0, lows[p]), upper=self.end_offsets[p]) for p in parts}

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
            self._consumer = read_consumer(
                self.conn,
                "list",
                **{"fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 8 * 1024 * 1024},
            )
        out: dict[int, list[tuple[bytes, bytes | None, int, int]]] = {p: [] for p in ranges}
        for m in read_partitions(self._consumer, self.conn.topics.state, ranges, stall_s=READ_STALL_S, wait=0.5):
            key = m.key() or b""
            if key.startswith(RUN_PREFIX):
                out[m.partition() or 0].append((key, m.value(), m.timestamp()[1], m.offset() or 0))
        return out

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


def list_filter(flt: RunFilter) -> ListFilter:
    """The client's listing filter for a `RunFilter`."""
    return ListFilter.of(
        sorted(flt.statuses) if flt.statuses else None,
        sorted(flt.types) if flt.types else None,
        _started_after(flt),
        flt.text,
    )


def _started_after(flt: RunFilter) -> datetime | None:
    return datetime.fromtimestamp(flt.since_ms / 1000, UTC) if flt.since_ms is not None else None


def check_page_token(flt: RunFilter, namespace: str) -> None:
    """Check `flt.page_token` before asking anyone.

    Raises:
        InvalidArgumentError: not a page token, or one of another namespace or other filters.
    """
    if flt.page_token is not None:
        decode_page_token(flt.page_token, namespace, list_filter(flt))


def list_runs(conn: Connection, flt: RunFilter, limit: int) -> Page:
    """One page of runs, newest first (one `RunLister` call)."""
    with RunLister(conn) as lister:
        return lister.page(flt, limit)


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
    admin = admin_for(conn)
    start = offsets_for_time(admin, topic, [p], since_ms)[p]
    end = latest_offsets(admin, topic, [p])[p]
    if start < 0:
        start = end  # nothing written since the run began (yet)
    if not follow and start >= end:
        return
    key = wf_id.encode()
    c = read_consumer(conn, "history")
    try:
        records = read_partitions(
            c, topic, {p: (start, None if follow else end)}, timeout=timeout, should_stop=should_stop, batch=5_000
        )
        try:
            for m in records:
                if m.key() != key:
                    continue
                try:
                    rec = history_decoder.decode(m.value() or b"")
                except DECODE_ERRORS:
                    continue  # not a record grctl wrote: not part of this run's history
                if rec.run_id == run_id and rec.wf_id == wf_id:
                    event = to_history_event(rec, p, m.offset() or 0)
                    yield event
                    if event.kind in TERMINAL_KINDS:
                        return
        except TimeoutError:
            raise TimeoutError(
                f"run {run_id} of workflow id {wf_id!r} did not end within {timeout:g}s"
                if follow
                else f"reading the history of {wf_id!r} took longer than {timeout:g}s"
            ) from None
    finally:
        c.close()
