"""`verify_namespace`: read a namespace's history and state and check them (`grctl verify`).

Reads every `history` partition (from `since` ago, or from the start) and the whole `state`
changelog (the latest value of each key) up to their last stable offsets, `read_committed`,
and hands them to `grctl.engine.verify.Checker`. It needs no worker, and runs beside live
workers: what it reads is a committed prefix of each partition. Run it after an incident, or
at the end of a fault test, when the load has stopped (a run still moving is judged only after
it has been quiet for `settle`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Final

from confluent_kafka import Message
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # untyped re-export

from grctl.engine.records import DECODE_ERRORS, history_decoder
from grctl.engine.verify import DEFAULT_SETTLE_MS, Checker, VerifyReport
from grctl.errors import InvalidArgumentError
from grctl.kafka.connection import Connection
from grctl.kafka.offsets import OFFSETS_TIMEOUT_S, latest_offsets, offsets_for_time
from grctl.kafka.reading import read_partitions, reading_consumer

__all__ = ["verify_namespace"]

#: How long reading one topic may take before the check gives up.
READ_TIMEOUT_S: Final = 600.0


def verify_namespace(
    conn: Connection,
    *,
    since: timedelta | None = None,
    settle: timedelta = timedelta(milliseconds=DEFAULT_SETTLE_MS),
    timeout: float = READ_TIMEOUT_S,
) -> VerifyReport:
    """Check every run of the namespace for lost and duplicated transitions and orphaned state.

    Args:
        conn: the namespace.
        since: judge only runs started in this last period (None: every run in the history).
        settle: a run quiet for this long is not about to move (see `grctl.engine.verify`).
        timeout: seconds each topic's read may take.

    Raises:
        InvalidArgumentError: `since` or `settle` is not a positive timedelta.
        KafkaSetupError: the topics cannot be read (unreachable broker, missing permissions).
        TimeoutError: a topic was not read to its end within `timeout`.
    """
    for name, value in (("since", since), ("settle", settle)):
        if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
            raise InvalidArgumentError(f"{name} must be a positive timedelta, got {value!r}", argument=name)
    now_ms = int(time.time() * 1000)
    checker = Checker(now_ms, int(settle.total_seconds() * 1000))
    parts = list(range(conn.num_partitions))
    admin = AdminClient(conn.client_config())
    history, state = conn.topics.history, conn.topics.state
    starts = {p: 0 for p in parts}
    if since is not None:
        found = offsets_for_time(admin, history, parts, now_ms - int(since.total_seconds() * 1000))
        starts = {p: (off if off >= 0 else -1) for p, off in found.items()}

    def on_history(msg: Message) -> None:
        try:
            checker.add_history(history_decoder.decode(msg.value() or b""))
        except DECODE_ERRORS:
            checker.add_undecodable()

    _read(conn, admin, history, starts, on_history, timeout)
    latest: dict[bytes, bytes | None] = {}

    def on_state(msg: Message) -> None:
        key = msg.key()
        if key is not None:
            latest[key] = msg.value()

    _read(conn, admin, state, {p: 0 for p in parts}, on_state, timeout)
    for key, last in latest.items():
        checker.add_state(key, last)
    return checker.report()


def _read(
    conn: Connection,
    admin: AdminClient,
    topic: str,
    starts: dict[int, int],
    on_record: Callable[[Message], None],
    timeout: float,
) -> None:
    """Every committed record of `topic` from `starts` (-1: nothing to read) to the last stable offsets."""
    ends = latest_offsets(admin, topic, sorted(starts), timeout=OFFSETS_TIMEOUT_S)
    todo = {p: (start, ends[p]) for p, start in starts.items() if 0 <= start < ends[p]}
    if not todo:
        return
    consumer = reading_consumer(conn, "verify")
    try:
        for msg in read_partitions(consumer, topic, todo, timeout=timeout):
            on_record(msg)
    finally:
        consumer.close()
