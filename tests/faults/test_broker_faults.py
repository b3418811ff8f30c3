"""Exactly-once while brokers of a 3-node KRaft cluster fail (issue 15, part 2).

One fault kind per test, during the mixed load of tests/faults/harness.py (chains, a task with
retries, durable timers, children, events): SIGKILL the leader of most of the namespace's
partitions, the transaction coordinator of the worker's transactional id, the group
coordinator of the workers' group; SIGSTOP a broker for 20 s; a rolling restart of all three;
a broker kill together with worker SIGKILLs. Each test checks every run's result and history,
ends with `verify_namespace` clean, and records the recovery time and the longest stall in
build/test-output/faults/<test>.json.

Marked ``cluster`` (the session's 3-node cluster, RF 3, min ISR 2). Target: the worker stalls no
longer than the broker is gone plus 15 s. That is a figure, recorded in the report, not asserted
(issue 31: no speed assertions in tests); what is asserted is that nothing hangs: every run ends
within the harness's settle bound (`SETTLE_S` after the load) and the test within its timeout.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from tests.conftest import LocalCluster
from tests.faults.harness import FaultContext, env_scale, run_with_fault

pytestmark = [pytest.mark.kafka, pytest.mark.cluster, pytest.mark.crash, pytest.mark.timeout(480)]

DOWN_S = 15.0  # how long a killed broker stays down
PAUSE_S = 20.0  # how long a paused broker stays stopped


def java_hash(text: str) -> int:
    """Java's String.hashCode (what Kafka hashes coordinator keys with)."""
    h = 0
    for ch in text.encode("utf-16-be").decode("utf-16-be"):
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - 2**32 if h >= 2**31 else h


def coordinator_partition(key: str, partitions: int) -> int:
    """Kafka's partitionFor: Utils.abs(key.hashCode) % partitions (abs of MIN_VALUE is 0)."""
    h = java_hash(key)
    return 0 if h == -(2**31) else abs(h) % partitions


def leader_of(admin: AdminClient, topic: str, partition: int) -> int:
    return int(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader)


def busiest_leader(admin: AdminClient, namespace: str) -> int:
    """The broker that leads most partitions of the namespace's topics."""
    leaders: Counter[int] = Counter()
    for name, meta in admin.list_topics(timeout=10).topics.items():
        if name.startswith(f"grctl.{namespace}."):
            leaders.update(p.leader for p in meta.partitions.values())
    return leaders.most_common(1)[0][0]


def transactional_id(ctx: FaultContext, namespace: str, worker: int = 0) -> str:
    instance = (ctx.workers[worker].state_dir / "instance.id").read_text().strip()
    return f"grctl.{namespace}.{instance}"


def namespace(tmp_path: Path) -> str:
    """A namespace no earlier run used (the cluster and its topics outlive a test session)."""
    return f"fault{secrets.token_hex(3)}" + tmp_path.name[-10:].lower().replace("_", "")


async def wait_for_first_completions(seconds: float = 6.0) -> None:
    await asyncio.sleep(seconds)  # the load's pace, not a synchronisation: the fault lands mid-load


async def kill_one_broker_under_load(
    cluster: LocalCluster, tmp_path: Path, ns: str, name: str, pick: Callable[[FaultContext], int]
) -> None:
    """SIGKILL the broker `pick` names mid-load, restart it DOWN_S later, check runs and stalls."""

    async def fault(ctx: FaultContext) -> None:
        await wait_for_first_completions()
        victim = await asyncio.to_thread(pick, ctx)
        ctx.mark()
        await asyncio.to_thread(cluster.kill_node, victim)
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(cluster.restart_node, victim)

    await run_with_fault(cluster.bootstrap, ns, tmp_path, fault, name=name, duration_s=30 * env_scale())


async def test_sigkill_the_leader_of_the_busiest_partitions(cluster3: LocalCluster, tmp_path: Path) -> None:
    ns = namespace(tmp_path)
    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})
    await kill_one_broker_under_load(cluster3, tmp_path, ns, "leader-kill", lambda ctx: busiest_leader(admin, ns))


