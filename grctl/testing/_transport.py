"""The in-process transport of the test environment: topics as lists, a publisher, a client's IO.

What Kafka does for a worker and a client, reduced to what one process needs:

- `Topics`: every topic of the namespace as an append-only list per partition (offsets are
  list positions), written only by a commit (or, for `directives`, by a client's send);
- `InProcessPublisher`: the `Publisher` of the real `GroupCommitter`: a batch's records are
  appended to their topics when it commits, all at once (the transaction);
- `InProcessClientIO`: the real `ClientIO`'s routing of replies (waiters by request id,
  listeners by watch id) fed from the `replies` topic instead of a Kafka consumer;
- `InProcessClient`: the real `Client`, with that IO and history read from the list.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grctl.client._io import ClientIO
from grctl.client.client import Client, to_history_event
from grctl.engine.records import DECODE_ERRORS, history_decoder
from grctl.kafka.connection import Connection
from grctl.kafka.limits import TOPIC_DEFAULT_MAX_BYTES
from grctl.models.history import HistoryEvent
from grctl.worker._session.commit import Batch
from grctl.worker._session.topics import TopicDirectory
from grctl.workflow.handle import WorkflowHandle

if TYPE_CHECKING:
    from grctl.codec import CodecRegistry

__all__ = ["InProcessClient", "InProcessClientIO", "InProcessPublisher", "Record", "Topics"]


@dataclass(frozen=True, slots=True)
class Record:
    """One record of an in-process topic (the parts of a `confluent_kafka.Message` the engine reads)."""

    topic_name: str
    partition_no: int
    offset_no: int
    key_bytes: bytes | None
    value_bytes: bytes
    header_list: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self.topic_name

    def partition(self) -> int:
        return self.partition_no

    def offset(self) -> int:
        return self.offset_no

    def key(self) -> bytes | None:
        return self.key_bytes

    def value(self) -> bytes:
        return self.value_bytes

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self.header_list

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)  # TIMESTAMP_NOT_AVAILABLE: a source record's `timestamp_ms` is None


@dataclass
class Topics:
    """Every topic as a list of records per partition; `on_append` is told of each write."""

    on_append: Callable[[str, int, Record], None] = lambda _t, _p, _r: None
    logs: dict[tuple[str, int], list[Record]] = field(default_factory=lambda: defaultdict(list))

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes, headers: Any = None) -> Record:
        log = self.logs[(topic, partition)]
        rec = Record(topic, partition, len(log), key, value, list(headers) if headers else None)
        log.append(rec)
        self.on_append(topic, partition, rec)
        return rec

    def log(self, topic: str, partition: int) -> list[Record]:
        return self.logs.get((topic, partition), [])

    def of_topic(self, topic: str) -> list[Record]:
        """Every record of `topic`, partition by partition."""
        return [r for (t, _p), log in sorted(self.logs.items()) if t == topic for r in log]


class InProcessPublisher:
    """Commits a `GroupCommitter` batch into `Topics` (the transaction: all of it at once)."""

    def __init__(self, topics: Topics, state_topic: str) -> None:
        self._topics = topics
        self._state_topic = state_topic

    async def publish(self, batch: Batch, offsets: list[tuple[int, int]]) -> dict[int, int]:
        checkpoints: dict[int, int] = {}
        for topic, partition, key, value, headers, _origin in batch.records:
            self._topics.append(topic, max(partition, 0), key, value, headers)
        for partition, writes in batch.state.items():
            for skey, svalue in writes.items():  # the changelog, for completeness (nothing restores from it)
                rec = self._topics.append(self._state_topic, partition, skey, svalue or b"")
                checkpoints[partition] = rec.offset_no
        return checkpoints


class AnyTopic(TopicDirectory):
    """Every topic a step emits to exists, with Kafka's default record limit."""

    def __init__(self) -> None:
        super().__init__(admin=None)  # type: ignore[arg-type]  # never asked: every lookup is overridden

    def _cached(self, topic: str) -> int | None:
        return TOPIC_DEFAULT_MAX_BYTES

    def limit_of(self, topic: str) -> int:
        return TOPIC_DEFAULT_MAX_BYTES


class InProcessClientIO(ClientIO):
    """The client's side of the transport: sends append to `directives`; replies come from `deliver`.

    The routing of replies to waiters and listeners is `ClientIO`'s own.
    """

    def __init__(self, conn: Connection, client_id: str, reply_partition: int, send: Callable[..., None]) -> None:
        # Not ClientIO.__init__: that makes Kafka clients. Only its routing is used.
        self.conn = conn
        self.client_id = client_id
        self.reply_partition = reply_partition
        self._loop = asyncio.get_running_loop()
        self._init_routing()
        self._send = send
        self.assignment: list[Any] = []

    def start(self) -> None:
        """Nothing to start."""

    def deliver(self, rec: Record) -> None:
        """A reply committed to this client's partition of `replies`."""
        self._dispatch([(rec.topic_name, rec.partition_no, rec.offset_no, rec.value_bytes)])

    async def require_workers(self) -> None:
        """The environment's worker always runs."""
        self._check()

    async def wait_for_workers(self, timeout: float) -> None:
        """The environment's worker always runs."""

    async def send(self, topic: str, partition: int, key: bytes, value: bytes, timeout: float = 0.0) -> None:
        """Append the record to its topic (a client's write is not transactional)."""
        self._check()
        self._send(topic, partition, key, value)

    def close(self) -> None:
        """Nothing to close."""


class InProcessClient(Client):
    """The real `Client`, on the environment's transport (see `WorkflowEnvironment.client`)."""

    def __init__(
        self,
        connection: Connection,
        codec: CodecRegistry | None,
        make_io: Callable[[str], InProcessClientIO],
        read_history: Callable[[int], list[Record]],
        handle_class: type[WorkflowHandle],
    ) -> None:
        super().__init__(connection, codec)
        self._make_io = make_io
        self._history_log = read_history
        self.handle_class = handle_class

    async def _ensure(self) -> ClientIO:
        self._fork_guard.check()
        if self._io is None:
            self._io = self._make_io(self.id)
        return self._io

    def _read_history(self, wf_id: str, run_id: str, part: int, since_ms: int) -> list[HistoryEvent]:
        out = []
        for rec in list(self._history_log(part)):
            try:
                hist = history_decoder.decode(rec.value_bytes)
            except DECODE_ERRORS:
                continue
            if hist.run_id == run_id and hist.wf_id == wf_id:
                out.append(to_history_event(hist, part, rec.offset_no))
        return out
