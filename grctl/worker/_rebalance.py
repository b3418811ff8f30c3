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

The group uses the eager protocol: every rebalance revokes the whole assignment and assigns a
complete new one (docs/engine.md "Rebalances" says why not cooperative-sticky).

May import: `grctl.state`, `._commit`, `._executor`, `._partition`, `._restore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from grctl.kafka.connection import Connection
from grctl.state.partition_store import PartitionStore, StoreMemory
from grctl.worker._commit import GroupCommitter
from grctl.worker._errors import SessionRestart
from grctl.worker._executor import PartitionTasks
from grctl.worker._partition import PartitionProcessor, ProcessorServices
from grctl.worker._restore import restore_partition

if TYPE_CHECKING:
    from grctl.worker._metrics import WorkerMetrics

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
    ) -> None:
        self.processors = processors
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
        logger.debug("assign callback: %s", [tp.partition for tp in partitions])
        if not self.tearing_down:
            self._run_in_loop(self.assign([tp.partition for tp in partitions]))
        consumer.assign(partitions)
        self._set_group_metadata(consumer.consumer_group_metadata())
        self._loop.call_soon_threadsafe(self._on_assigned)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: commit what finished and release the revoked partitions."""
        logger.debug("revoke callback: %s", [tp.partition for tp in partitions])
        self._set_group_metadata(consumer.consumer_group_metadata())
        self._run_in_loop(self.revoke([tp.partition for tp in partitions], lost=False))
        with contextlib.suppress(KafkaException):
            consumer.unassign()

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance callback: drop the lost partitions uncommitted; the session restarts."""
        self._run_in_loop(self.revoke([tp.partition for tp in partitions], lost=True))
        with contextlib.suppress(KafkaException):
            consumer.unassign()
        self._fail(SessionRestart(f"partitions {[tp.partition for tp in partitions]} were lost"))

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
            proc.start()
            logger.info(
                "partition %d assigned: restored %d changelog records in %.0f ms (%d timers due soon loaded)",
                p, restored, (time.monotonic() - t0) * 1000, len(proc.timers),
            )  # fmt: skip
            if m is not None:
                m.partition_restored(p, restored, time.monotonic() - t0)
        if m is not None:
            m.assign_done()

    async def revoke(self, parts: list[int], lost: bool) -> None:
        """Release the partitions of `parts` (committing what finished unless `lost`)."""
        if self._metrics is not None:
            self._metrics.revoked(lost)
        procs = [self.processors[p] for p in parts if p in self.processors]
        if not procs:
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

    def close_all(self) -> None:
        """Close every processor and store (teardown, after the final commit or abort)."""
        for proc in list(self.processors.values()):
            proc.close()
            self._release(proc)
        self._rpool.shutdown(wait=False, cancel_futures=True)

    def _release(self, proc: PartitionProcessor) -> None:
        self._committer.detach(proc.partition)
        self.processors.pop(proc.partition, None)
        proc.store.close()
