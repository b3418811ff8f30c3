"""The runs in flight of a namespace and their histories, read from its topics (no worker needed).

`grctl deploy check` and `grctl replay --namespace` read here: the `state` changelog whole (the
latest run record of each workflow id, up to the last stable offsets, `read_committed`) and the
`history` topic from the oldest of those runs' starts. What they read is a committed prefix of
each partition, so they run beside live workers, never join the worker group, and write nothing.

Memory holds the run records of the runs not ended (an ended run's record is dropped as soon as
it is read) and the histories asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # untyped re-export

from grctl.client.client import HISTORY_SEEK_SLACK_MS, to_history_event
from grctl.engine.keys import RUN_PREFIX
from grctl.engine.records import DECODE_ERRORS, RunRecord, history_decoder, run_decoder
from grctl.kafka.connection import Connection
from grctl.kafka.offsets import OFFSETS_TIMEOUT_S, latest_offsets, offsets_for_time
from grctl.kafka.partitioner import partition_for
from grctl.kafka.reading import read_partitions, reading_consumer
from grctl.models.history import HistoryEvent
from grctl.models.run_info import TERMINAL_STATUSES

__all__ = ["InFlight", "histories_of", "runs_in_flight"]

#: How long reading one topic may take.
READ_TIMEOUT_S: Final = 600.0


@dataclass
class InFlight:
    """The runs not ended of a namespace, as its state topic holds them.

    Attributes:
        runs: their latest run records (one per workflow id).
        undecodable: run records that could not be decoded (skipped; `grctl verify` names them).
        offsets: per partition, the state topic's last stable offset read up to.
    """

    runs: list[RunRecord] = field(default_factory=list)
    undecodable: int = 0
    offsets: dict[int, int] = field(default_factory=dict)


def runs_in_flight(
    conn: Connection, *, types: Iterable[str] | None = None, timeout: float = READ_TIMEOUT_S
) -> InFlight:
    """The latest run record of every workflow id whose run has not ended (of `types`, if given).

    Raises:
        KafkaSetupError: the state topic cannot be read (unreachable broker, missing permissions).
        TimeoutError: it was not read to its end within `timeout`.
    """
    wanted = set(types) if types is not None else None
    topic = conn.topics.state
    parts = list(range(conn.num_partitions))
    admin = AdminClient(conn.client_config())
    ends = latest_offsets(admin, topic, parts, timeout=OFFSETS_TIMEOUT_S)
    found = InFlight(offsets=ends)
    todo = {p: (0, end) for p, end in ends.items() if end > 0}
    if not todo:
        return found
    latest: dict[bytes, RunRecord] = {}
    consumer = reading_consumer(conn, "inflight")
    try:
        for msg in read_partitions(consumer, topic, todo, timeout=timeout):
            key = msg.key() or b""
            if not key.startswith(RUN_PREFIX):
                continue
            value = msg.value()
            if value is None:
                latest.pop(key, None)
                continue
            try:
                run = run_decoder.decode(value)
            except DECODE_ERRORS:
                found.undecodable += 1
                continue
            if run.status in TERMINAL_STATUSES or (wanted is not None and run.wf_type not in wanted):
                latest.pop(key, None)
            else:
                latest[key] = run
    finally:
        consumer.close()
    found.runs = list(latest.values())
    return found


def histories_of(
    conn: Connection, runs: Iterable[RunRecord], *, timeout: float = READ_TIMEOUT_S
) -> dict[str, list[HistoryEvent]]:
    """The history events of each run (by run id, in order), read from the history topic.

    Each partition is read once, from the earliest start among its runs (less a minute of
    slack) to its last stable offset. A run whose first events expired from the history topic
    gets what is left (the replayer reports it incomplete).
    """
    by_part: dict[int, dict[str, str]] = {}  # partition -> run id -> wf id
    since: dict[int, int] = {}
    for run in runs:
        p = partition_for(run.wf_id, conn.num_partitions)
        by_part.setdefault(p, {})[run.run_id] = run.wf_id
        start = run.created_ms or run.started_ms
        since[p] = min(since.get(p, start), start)
    out: dict[str, list[HistoryEvent]] = {rid: [] for ids in by_part.values() for rid in ids}
    if not by_part:
        return out
    topic = conn.topics.history
    admin = AdminClient(conn.client_config())
    ends = latest_offsets(admin, topic, sorted(by_part), timeout=OFFSETS_TIMEOUT_S)
    todo: dict[int, tuple[int, int]] = {}
    for p, ts in since.items():
        start = offsets_for_time(admin, topic, [p], max(0, ts - HISTORY_SEEK_SLACK_MS))[p]
        if 0 <= start < ends[p]:
            todo[p] = (start, ends[p])
    if not todo:
        return out
    consumer = reading_consumer(conn, "inflight-history", **{"enable.partition.eof": False})
    try:
        for msg in read_partitions(consumer, topic, todo, timeout=timeout, skip_errors=True, batch=5_000):
            try:
                rec = history_decoder.decode(msg.value() or b"")
            except DECODE_ERRORS:
                continue
            p = msg.partition() or 0
            if by_part[p].get(rec.run_id) == rec.wf_id:
                out[rec.run_id].append(to_history_event(rec, p, msg.offset() or 0))
    finally:
        consumer.close()
    return out
