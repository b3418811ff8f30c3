"""Shared pytest fixtures: a real Kafka for tests that need one, and unique names.

Markers (declared in pyproject.toml):

- ``kafka``: the test talks to a real broker through the ``kafka_bootstrap`` fixture.
- ``cluster``: the test needs the 3-node KRaft cluster (``cluster3`` fixture). Skipped unless
  ``GRCTL_TEST_CLUSTER=1`` or the run selects it (``-m cluster``).

Where ``kafka_bootstrap`` gets its broker (first that applies):

1. ``GRCTL_KAFKA_SERVERS`` (alias ``GRCTL_KAFKA_BOOTSTRAP``): an existing cluster; never stopped.
2. A Docker engine that answers (unless ``GRCTL_TEST_DOCKER=0``): testcontainers' Kafka module
   in KRaft mode (image ``GRCTL_TEST_KAFKA_IMAGE``), removed at the end of the session.
3. The local jar broker (`grctl.dev.kafka`): cluster ``test`` on port 29092 in the dev home
   (``GRCTL_DEV_HOME`` or ``~/.cache/grctl``), apart from the ``dev`` broker on 9092.

Lifetime of the local broker: the session stops it at the end only if this session started it.
A broker that was already running is reused and left running, so start it once beforehand
(``grctl dev kafka start --name test --port 29092``) to save the start in every session, and do
so when several pytest processes run at once: otherwise the first to finish stops the broker
under the others.

Tests of the schema-registry formats take ``schema_registry_url``: ``GRCTL_TEST_SCHEMA_REGISTRY_URL``,
else the local Apicurio Registry (`grctl.dev.registry`, registry ``test`` on port 28181), started
once per session (~5 s; the first fetch of its tarball once per machine) and stopped at the end
if the session started it.

Every Kafka session sets ``os.environ["GRCTL_KAFKA_SERVERS"]`` so that subprocesses started by
tests (workers, the CLI) find the same cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from grctl import Client, Connection, Worker, Workflow, settings
from grctl.kafka.topics import admin_client, delete_namespace
from grctl.worker import event_loop
from tests.support.workers import WorkerTeardownError, stop_workers

TEST_CLUSTER_NAME = "test"
TEST_CLUSTER_PORT = 29092
TEST_CLUSTER3_NAME = "test-cluster3"
# Nodes use 29192..29197 (client and controller port per node).
TEST_CLUSTER3_PORT = 29192
DEFAULT_TEST_KAFKA_IMAGE = "confluentinc/cp-kafka:8.0.0"
DOCKER_PING_TIMEOUT_S = 2


# --------------------------------------------------------------------------------------------
# grctl.testing's pytest plugin: users get it from grctl's `pytest11` entry point once grctl
# is installed; an editable install made before the entry point existed has not, so register
# it here unless it is registered already.


def pytest_configure(config: pytest.Config) -> None:
    import grctl.testing.pytest_plugin as plugin

    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, "grctl")


# --------------------------------------------------------------------------------------------
# The event loop (issue 32): GRCTL_EVENT_LOOP=uvloop runs every async test, and so every worker
# a test runs in process, on uvloop (worker subprocesses read the variable themselves), so the
# suite can say whether the engine works on it: `GRCTL_EVENT_LOOP=uvloop scripts/test tests/scenarios`.


if settings.event_loop() == "uvloop":  # else pytest-asyncio's own loops, as before

    def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], Any]]:
        factory = event_loop.loop_factory("uvloop")  # uvloop missing: EventLoopNotInstalledError, by name
        assert factory is not None
        return {"uvloop": factory}


# --------------------------------------------------------------------------------------------
# Markers


def _cluster_tests_selected(config: pytest.Config) -> bool:
    if os.environ.get("GRCTL_TEST_CLUSTER") == "1":
        return True
    markexpr = str(config.getoption("markexpr", default="") or "")
    return re.search(r"(?<!not )\bcluster\b", markexpr) is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cluster`` tests unless GRCTL_TEST_CLUSTER=1 or ``-m cluster`` selects them."""
    if _cluster_tests_selected(config):
        return
    skip = pytest.mark.skip(reason="3-node cluster test: set GRCTL_TEST_CLUSTER=1 or run with -m cluster")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------------------------
