"""Rebalances: the partitions a session owns, taken on assign and released on revoke or loss.

The consumer calls its rebalance callbacks on the consumer thread, from inside `poll`. Each
callback runs its work on the event loop and blocks the consumer thread until it is done:

- assign: open each new partition's RocksDB, restore it from the changelog (restore thread),
  create its processor, hand its store and offsets to the group committer;
- revoke: close the processors (their running steps are cancelled and re-execute on the next
  owner), commit what finished (with EOS v2 a transaction carrying offsets of an older group
  generation is rejected, so this must happen before the callback returns), wait for their
  tasks, close the stores;
- lost: the same without the commit (the partitions already belong to someone else), then the
  session restarts.

By default the group uses the eager protocol: every rebalance revokes the whole assignment and
assigns a complete new one (docs/engine.md "Rebalances" says why not cooperative-sticky). With
`Worker(group_protocol="consumer")` (KIP-848) the callbacks get only the partitions that move,
and assign or unassign those incrementally: the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from grctl.kafka.connection import Connection
from grctl.state.partition_store import PartitionStore, StoreMemory
from grctl.worker._partition.ports import ProcessorServices
from grctl.worker._partition.processor import PartitionProcessor
from grctl.worker._session.commit import GroupCommitter
from grctl.worker._session.errors import SessionRestart
from grctl.worker._session.executor import PartitionTasks
from grctl.worker._session.restore import restore_partition

if TYPE_CHECKING:
    from grctl.worker._edges.sources import SourcePartition
    from grctl.worker._observe.metrics import WorkerMetrics

logger = logging.getLogger("grctl.worker")

#: How long a revoke waits for the cancelled steps and queries of its partitions to unwind.
REVOKE_DRAIN_S = 5.0


class Partitions:
    """The partitions of one session: their processors and the rebalance callbacks.

    Args:
        processors: where the open partitions' processors are kept (shared with the timers).
        conn: the Kafka connection (for restores).
        state_dir: the worker's state folder (one RocksDB per partition under it).
        memory: the RocksDB memory budget the partitions' stores share.
        committer: the group committer.
        tasks: the session's step and query tasks.
        services: what every processor shares.
        fail: ends the session (from any thread).
        on_assigned: called on the loop after each assignment (the worker is ready).
        set_group_metadata: receives the consumer's group metadata (read on its thread).
        metrics: counts rebalances and restores (None: not counted).
        make_source: builds the router of an assigned source partition.
        incremental: the group protocol is KIP-848's (assign and unassign only what moves).
    """

    def __init__(
        self,
        processors: dict[int, PartitionProcessor],
        *,
        conn: Connection,
        state_dir: Path,
        memory: StoreMemory | None = None,
        committer: GroupCommitter,
        tasks: PartitionTasks,
        services: ProcessorServices,
        fail: Callable[[BaseException], None],
        on_assigned: Callable[[], None],
        set_group_metadata: Callable[[Any], None],
        metrics: WorkerMetrics | None = None,
        make_source: Callable[[str, int], SourcePartition] | None = None,
        incremental: bool = False,
    ) -> None:
        #: The group's protocol hands out partitions incrementally (KIP-848): the callbacks get
        #: only the partitions that move.
        self.incremental = incremental
        self.processors = processors
        #: The assigned partitions of source topics (`grctl.worker._edges.sources`).
        self.sources: dict[tuple[str, int], SourcePartition] = {}
        self._make_source = make_source
        self._metrics = metrics
        #: Set when the session tears down: callbacks then release without committing.
        self.tearing_down = False
        self._conn = conn
        self._state_dir = state_dir
        self._memory = memory
        self._committer = committer
        self._tasks = tasks
        self._services = services
        self._fail = fail
        self._on_assigned = on_assigned
        self._set_group_metadata = set_group_metadata
        self._loop = asyncio.get_running_loop()
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix="grctl-restore")

    # ------------------------------------------------------------------ consumer-thread callbacks

    @property
    def memory(self) -> StoreMemory | None:
        """The RocksDB memory budget the stores share (None: the process's default)."""
        return self._memory

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: restore and open the assigned partitions, then start reading them."""
        logger.debug("assign callback: %s", [(tp.topic, tp.partition) for tp in partitions])
        own, sources = self._split(partitions)
        if not self.tearing_down:
            self._run_in_loop(self.assign(own))
            self._run_in_loop(self.assign_sources(sources))
        if self.incremental:
            consumer.incremental_assign(partitions)  # only what this rebalance adds
        else:
            consumer.assign(partitions)
        self._set_group_metadata(consumer.consumer_group_metadata())
        self._loop.call_soon_threadsafe(self._on_assigned)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: commit what finished and release the revoked partitions."""
        logger.debug("revoke callback: %s", [(tp.topic, tp.partition) for tp in partitions])
        self._set_group_metadata(consumer.consumer_group_metadata())
        own, sources = self._split(partitions)
        self._run_in_loop(self.revoke(own, lost=False, sources=sources))
        with contextlib.suppress(KafkaException):
            if self.incremental:
                consumer.incremental_unassign(partitions)  # only what this rebalance takes away
            else:
                consumer.unassign()

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: drop the lost partitions uncommitted; the session restarts."""
        own, sources = self._split(partitions)
        self._run_in_loop(self.revoke(own, lost=True, sources=sources))
        with contextlib.suppress(KafkaException):
            if self.incremental:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()
        self._fail(SessionRestart(f"partitions {[tp.partition for tp in partitions]} were lost"))

    def _split(self, partitions: list[TopicPartition]) -> tuple[list[int], list[tuple[str, int]]]:
        """The namespace's `directives` partitions, and the source topics' (topic, partition)."""
        directives = self._conn.topics.directives
        own = [tp.partition for tp in partitions if tp.topic == directives]
        return own, [(tp.topic, tp.partition) for tp in partitions if tp.topic != directives]

    def _run_in_loop(self, coro: Coroutine[Any, Any, None]) -> None:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            fut.result()
        except Exception as exc:
            logger.exception("rebalance handling failed")
            self._fail(exc)

    # ------------------------------------------------------------------ on the loop

    async def assign(self, parts: list[int]) -> None:
        """Open the partitions of `parts` not open yet."""
        m = self._metrics
        if m is not None:
            m.assign_started(parts)
        for p in parts:
            if p in self.processors:
                continue
            t0 = time.monotonic()
            store = PartitionStore(self._state_dir / str(p), memory=self._memory)
            progress = m.restore_progress if m is not None else None
            try:
                restored = await self._loop.run_in_executor(
                    self._rpool, functools.partial(restore_partition, self._conn, p, store, progress)
                )
            except BaseException:
                store.close()
                raise
            proc = PartitionProcessor(p, store, self._services)
            self.processors[p] = proc
            self._committer.attach(p, store, proc.low_watermark)
            due = proc.start()
            logger.info(
                "partition %d assigned: restored %d changelog records in %.0f ms (%d due steps started, "
                "%d timers due soon loaded)",
                p, restored, (time.monotonic() - t0) * 1000, due, len(proc.timers),
            )  # fmt: skip
            if m is not None:
                m.partition_restored(p, restored, time.monotonic() - t0)
        if m is not None:
            m.assign_done()

    async def assign_sources(self, parts: list[tuple[str, int]]) -> None:
        """Start routing the assigned source partitions (nothing to restore: the group has their offsets)."""
        for topic, p in parts:
            if (topic, p) in self.sources:
                continue
            if self._make_source is None:
                raise SessionRestart(f"partition {topic}[{p}] of a topic this session has no source for")
            src = self._make_source(topic, p)
            self.sources[(topic, p)] = src
            self._committer.attach_source(topic, p, src.watermark)
            logger.info("source partition %s[%d] assigned", topic, p)

    async def revoke(self, parts: list[int], lost: bool, sources: Sequence[tuple[str, int]] = ()) -> None:
        """Release the partitions of `parts` and `sources` (committing what finished unless `lost`)."""
        if self._metrics is not None:
            self._metrics.revoked(lost)
        procs = [self.processors[p] for p in parts if p in self.processors]
        owned_sources = [key for key in sources if key in self.sources]
        if not procs:
            if owned_sources:
                if not lost and not self.tearing_down:
                    with contextlib.suppress(SessionRestart):
                        await self._committer.flush()  # the routed records and their offsets
                self._release_sources(owned_sources)
            return
        for proc in procs:
            proc.close()
        if not lost and not self.tearing_down:
            try:
                await self._committer.flush()
            except SessionRestart:
                logger.warning("final commit on revoke failed; the next owner re-executes from the last commit")
        await self._tasks.drain([p.partition for p in procs], REVOKE_DRAIN_S)
        for proc in procs:
            self._release(proc)
            logger.info("partition %d %s", proc.partition, "lost" if lost else "revoked")
        self._release_sources(owned_sources)

    def _release_sources(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            self.sources.pop(key, None)
            self._committer.detach_source(*key)

    def close_all(self) -> None:
        """Close every processor and store (teardown, after the final commit or abort)."""
        for proc in list(self.processors.values()):
            proc.close()
            self._release(proc)
        self._release_sources(list(self.sources))
        self._rpool.shutdown(wait=False, cancel_futures=True)

    def _release(self, proc: PartitionProcessor) -> None:
        self._committer.detach(proc.partition)
        self.processors.pop(proc.partition, None)
        proc.store.close()
