"""Retention of ended runs (issue "Run for weeks"): a run's state is deleted once its retention is over.

Each test's namespace keeps ended runs 2 seconds. After that the run is gone: `describe` raises
`WorkflowNotFoundError`, every key it held is tombstoned in the `state` changelog, and its
workflow id starts a new run.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Producer

from grctl import Client, Context, Directive, Workflow
from grctl.engine import keys
from grctl.engine.records import encoder, run_decoder
from grctl.errors import WorkflowNotFoundError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.kafka.settings_topic import NamespaceSettings, read_settings, write_settings
from grctl.state.partition_store import PartitionStore
from grctl.worker import ChildOutcome, task
from tests.conftest import WorkerRunner
from tests.support.topics import read_committed
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

RETENTION_MS = 2_000

kept = Workflow(workflow_type="Kept")
parent_wf = Workflow(workflow_type="KeptParent")
child_wf = Workflow(workflow_type="KeptChild")


@task
async def remember(n: int) -> int:
    return n


@kept.start()
async def kept_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("a", n)
    ctx.store.put("b", [n, n])
    ctx.store.put("c", {"n": n})
    await remember(n)
    return ctx.next.complete(n)


@parent_wf.start()
async def parent_start(ctx: Context) -> Directive:
    await ctx.start_child("KeptChild", f"{ctx.run.wf_id}-child", {"n": 1}, on_completed_step=collect)
    await ctx.start_child("KeptChild", f"{ctx.run.wf_id}-awaited", {"n": 2})
    return ctx.next.wait()


@parent_wf.step()
async def collect(ctx: Context, outcome: ChildOutcome[int]) -> Directive:
    ctx.store.put("got", outcome.result)
    return ctx.next.complete(outcome.result)


@child_wf.start()
async def child_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    return ctx.next.complete(n)


WORKFLOWS = [kept, parent_wf, child_wf]


@pytest.fixture
async def short_lived(connection: Connection) -> AsyncIterator[Connection]:
    """The test's namespace, keeping ended runs for RETENTION_MS."""
    write_settings(connection, NamespaceSettings(run_retention_ms=RETENTION_MS))
    assert read_settings(connection).run_retention_ms == RETENTION_MS
    yield connection


async def gone(client: Client, wf_id: str, timeout: float = 30) -> None:
    async def not_found() -> bool:
        try:
            await client.describe(wf_id)
        except WorkflowNotFoundError:
            return True
        return False

    await wait_until_async(f"run {wf_id!r} is deleted after its retention", not_found, timeout)


def changelog(conn: Connection) -> dict[bytes, list[bytes | None]]:
    """Every value each state key had, in order (None: a tombstone)."""
    out: dict[bytes, list[bytes | None]] = defaultdict(list)
    for m in read_committed(conn.servers, conn.topics.state, range(conn.num_partitions)):
        out[m.key() or b""].append(m.value())
    return out


def keys_of(log: dict[bytes, list[bytes | None]], wf_id: str) -> dict[bytes, list[bytes | None]]:
    return {k: v for k, v in log.items() if keys.wf_id_of(k) == wf_id}


async def test_an_ended_run_is_deleted_after_its_retention_and_its_id_starts_again(
    short_lived: Connection, workers: WorkerRunner, client: Client
) -> None:
    await workers.start(WORKFLOWS)
    handle = await client.start_workflow("Kept", "kept-1", {"n": 7})
    assert await handle.result(timeout=30) == 7
    info = await client.describe("kept-1")
    assert info.id == handle.run_info.id and info.status == "completed"
    await gone(client, "kept-1")
    held = keys_of(changelog(short_lived), "kept-1")
    assert keys.run_key("kept-1") in held
    stores = [k for k in held if k.startswith(keys.store_prefix("kept-1", handle.run_info.id))]
    assert len(stores) == 3
    for key, values in held.items():
        assert values[-1] is None, f"{key!r} still holds a value after the run's retention: {values[-1]!r}"
    again = await client.start_workflow("Kept", "kept-1", {"n": 8})
    assert again.run_info.id != handle.run_info.id and await again.result(timeout=30) == 8