# Kafka


def _env_bootstrap() -> str | None:
    return os.environ.get("GRCTL_KAFKA_SERVERS") or os.environ.get("GRCTL_KAFKA_BOOTSTRAP") or None


def _docker_engine_answers() -> bool:
    if os.environ.get("GRCTL_TEST_DOCKER") == "0":
        return False
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False  # no engine configured: skip the docker import and its timeout
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_S)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker for the whole session (see the module doc)."""
    env = _env_bootstrap()
    with pytest.MonkeyPatch.context() as mp:
        if env is not None:
            mp.setenv("GRCTL_KAFKA_SERVERS", env)
            yield env
        elif _docker_engine_answers():
            from testcontainers.community.kafka import KafkaContainer

            image = os.environ.get("GRCTL_TEST_KAFKA_IMAGE", DEFAULT_TEST_KAFKA_IMAGE)
            container = (
                KafkaContainer(image)
                .with_kraft()
                .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
                .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
                .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
                .with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "1000")
            )
            with container:
                bootstrap = container.get_bootstrap_server()
                mp.setenv("GRCTL_KAFKA_SERVERS", bootstrap)
                yield bootstrap
        else:
            from grctl.dev import kafka as local_kafka

            result = local_kafka.ensure_running(1, TEST_CLUSTER_PORT, name=TEST_CLUSTER_NAME)
            mp.setenv("GRCTL_KAFKA_SERVERS", result.bootstrap)
            try:
                yield result.bootstrap
            finally:
                if result.started:
                    local_kafka.stop(TEST_CLUSTER_NAME)


TEST_REGISTRY_NAME = "test"
TEST_REGISTRY_PORT = 28181


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    """A real Confluent-compatible schema registry for the session (tests that use it only).

    ``GRCTL_TEST_SCHEMA_REGISTRY_URL`` if set; else the local Apicurio Registry
    (`grctl.dev.registry`, registry ``test`` on port 28181), started once and stopped at the end
    if this session started it. Its storage is in memory: each test registers its own subjects.
    """
    env = os.environ.get("GRCTL_TEST_SCHEMA_REGISTRY_URL")
    if env:
        yield env
        return
    from grctl.dev import registry as local_registry

    result = local_registry.ensure_running(TEST_REGISTRY_PORT, name=TEST_REGISTRY_NAME)
    try:
        yield result.url
    finally:
        if result.started:
            local_registry.stop(TEST_REGISTRY_NAME)


@dataclass(frozen=True, slots=True)
class LocalCluster:
    """A local multi-node KRaft cluster that tests may break.

    Attributes:
        name: Cluster name in the dev home.
        bootstrap: Bootstrap servers of all nodes.
        brokers: Number of nodes (ids 1..brokers).
    """

    name: str
    bootstrap: str
    brokers: int

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node and wait until its process is gone."""
        from grctl.dev import kafka as local_kafka

        local_kafka.kill_node(self.name, node_id)

    def restart_node(self, node_id: int) -> None:
        """Start the node again and wait until the cluster lists every broker."""
        from grctl.dev import kafka as local_kafka

        local_kafka.restart_node(self.name, node_id)

    def pause_node(self, node_id: int) -> None:
        """SIGSTOP one node (a hung broker)."""
        from grctl.dev import kafka as local_kafka

        local_kafka.pause_node(self.name, node_id)

    def resume_node(self, node_id: int) -> None:
        """SIGCONT a paused node."""
        from grctl.dev import kafka as local_kafka

        local_kafka.resume_node(self.name, node_id)

    def node_port(self, node_id: int) -> int:
        """Client port of a node."""
        return int(self.bootstrap.split(",")[node_id - 1].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def cluster3() -> Iterator[LocalCluster]:
    """A local 3-node KRaft cluster (RF 3, min ISR 2) for tests marked ``cluster``.

    Started from the jars, on empty storage, as cluster ``test-cluster3`` on ports 29192..29197 and
    stopped at the end of the module if it started it (three idle JVMs would slow the rest of the
    suite on two cores). A test that kills a node must restart it before it ends.
    """
    from grctl.dev import kafka as local_kafka

    if not local_kafka.status(TEST_CLUSTER3_NAME).running:
        # Start from empty storage: the topics of earlier sessions (about a thousand partitions
        # after a day of runs here) slow every broker restart of the fault tests, and a cluster
        # left half-formed by an interrupted session once failed to form again.
        local_kafka.wipe(TEST_CLUSTER3_NAME)
    result = local_kafka.ensure_running(3, TEST_CLUSTER3_PORT, name=TEST_CLUSTER3_NAME)
    try:
        yield LocalCluster(name=TEST_CLUSTER3_NAME, bootstrap=result.bootstrap, brokers=3)
    finally:
        if result.started:
            local_kafka.stop(TEST_CLUSTER3_NAME)


# --------------------------------------------------------------------------------------------
# Names


@pytest.fixture(scope="session")
def grctl_kafka_servers(kafka_bootstrap: str) -> str:
    """The broker of grctl.testing's `grctl_kafka_env` fixture: the session's."""
    return kafka_bootstrap


@pytest.fixture
def unique_name() -> str:
    """A name no other test uses (time-ordered ULID, lowercase): for topics, groups, namespaces."""
    return f"grctl-test-{str(ULID()).lower()}"


# --------------------------------------------------------------------------------------------
# Engine fixtures go below this line.


@pytest.fixture
async def connection(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[Connection]:
    """A namespace of its own (4 partitions) on the session's broker."""
    ns = "t" + unique_name.lower().replace("_", "-")[-20:]
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=4)
    yield conn
    await conn.close()
    # Keep the session's broker small: a broker with thousands of topics answers slowly.
    with contextlib.suppress(Exception):
        delete_namespace(admin_client(conn.client_config()), conn.topics, timeout=10)


@pytest.fixture
async def client(connection: Connection) -> AsyncIterator[Client]:
    """A client of the test's namespace."""
    c = Client(connection)
    yield c
    await c.close()


class WorkerRunner:
    """Starts in-process workers for a test and stops them at its end."""

    def __init__(self, connection: Connection, state_root: Path) -> None:
        self.connection = connection
        self.state_root = state_root
        self._running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, workflows: list[Workflow], **kwargs: Any) -> Worker:
        kwargs.setdefault("state_dir", self.state_root / f"w{len(self._running)}")
        worker = Worker(workflows, self.connection, **kwargs)
        task = asyncio.create_task(worker.run())
        self._running.append((worker, task))
        try:
            await worker.wait_until_ready(60)
        except BaseException:
            # The failure reaches the test through this call; the teardown must not report it
            # again, but a worker that then does not stop is still a failure.
            self._running.remove((worker, task))
            await worker.stop(shutdown_timeout=2.0)
            done, _ = await asyncio.wait([task], timeout=30)
            if not done:
                task.cancel()
                raise WorkerTeardownError(f"worker {worker.worker_name} failed to start, then did not stop") from None
            if not task.cancelled():
                task.exception()  # retrieved: it is the error raised here
            raise
        return worker

    async def stop_all(self) -> None:
        """Stop every worker; fail the test if one crashed during it or hung (`tests.support.workers`)."""
        running, self._running = self._running, []
        await stop_workers(
            [(w.worker_name, functools.partial(w.stop, shutdown_timeout=2.0), task) for w, task in running]
        )


@pytest.fixture
async def workers(connection: Connection, tmp_path: Path) -> AsyncIterator[WorkerRunner]:
    """`await workers.start([wf, ...])` runs a worker in this test's event loop until the test ends."""
    runner = WorkerRunner(connection, tmp_path / "state")
    yield runner
    await runner.stop_all()