async def test_sigkill_the_transaction_coordinator_of_the_worker(cluster3: LocalCluster, tmp_path: Path) -> None:
    ns = namespace(tmp_path)
    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})

    def coordinator(ctx: FaultContext) -> int:
        part = coordinator_partition(transactional_id(ctx, ns), 4)  # transaction.state.log.num.partitions
        return leader_of(admin, "__transaction_state", part)

    await kill_one_broker_under_load(cluster3, tmp_path, ns, "txn-coordinator-kill", coordinator)


async def test_sigkill_the_group_coordinator(cluster3: LocalCluster, tmp_path: Path) -> None:
    ns = namespace(tmp_path)
    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})
    group = f"grctl.{ns}.workers"

    def coordinator(_ctx: FaultContext) -> int:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
        computed = leader_of(admin, "__consumer_offsets", coordinator_partition(group, 4))
        assert described.coordinator.id == computed, "Kafka's coordinator hashing as this test computes it"
        return int(described.coordinator.id)

    await kill_one_broker_under_load(cluster3, tmp_path, ns, "group-coordinator-kill", coordinator)


async def test_sigstop_a_broker_for_20_s(cluster3: LocalCluster, tmp_path: Path) -> None:
    ns = namespace(tmp_path)
    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})

    async def fault(ctx: FaultContext) -> None:
        await wait_for_first_completions()
        victim = busiest_leader(admin, ns)
        ctx.mark()
        cluster3.pause_node(victim)
        try:
            await asyncio.sleep(PAUSE_S)
        finally:
            cluster3.resume_node(victim)

    await run_with_fault(cluster3.bootstrap, ns, tmp_path, fault, name="broker-pause",
                         duration_s=35 * env_scale())  # fmt: skip


async def test_rolling_restart_of_all_three_brokers(cluster3: LocalCluster, tmp_path: Path) -> None:
    async def fault(ctx: FaultContext) -> None:
        await wait_for_first_completions()
        for node in range(1, cluster3.brokers + 1):
            ctx.mark()
            await asyncio.to_thread(cluster3.kill_node, node)
            await asyncio.sleep(3.0)
            await asyncio.to_thread(cluster3.restart_node, node)

    report = await run_with_fault(cluster3.bootstrap, namespace(tmp_path), tmp_path, fault, name="rolling-restart",
                                  duration_s=40 * env_scale())  # fmt: skip
    assert report.faults == 3


async def test_a_broker_kill_with_worker_sigkills(cluster3: LocalCluster, tmp_path: Path) -> None:
    ns = namespace(tmp_path)
    admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})

    async def fault(ctx: FaultContext) -> None:
        await wait_for_first_completions()
        victim = busiest_leader(admin, ns)
        ctx.mark()
        await asyncio.to_thread(cluster3.kill_node, victim)
        for _ in range(2):  # workers die while the broker is gone, and restart in place
            await asyncio.sleep(ctx.rng.uniform(1.0, 3.0))
            worker = ctx.rng.choice(ctx.workers)
            worker.kill()
            await asyncio.sleep(ctx.rng.uniform(0.2, 1.0))
            worker.start()
        await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - ctx.fault_times[-1])))
        await asyncio.to_thread(cluster3.restart_node, victim)

    report = await run_with_fault(cluster3.bootstrap, ns, tmp_path, fault, name="broker-and-worker-kills",
                                  duration_s=30 * env_scale(), workers_total=2)  # fmt: skip
    assert report.worker_kills == 2


def test_coordinator_hashing_matches_kafka_for_known_values() -> None:
    # Values from Java's "...".hashCode(): "" -> 0, "a" -> 97, "hello" -> 99162322,
    # "polygenelubricants" -> Integer.MIN_VALUE (whose abs Kafka maps to 0).
    assert [java_hash(s) for s in ("", "a", "hello")] == [0, 97, 99162322]
    assert java_hash("polygenelubricants") == -(2**31)
    assert coordinator_partition("polygenelubricants", 4) == 0
