"""`Worker`: runs the steps of the runs on the partitions it owns."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import secrets
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # untyped re-export

from grctl import defaults, settings
from grctl._fork import ForkGuard
from grctl.codec import CodecRegistry, default_codec
from grctl.engine.machine import Machine
from grctl.engine.records import LimiterSetCmd, encoder
from grctl.engine.retry import SESSION_HEALTHY_S, session_restart_delay
from grctl.errors import InvalidArgumentError, KafkaSetupError, RegistrationError, StateError
from grctl.kafka.acls import authorization_error
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.kafka.settings_topic import SETTINGS_REFRESH_S, read_settings
from grctl.models.limits import Limiter
from grctl.settings import EngineSettings
from grctl.state.partition_store import DEFAULT_STATE_MEMORY_MB, StoreMemory
from grctl.worker import gc_tuning
from grctl.worker._edges.schema_registry import ENV_URL, RecordField, RegistryDecoder, SchemaRegistry
from grctl.worker._edges.sources import Source
from grctl.worker._observe.http import MetricsServer
from grctl.worker._observe.metrics import WorkerMetrics
from grctl.worker._partition.ports import Refusal
from grctl.worker._session.clients import GROUP_PROTOCOLS
from grctl.worker._session.commit import RecordRefused
from grctl.worker._session.served import Served, ServedCatalog
from grctl.worker._session.session import SessionRestart, WorkerSession
from grctl.worker._session.topics import TopicDirectory
from grctl.worker.event_loop import check_requested, running_loop_name
from grctl.workflow.workflow import Workflow

logger = logging.getLogger("grctl.worker")

DEFAULT_MAX_CONCURRENT_STEPS = defaults.MAX_CONCURRENT_STEPS
#: Sessions failed in a row before the log says so at ERROR instead of WARNING.
RESTARTS_BEFORE_ERROR = 3
#: Bound of the runs waiting to be failed because Kafka refused one of their records.
QUARANTINE_MAX = 10_000
#: The metrics endpoint listens on every interface: probes and scrapes come from outside the pod.
DEFAULT_METRICS_HOST = "0.0.0.0"
#: How long a worker waits for the broker to acknowledge its limiters' declarations.
DECLARE_TIMEOUT_S = 30.0


class _StateDirLock:
    """An exclusive lock on a state folder: one worker process per folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def try_acquire(self) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / "LOCK.grctl", "a+")  # noqa: SIM115  # held for the worker's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class Worker:
    """Serves workflow types: joins the namespace's consumer group and executes steps.

    Example:
        ```python
        worker = Worker(workflows=[order], connection=await Connection.connect())
        await worker.run()
        ```

    Args:
        workflows: the workflow definitions this worker serves. Every worker of a namespace
            should serve the same set.
        connection: the Kafka connection (default: `Connection.connect()` from the environment).
        codec: the codec for user values (custom codecs apply to steps too).
        state_dir: folder for the local RocksDB state (default: a per-worker slot under
            GRCTL_STATE_DIR or ~/.cache/grctl/state). Reusing it after a restart avoids a full
            restore from the changelog.
        max_concurrent_steps: bound on steps executing at once in this worker.
        kafka_config: extra librdkafka options: {"producer": {...}, "consumer": {...}}.
        metrics_port: serve Prometheus metrics and the probes `/ready` and `/live` on this
            port (0: any free port, see `metrics_address`; None: no metrics, no cost).
        metrics_host: the interface of the metrics endpoint (default: every interface).
        state_memory_mb: RocksDB memory of this worker, all its partitions together (block
            cache and memtables; Python objects come on top).
        sources: topics whose records start runs or deliver events (`grctl.worker._edges.sources`),
            exactly once, consumed by the workers' group with `directives`. Every worker of
            the namespace should have the same sources.
        pipeline_steps: start a step as soon as it is dispatched, before the transaction of
            its dispatch commits (reading the uncommitted writes); its outputs commit in that
            transaction or a later one. If a transaction fails, the session restarts, drops
            both, and the step runs again: what a crash does (docs/engine.md "Pipelined
            steps"). False: a step starts only once its dispatch has committed.
        schema_registry: the Confluent-compatible schema registry of the formats avro,
            protobuf and jsonschema (sources and `ctx.emit`): a URL or a `SchemaRegistry`
            (auth, auto-registration); default: ``GRCTL_SCHEMA_REGISTRY_URL`` if set. Checked
            when the worker starts.
        group_protocol: the worker group's rebalance protocol: "classic" (eager: every
            membership change stops every partition briefly; failures detected in 6 s) or
            "consumer" (KIP-848, Kafka 4: only the partitions that move stop; failures detected
            in the broker's `group.consumer.session.timeout.ms`, 45 s unless the cluster lowers
            it). Default: ``GRCTL_GROUP_PROTOCOL``, else "classic". Every worker of a namespace
            should use the same. "consumer" is experimental: the rebalance-storm fault test fails
            with it (docs/engine.md, "The KIP-848 protocol, opt-in"); not for production.
        limiters: limiters declared in code (`Limiter("payments-api", concurrency=20)`): the worker
            creates each when it starts, or changes it to the declaration if the declaration
            differs from the one last applied (a change made at runtime with `grctl limiter set`
            stands until then). Every worker of a namespace may declare the same.
        clock: the wall clock the engine reads, seconds since the epoch (default `time.time`):
            when timers and schedule ticks fall due, history times. For tests that move time
            (a schedule across a DST change) against a real broker; never in production.
    """

    def __init__(
        self,
        workflows: list[Workflow],
        connection: Connection | None = None,
        *,
        codec: CodecRegistry | None = None,
        state_dir: str | Path | None = None,
        max_concurrent_steps: int = DEFAULT_MAX_CONCURRENT_STEPS,
        kafka_config: dict[str, Any] | None = None,
        metrics_port: int | None = None,
        metrics_host: str = DEFAULT_METRICS_HOST,
        state_memory_mb: int = DEFAULT_STATE_MEMORY_MB,
        sources: list[Source] | None = None,
        pipeline_steps: bool = True,
        schema_registry: str | SchemaRegistry | None = None,
        clock: Callable[[], float] | None = None,
        group_protocol: str | None = None,
        limiters: list[Limiter] | None = None,
    ) -> None:
        if not workflows:
            raise RegistrationError("Worker(workflows=[...]) needs at least one Workflow")
        served = Served(workflows)
        problems = served.problems
        seen_topics: set[str] = set()
        for src in sources or []:
            if not isinstance(src, Source):
                problems.append(f"{src!r} is not a Source")
            elif src.topic in seen_topics:
                problems.append(f"source topic {src.topic!r} is listed twice")
            else:
                seen_topics.add(src.topic)
        registry = SchemaRegistry(schema_registry) if isinstance(schema_registry, str) else schema_registry
        if registry is None:
            registry = SchemaRegistry.from_env()
        elif not isinstance(registry, SchemaRegistry):
            problems.append(f"schema_registry must be a URL or a SchemaRegistry, got {schema_registry!r}")
            registry = None
        for src in sources or []:
            if not isinstance(src, Source) or registry is not None:
                continue
            if src.uses_registry:
                problems.append(
                    f"source {src.topic!r} has format {src.format!r}, which needs a schema registry: "
                    f"Worker(schema_registry=URL) or set {ENV_URL}"
                )
            if src.key_uses_registry:
                problems.append(
                    f"source {src.topic!r} has key_format {src.key_format!r}, which needs a schema registry: "
                    f"Worker(schema_registry=URL) or set {ENV_URL}"
                )
        names: set[str] = set()
        for lim in limiters or []:
            if not isinstance(lim, Limiter):
                problems.append(f"{lim!r} is not a Limiter")
            elif lim.name in names:
                problems.append(f"limiter {lim.name!r} is declared twice")
            else:
                names.add(lim.name)
        if problems:
            raise RegistrationError("; ".join(problems))
        self._limiters = list(limiters or [])
        self._sources = list(sources or [])
        self._registry = registry
        self._decoders = self._make_decoders()  # fails here if the grctl[registry] extra is missing
        if max_concurrent_steps < 1:
            raise InvalidArgumentError(
                f"max_concurrent_steps must be >= 1, got {max_concurrent_steps}", argument="max_concurrent_steps"
            )
        self._served = served
        self._connection = connection
        self._codec = codec or default_codec()
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._max_steps = max_concurrent_steps
        self._pipeline_steps = bool(pipeline_steps)
        if clock is not None and not callable(clock):
            raise InvalidArgumentError(
                f"clock must be a function returning epoch seconds, got {clock!r}", argument="clock"
            )
        protocol = group_protocol or settings.group_protocol() or "classic"
        if protocol not in GROUP_PROTOCOLS:
            raise InvalidArgumentError(
                f"group_protocol must be one of {', '.join(GROUP_PROTOCOLS)}, got {protocol!r}",
                argument="group_protocol",
            )
        self._group_protocol = protocol
        if protocol == "consumer":
            logger.warning(
                "group_protocol='consumer' (KIP-848) is experimental: the rebalance-storm fault test fails with it "
                "(docs/engine.md, 'The KIP-848 protocol, opt-in'); do not use it in production"
            )
        wall = clock or time.time
        self._now_ms: Callable[[], int] = lambda: int(wall() * 1000)
        self._kafka_config = kafka_config or {}
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise InvalidArgumentError(f"metrics_port must be 0..65535, got {metrics_port}", argument="metrics_port")
        self._metrics_port = metrics_port
        self._memory = StoreMemory(state_memory_mb * 2**20)
        self._metrics_host = metrics_host
        self.metrics: WorkerMetrics | None = None
        self._metrics_server: MetricsServer | None = None
        digest = hashlib.md5("|".join(sorted(served.types())).encode(), usedforsecurity=False).hexdigest()
        self.worker_name = digest[:5]
        self.worker_id = f"w_{self.worker_name}.{secrets.token_hex(1)}@{socket.gethostname()}"
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._startup_error: BaseException | None = None
        self._done = asyncio.Event()
        self._session: WorkerSession | None = None
        self._lock: _StateDirLock | None = None
        self._shutdown_timeout = 30.0
        # Workflow ids whose transition Kafka refused: their runs fail in the next session.
        self._quarantine: dict[str, Refusal] = {}
        #: The topics steps emit to, results and source topics (made in `run`, shared by its sessions).
        self._topics: TopicDirectory | None = None
        self._started = False
        self._fork_guard = ForkGuard("Worker")

    def _make_decoders(self) -> dict[tuple[str, RecordField], RegistryDecoder]:
        """Decoders of the registry-format sources, by (topic, "value" or "key")."""
        registry = self._registry
        decoders: dict[tuple[str, RecordField], RegistryDecoder] = {}
        if registry is None:
            return decoders
        for src in self._sources:
            what = f"source {src.topic!r}"
            if src.uses_registry:
                decoders[src.topic, "value"] = registry.decoder(src.format, src.schema, what=what)
            if src.key_uses_registry:
                assert src.key_format is not None
                decoders[src.topic, "key"] = registry.decoder(src.key_format, src.key_schema, what=what, field="key")
        return decoders

    @property
    def workflows(self) -> list[Workflow]:
        """The workflows this worker serves."""
        return list(self._served)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """(host, port) of the metrics endpoint while `run` serves it (None: no metrics)."""
        return self._metrics_server.address if self._metrics_server is not None else None

    @property
    def source_partitions(self) -> dict[tuple[str, int], bool]:
        """The source partitions this worker reads now: (topic, partition) -> paused by back-pressure."""
        session = self._session
        if session is None:
            return {}
        return {key: src.paused for key, src in session.partitions.sources.items()}

    @property
    def session(self) -> WorkerSession | None:
        """The current group session (None before `run` or between restarts)."""
        return self._session

    def _claim_state_dir(self, namespace: str) -> tuple[Path, str]:
        if self._state_dir is not None:
            lock = _StateDirLock(self._state_dir)
            if not lock.try_acquire():
                raise StateError(
                    f"state_dir {self._state_dir} is in use by another worker process; give each worker its own"
                )
            id_file = self._state_dir / "instance.id"
            if not id_file.exists():
                id_file.write_text(f"{self.worker_name}-{secrets.token_hex(4)}")
            self._lock = lock
            return self._state_dir, id_file.read_text().strip()
        root = EngineSettings.from_env().state_root(namespace)
        for slot in range(256):
            path = root / f"{self.worker_name}-{slot}"
            lock = _StateDirLock(path)
            if lock.try_acquire():
                self._lock = lock
                return path, f"{self.worker_name}-{slot}-{socket.gethostname()}"
        raise StateError(f"no free state slot under {root}: more than 256 workers on this host?")

    async def run(self) -> None:
        """Run until `stop()` (or SIGINT/SIGTERM when `install_signal_handlers()` was called).

        Raises:
            KafkaSetupError: the broker is unreachable or the namespace is unusable.
            KafkaAuthorizationError: Kafka refused this principal (a missing ACL, failed
                authentication); the message names the ACLs (docs/security.md).
            StateError: the state folder is locked by another worker.
            SchemaRegistryUnavailableError: the schema registry (`schema_registry`) does not answer.
            ForkedProcessError: the worker was made before this process was forked.
            EventLoopNotInstalledError: GRCTL_EVENT_LOOP asks for uvloop, which is not installed.
        """
        self._fork_guard.check()
        check_requested()  # GRCTL_EVENT_LOOP=uvloop without uvloop installed fails here, by name
        settings.gc_mode()  # a GRCTL_GC the worker does not know fails here, by name, before connecting
        if (wanted := settings.event_loop()) != (running := running_loop_name()):
            logger.warning(
                "GRCTL_EVENT_LOOP=%s, but this worker runs on %s's loop: the loop is made by what runs the "
                "worker (grctl worker does it; a program of your own: grctl.worker.event_loop.run(main()))",
                wanted,
                running,
            )
        self._done.clear()
        self._started = True
        try:
            conn = self._connection or await Connection.connect()
            self._connection = conn
            results = {
                wf.results_topic: f"the results topic of {wf.workflow_type!r}"
                for wf in self._served
                if wf.results_topic
            }
            results.update({src.topic: "a source topic" for src in self._sources})
            self._topics = TopicDirectory(AdminClient(conn.client_config()))
            if results:  # fail at start, not at the first run that ends (or never, for a source)
                await asyncio.get_running_loop().run_in_executor(None, self._topics.require, results)
            if self._registry is not None:  # likewise: an unreachable registry is named at start
                self._decoders = self._make_decoders()  # on the client the registry has now (see close)
                await asyncio.get_running_loop().run_in_executor(None, self._registry.check)
            if self._limiters:
                await asyncio.get_running_loop().run_in_executor(None, declare_limiters, conn, self._limiters)
            state_dir, instance_id = self._claim_state_dir(conn.namespace)
            if self._metrics_port is not None:
                self._serve_metrics(conn.namespace)
        except BaseException as exc:
            if self._lock is not None:
                self._lock.release()
            if self._registry is not None:
                self._registry.close()
            self._startup_error = exc
            self._done.set()
            raise
        catalog = ServedCatalog(self._served)
        machine = Machine(catalog, self.worker_id)
        refresh = asyncio.create_task(self._refresh_settings(conn, catalog), name="grctl-settings")
        logger.info(
            "worker %s starting: namespace %s, %d partitions, types %s, state %s",
            self.worker_id, conn.namespace, conn.num_partitions, self._served.describe(), state_dir,
        )  # fmt: skip
        failures = 0  # sessions failed in a row
        loop = asyncio.get_running_loop()
        gc_tuned = gc_tuning.tune()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    # Learned anew for every session: a topic's max.message.bytes may have changed.
                    limits = await loop.run_in_executor(None, conn.learn_limits, self._kafka_config.get("producer"))
                    catalog.settings = await loop.run_in_executor(None, read_settings, conn)
                except KafkaSetupError as exc:
                    self._stop_if_refused(exc, conn.namespace)
                    failures += 1
                    await self._wait_before_restart(failures, SessionRestart(str(exc)))
                    continue
                session = WorkerSession(
                    connection=conn,
                    served=self._served,
                    machine=machine,
                    codec=self._codec,
                    worker_id=self.worker_id,
                    instance_id=instance_id,
                    state_dir=state_dir,
                    max_concurrent_steps=self._max_steps,
                    memory=self._memory,
                    kafka_config=self._kafka_config,
                    on_ready=self._ready.set,
                    limits=limits,
                    quarantine=self._quarantine,
                    metrics=self.metrics,
                    sources=self._sources,
                    emit_topics=self._topics,
                    pipeline_steps=self._pipeline_steps,
                    now_ms=self._now_ms,
                    group_protocol=self._group_protocol,
                    decoders=self._decoders,
                    registry=self._registry,
                )
                session.shutdown_timeout = self._shutdown_timeout
                self._session = session
                if self.metrics is not None:
                    self.metrics.session_started()
                try:
                    await session.run(self._stop)
                except SessionRestart as exc:
                    self._stop_if_refused(exc, conn.namespace)
                    if self.metrics is not None:
                        self.metrics.session_restarted()
                    failures = 1 if time.monotonic() - started >= SESSION_HEALTHY_S else failures + 1
                    self._quarantine_refused(exc)
                    await self._wait_before_restart(failures, exc)
        finally:
            gc_tuning.untune(gc_tuned)
            refresh.cancel()
            self._session = None
            if self._metrics_server is not None:
                self._metrics_server.stop()
                self._metrics_server = None
            if self._lock is not None:
                self._lock.release()
            if self._registry is not None:  # its HTTP connections; a later run opens new ones
                self._registry.close()
            self._done.set()
            logger.info("worker %s stopped", self.worker_id)

    async def _refresh_settings(self, conn: Connection, catalog: ServedCatalog) -> None:
        """Read the namespace's settings again now and then (a changed retention applies to runs ending later)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SETTINGS_REFRESH_S)
            try:
                catalog.settings = await loop.run_in_executor(None, read_settings, conn)
            except KafkaSetupError as exc:
                logger.warning(
                    "worker %s: cannot read the namespace's settings (kept the last): %s", self.worker_id, exc
                )

    def _serve_metrics(self, namespace: str) -> None:
        """Start the metrics endpoint (raises `MetricsPortInUseError` if its port is taken)."""
        assert self._metrics_port is not None
        if self.metrics is None:
            self.metrics = WorkerMetrics(
                self.worker_id, namespace, lambda: self._session.view() if self._session is not None else None
            )
        self.metrics.loop = asyncio.get_running_loop()
        server = MetricsServer(self.metrics, self._metrics_port, self._metrics_host, lambda: not self._done.is_set())
        server.start()
        self._metrics_server = server

    def _stop_if_refused(self, exc: BaseException, namespace: str) -> None:
        """Raise `KafkaAuthorizationError` if Kafka refused this principal (no restart fixes a missing ACL)."""
        if _refused_record(exc) is not None:
            return  # one run's record (an emit to a topic it may not write): that run fails
        refused = authorization_error(exc, namespace, "worker")
        if refused is not None:
            logger.error("worker %s stops: %s", self.worker_id, refused)
            self._startup_error = refused  # what `wait_until_ready` raises
            raise refused from None

    def _quarantine_refused(self, exc: BaseException) -> None:
        """If a record Kafka refused ended the session, its run fails in the next one.

        Without this the same transition would be rebuilt and refused after every restart, and
        every other run of the worker would wait behind it.
        """
        cause = _refused_record(exc)
        if cause is None:
            return
        if cause.wf_id is None:
            logger.error("worker %s: Kafka refused a record that belongs to no run: %s", self.worker_id, cause)
            return
        logger.error(
            "worker %s: Kafka refused a record of the run of wf_id %r (%s); the run fails in the next session",
            self.worker_id, cause.wf_id, cause,
        )  # fmt: skip
        if len(self._quarantine) < QUARANTINE_MAX:
            self._quarantine[cause.wf_id] = Refusal(
                cause.code,
                cause.topic,
                f"Kafka refused its record for {cause.topic} ({cause.size:,} bytes): {cause.reason}",
            )

    async def _wait_before_restart(self, failures: int, exc: SessionRestart) -> None:
        delay = session_restart_delay(failures)
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        if failures >= RESTARTS_BEFORE_ERROR:
            logger.error(
                "worker %s: its session keeps failing (%d times in a row), next attempt in %.1f s: %s",
                self.worker_id, failures, delay, cause,
            )  # fmt: skip
        else:
            logger.warning("worker %s: session restarts in %.1f s: %s", self.worker_id, delay, cause)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()

    async def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Wait until the worker has joined its consumer group (timeout in seconds).

        Raises:
            TimeoutError: not ready in time.
            Exception: the error that stopped `run()` during startup.
        """
        ready = asyncio.create_task(self._ready.wait())
        done = asyncio.create_task(self._done.wait())
        try:
            await asyncio.wait([ready, done], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            done.cancel()
        if self._startup_error is not None:
            raise self._startup_error
        if not self._ready.is_set():
            raise TimeoutError(f"worker {self.worker_id} not ready after {timeout}s")

    async def stop(self, shutdown_timeout: float = 30.0) -> None:
        """Stop gracefully: running steps get `shutdown_timeout` seconds to finish, then are
        cancelled (they re-execute on the partition's next owner)."""
        self._shutdown_timeout = shutdown_timeout
        if self._session is not None:
            self._session.shutdown_timeout = shutdown_timeout
        self._stop.set()
        if not self._started or self._done.is_set():
            return
        await self._done.wait()

    def install_signal_handlers(self) -> None:
        """Stop gracefully on SIGINT and SIGTERM."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)


def _refused_record(exc: BaseException) -> RecordRefused | None:
    """The `RecordRefused` that `exc` was raised from, if any."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, RecordRefused):
        cause = cause.__cause__
    return cause


def declare_limiters(conn: Connection, limiters: list[Limiter]) -> None:
    """Send each declared limiter to the partition that keeps it (blocking: call it from a thread).

    The partition's owner applies a declaration only if it differs from the one it last applied
    (`LimiterSetCmd.declared`), so a change made at runtime stands until the code changes.

    Raises:
        KafkaSetupError: the declarations were not acknowledged by the broker.
    """
    producer = Producer(conn.client_config(**{"enable.idempotence": True, "acks": "all"}))
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    topic, n = conn.topics.directives, conn.num_partitions
    for lim in limiters:
        spec = lim.spec()
        cmd = LimiterSetCmd(wf_id=lim.name, spec=spec, declared=spec.fingerprint(), identity="worker declaration")
        producer.produce(topic, encoder.encode(cmd), lim.name.encode(), partition=partition_for(lim.name, n),
                         on_delivery=delivered)  # fmt: skip
    left = producer.flush(DECLARE_TIMEOUT_S)
    if left or failed:
        raise KafkaSetupError(
            f"the declarations of limiters {', '.join(lim.name for lim in limiters)} were not acknowledged by "
            f"the broker within {DECLARE_TIMEOUT_S:.0f}s ({'; '.join(failed) or f'{left} pending'})"
        )
