"""The group committer without a broker: batches, layers, offsets, and a failed transaction.

Real RocksDB stores in tmp_path; the Kafka transaction is `InMemoryPublisher`.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import Producer

from grctl import settings
from grctl.engine import keys
from grctl.kafka.topics import TopicNames
from grctl.state.partition_store import PartitionStore
from grctl.worker._session import commit as commit_module
from grctl.worker._session.commit import (
    MAX_BATCH_RECORDS,
    Batch,
    GroupCommitter,
    KafkaPublisher,
    RecordRefused,
    _produce,
)
from grctl.worker._session.errors import SessionRestart
from tests.unit.publisher import InMemoryPublisher


class Watermark:
    """What a processor reports as the offset to commit."""

    def __init__(self) -> None:
        self.value: int | None = None

    def __call__(self) -> int | None:
        return self.value


@pytest.fixture
def store(tmp_path: Path) -> PartitionStore:
    s = PartitionStore(tmp_path / "p0")
    yield s
    s.close()


async def test_staged_writes_are_read_at_once_and_become_committed_with_the_transaction(store: PartitionStore) -> None:
    pub = InMemoryPublisher()
    committer = GroupCommitter(pub)
    committer.attach(0, store, Watermark())
    committer.stage(0, b"r/a", b"1")
    committer.produce("history", 0, b"a", b"h1")
    assert store.get(b"r/a") == b"1"  # read-your-writes from the batch's layer
    assert store.get_committed(b"r/a") is None
    await committer.flush()
    assert store.get_committed(b"r/a") == b"1"
    assert store.checkpoint == 0  # the changelog offset of the partition's last write
    assert [p.records for p in pub.committed] == [[("history", 0, b"a", b"h1", None, None)]]
    assert pub.committed[0].state == {0: {b"r/a": b"1"}}


async def test_the_offset_committed_is_the_processors_watermark_and_only_when_it_moved(store: PartitionStore) -> None:
    pub = InMemoryPublisher()
    committer = GroupCommitter(pub)
    mark = Watermark()
    committer.attach(0, store, mark)
    mark.value = 7  # the processor has applied the records before offset 7
    committer.offsets_moved()
    await committer.flush()
    assert pub.committed[-1].offsets == [(0, 7)] and committer.committed_offset(0) == 7
    await committer.flush()  # nothing new: no transaction at all
    assert len(pub.committed) == 1
    mark.value = 12
    await committer.flush()
    assert pub.committed[-1].offsets == [(0, 12)]


async def test_after_commit_callbacks_run_only_after_the_transaction(store: PartitionStore) -> None:
    pub = InMemoryPublisher(hold=asyncio.Event())
    committer = GroupCommitter(pub)
    committer.attach(0, store, Watermark())
    ran: list[str] = []
    committer.stage(0, b"r/a", b"1")
    committer.after_commit(lambda: ran.append("start step"))
    flushing = asyncio.create_task(committer.flush())
    await pub.in_flight.wait()
    assert ran == []
    assert pub.hold is not None
    pub.hold.set()
    await flushing
    assert ran == ["start step"]


async def test_writes_staged_while_a_transaction_is_in_flight_go_into_the_next_one(store: PartitionStore) -> None:
    pub = InMemoryPublisher(hold=asyncio.Event())
    committer = GroupCommitter(pub)
    committer.attach(0, store, Watermark())
    committer.stage(0, b"r/a", b"1")
    flushing = asyncio.create_task(committer.flush())
    await pub.in_flight.wait()
    committer.stage(0, b"r/a", b"2")  # the open batch's layer shadows the sealed one
    assert store.get(b"r/a") == b"2"
    assert pub.hold is not None
    pub.hold.set()
    await flushing
    assert pub.committed[0].state == {0: {b"r/a": b"1"}}
    assert store.get_committed(b"r/a") == b"1" and store.get(b"r/a") == b"2"
    await committer.flush()
    assert pub.committed[1].state == {0: {b"r/a": b"2"}}
    assert store.get_committed(b"r/a") == b"2"


async def test_a_failed_transaction_drops_everything_uncommitted_and_commits_nothing_more(
    store: PartitionStore,
) -> None:
    pub = InMemoryPublisher()
    committer = GroupCommitter(pub)
    mark = Watermark()
    committer.attach(0, store, mark)
    committer.stage(0, b"r/a", b"committed")
    await committer.flush()
    pub.hold = asyncio.Event()
    pub.fail_next = RuntimeError("INVALID_PRODUCER_EPOCH")
    ran: list[str] = []
    committer.stage(0, b"r/a", b"lost")
    committer.stage(0, b"r/b", b"lost")
    committer.after_commit(lambda: ran.append("never"))
    mark.value = 5
    flushing = asyncio.create_task(committer.flush())
    await pub.in_flight.wait()
    committer.stage(0, b"r/c", b"staged during the failing transaction")
    pub.hold.set()
    with pytest.raises(SessionRestart, match="INVALID_PRODUCER_EPOCH"):
        await flushing
    assert committer.failure is not None
    # Nothing of the failed batch nor of the open one is readable; the committed value is.
    assert (store.get(b"r/a"), store.get(b"r/b"), store.get(b"r/c")) == (b"committed", None, None)
    assert ran == [] and committer.committed_offset(0) is None
    with pytest.raises(SessionRestart, match="earlier transaction failed"):
        await committer.flush()
    assert len(pub.committed) == 1


async def test_a_detached_partition_drops_its_open_writes(tmp_path: Path) -> None:
    pub = InMemoryPublisher()
    committer = GroupCommitter(pub)
    s0, s1 = PartitionStore(tmp_path / "p0"), PartitionStore(tmp_path / "p1")
    committer.attach(0, s0, Watermark())
    committer.attach(1, s1, Watermark())
    committer.stage(0, b"r/a", b"kept")
    committer.stage(1, b"r/b", b"revoked")
    committer.detach(1)
    await committer.flush()
    assert pub.committed[0].state == {0: {b"r/a": b"kept"}}
    s0.close()
    s1.close()


def test_the_batch_is_full_past_its_bound(store: PartitionStore) -> None:
    committer = GroupCommitter(InMemoryPublisher())
    committer.attach(0, store, Watermark())
    for i in range(MAX_BATCH_RECORDS):
        committer.produce("history", 0, b"k", b"%d" % i)
    assert not committer.full
    committer.stage(0, b"r/a", b"1")
    assert committer.full


async def test_a_refused_record_ends_the_session_naming_its_run(store: PartitionStore) -> None:
    pub = InMemoryPublisher(fail_next=RecordRefused("wf-9", "grctl.ns.history", 5_000, "Message size too large"))
    committer = GroupCommitter(pub)
    committer.attach(0, store, Watermark())
    committer.produce("grctl.ns.history", 0, b"wf-9", b"x", None, "wf-9")
    with pytest.raises(SessionRestart) as info:
        await committer.flush()
    assert isinstance(info.value.__cause__, RecordRefused) and info.value.__cause__.wf_id == "wf-9"


def test_librdkafka_refusing_a_record_names_the_run_that_made_it() -> None:
    """librdkafka checks a record's size as it is produced (no broker involved)."""
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.max.bytes": 1000, "log_level": 0})
    with pytest.raises(RecordRefused) as info:
        _produce(producer, "t", 0, b"k", b"x" * 2000, None, None, "wf-1")
    assert (info.value.wf_id, info.value.topic, info.value.size) == ("wf-1", "t", 2001)
    with pytest.raises(RecordRefused) as info:  # a state write names its run through its key
        _produce(producer, "t", 0, keys.store_key("wf-2", "r", "blob"), b"x" * 2000, None, None, None)
    assert info.value.wf_id == "wf-2"
    producer.purge()