async def test_parents_and_children_are_deleted_with_everything_they_held(
    short_lived: Connection, workers: WorkerRunner, client: Client
) -> None:
    await workers.start(WORKFLOWS)
    parent = await client.start_workflow("KeptParent", "kp")
    assert await parent.result(timeout=30) == 1
    for wf_id in ("kp", "kp-child", "kp-awaited"):
        await gone(client, wf_id)
    log = changelog(short_lived)
    for wf_id in ("kp", "kp-child", "kp-awaited"):
        held = keys_of(log, wf_id)
        assert held, wf_id
        live = {k: v[-1] for k, v in held.items() if v[-1] is not None}
        assert live == {}, f"{wf_id} keeps {sorted(live)}"
    # The parent's record of its awaited child's outcome went too.
    assert any(k.startswith(keys.child_prefix("kp", parent.run_info.id)) for k in keys_of(log, "kp"))


async def test_runs_that_ended_before_retention_existed_get_it_when_their_partition_is_assigned(
    connection: Connection, workers: WorkerRunner, client: Client, tmp_path: Path
) -> None:
    """A run record without a retention (written by an older worker) is found at assignment."""
    write_settings(connection, NamespaceSettings(run_retention_ms=60 * 60 * 1000))  # long: nothing expires
    await workers.start(WORKFLOWS, state_dir=tmp_path / "old")
    handle = await client.start_workflow("Kept", "legacy", {"n": 1})
    assert await handle.result(timeout=30) == 1
    await workers.stop_all()
    # What an older worker left: the same run, without retain_until_ms, and no marker.
    log = changelog(connection)
    run = run_decoder.decode(log[keys.run_key("legacy")][-1] or b"")
    legacy = msgspec.structs.replace(run, retain_until_ms=None)
    producer = Producer({"bootstrap.servers": connection.servers, "transactional.id": f"legacy-{connection.namespace}"})
    producer.init_transactions(10)
    producer.begin_transaction()
    part = partition_for("legacy", connection.num_partitions)
    producer.produce(connection.topics.state, encoder.encode(legacy), keys.run_key("legacy"), part)
    producer.produce(connection.topics.state, None, keys.RETENTION_MARKER, part)
    producer.commit_transaction(10)
    write_settings(connection, NamespaceSettings(run_retention_ms=RETENTION_MS))
    await workers.start(WORKFLOWS, state_dir=tmp_path / "new")  # restores from the changelog
    await gone(client, "legacy")


def _plant_ghost(state_dir: Path, *, checkpoint_ms: int | None) -> list[Path]:
    """Put a key into every local partition store that the changelog never had (or deleted long
    ago, its tombstone compacted away); optionally date the store's checkpoint."""
    planted = []
    for db in sorted(p for p in state_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        store = PartitionStore(db)
        store.put(GHOST, b"\xa5ghost", batch_id=1)
        store.commit(1, checkpoint=store.checkpoint)
        store.flush()
        if checkpoint_ms is not None:
            store._db.put(keys.CHECKPOINT_KEY, struct.pack(">qq", store.checkpoint, checkpoint_ms))
        store._db.close()
        planted.append(db)
    return planted


GHOST = keys.store_key("ghost", "r0", "k")


@pytest.mark.parametrize("stale", [True, False])
async def test_a_local_store_older_than_the_changelog_keeps_tombstones_is_rebuilt(
    connection: Connection, workers: WorkerRunner, client: Client, tmp_path: Path, stale: bool
) -> None:
    """Kafka drops a tombstone delete.retention.ms after compaction saw it: a worker whose local
    store is older than that must not keep the deleted key. Here the stale key is planted
    directly (what a missed, compacted-away tombstone leaves); a fresh store keeps it (the risk
    is real), a stale one is rebuilt from the changelog without it."""
    state = tmp_path / "w"
    await workers.start(WORKFLOWS, state_dir=state)
    assert await (await client.start_workflow("Kept", "k-old", {"n": 1})).result(timeout=30) == 1
    await workers.stop_all()
    planted = _plant_ghost(state, checkpoint_ms=0 if stale else None)
    assert planted
    await workers.start(WORKFLOWS, state_dir=state)
    assert (await client.describe("k-old")).status == "completed"  # the real state is back either way
    await workers.stop_all()
    held = []
    for db in planted:
        store = PartitionStore(db)
        held.append(store.get(GHOST))
        store.close()
    if stale:
        assert held == [None] * len(planted), "a store too old for the changelog's tombstones was kept"
    else:
        assert held == [b"\xa5ghost"] * len(planted)