async def test_a_transaction_blocked_past_its_bound_is_given_up_and_the_session_restarts(
    store: PartitionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A librdkafka call that blocks past its own timeout must not stall the worker silently."""
    monkeypatch.setattr(commit_module, "PUBLISH_TIMEOUT_S", 0.2)
    release = threading.Event()

    class BlockedInSendOffsets(KafkaPublisher):
        def _transaction(self, batch: Batch, offsets: list[tuple[int, int]]) -> dict[int, int]:
            self._in_flight = True
            self._phase = "send_offsets_to_transaction"
            release.wait(10)  # the producer thread, stuck in a call that ignores its timeout
            return {}

    pool = ThreadPoolExecutor(1)
    publisher = BlockedInSendOffsets(lambda: Producer({}), TopicNames("unit"), lambda: None, pool)
    committer = GroupCommitter(publisher)
    committer.attach(0, store, Watermark())
    committer.stage(0, b"r/a", b"never committed")
    try:
        with pytest.raises(SessionRestart, match="still in send_offsets_to_transaction"):
            await committer.flush()
        assert store.get(b"r/a") is None  # dropped, as after any failed transaction
        await publisher.abort()  # the teardown does not queue an abort behind the blocked call
    finally:
        release.set()
        pool.shutdown(wait=True)


@pytest.mark.parametrize("loaded", [True, False])
async def test_the_commit_linger_applies_only_while_the_worker_is_loaded(
    store: PartitionStore, monkeypatch: pytest.MonkeyPatch, loaded: bool
) -> None:
    """GRCTL_COMMIT_LINGER_MS (a measuring knob, off by default) holds a loaded worker's commit.

    Loaded (the last batch held `LOADED_BATCH_RECORDS` or more): a write staged a few loop
    iterations after the first joins its transaction. Light: the first write commits alone, at once.
    """
    monkeypatch.setattr(commit_module, "COMMIT_LINGER_S", 30.0)  # longer than the test: only load decides
    pub = InMemoryPublisher()
    committer = GroupCommitter(pub)
    committer.attach(0, store, Watermark())
    if loaded:
        for i in range(commit_module.LOADED_BATCH_RECORDS):
            committer.produce("history", 0, b"k", b"%d" % i)
        await committer.flush()  # the last batch: a loaded worker's
    before = len(pub.committed)
    loop = asyncio.create_task(committer.run())
    try:
        committer.stage(0, b"r/a", b"1")
        for _ in range(commit_module.COMMIT_YIELDS + 4):  # past the yields: a light worker commits now
            await asyncio.sleep(0)
        committer.stage(0, b"r/b", b"2")
        if loaded:
            assert len(pub.committed) == before  # still lingering
            monkeypatch.setattr(commit_module, "COMMIT_LINGER_S", 0.0)  # the same loop, without the wait
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await committer.flush()
            assert pub.committed[before].state == {0: {b"r/a": b"1", b"r/b": b"2"}}
        else:
            assert pub.committed[before].state == {0: {b"r/a": b"1"}}
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


def test_a_stalled_transaction_is_given_up_soon_after_the_coordinator_would_abort_it() -> None:
    """The watchdog waits past the producer's transaction timeout, but not much past it.

    With 35 s a CI run's worker stalled 38 s for a 15 s broker kill (the broker was both its
    transaction and its group coordinator; send_offsets_to_transaction blocked).
    """
    from grctl.worker._session.clients import TRANSACTION_TIMEOUT_MS

    txn_timeout_s = TRANSACTION_TIMEOUT_MS / 1000
    assert txn_timeout_s < commit_module.PUBLISH_TIMEOUT_S <= txn_timeout_s + 5.0
    assert commit_module.PUBLISH_TIMEOUT_S < commit_module.TXN_CALL_TIMEOUT_S


@pytest.mark.parametrize("raw", ["abc", "-1", "nan"])
def test_a_bad_commit_linger_setting_is_named(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("GRCTL_COMMIT_LINGER_MS", raw)
    with pytest.raises(ValueError, match=f"GRCTL_COMMIT_LINGER_MS must be a number of milliseconds >= 0.*{raw!r}"):
        settings.commit_linger_s()  # what the commit module reads when it loads
    monkeypatch.setenv("GRCTL_COMMIT_LINGER_MS", "2.5")
    assert settings.commit_linger_s() == 0.0025
