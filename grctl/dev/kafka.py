"""Run a real local Apache Kafka (KRaft mode) from its jars, without Docker.

The broker's jars are fetched once with Maven (``kafka-pom.xml`` next to this module) into a
cache folder and reused. A cluster is one or more JVMs on 127.0.0.1, each node a combined
broker+controller with static ``controller.quorum.voters``. The JVMs run detached, so a cluster
outlives the process that started it; its state lives on disk::

    <home>/                              option ``home``, else $GRCTL_DEV_HOME, else
                                         $XDG_CACHE_HOME/grctl (default ~/.cache/grctl)
      kafka-<version>/libs/*.jar         broker jars
      kafka-<version>/.fetched           written only after a complete fetch
      kafka-<version>.lock               fcntl lock held while fetching
      clusters/.<name>.lock              fcntl lock held while starting/stopping <name>
      clusters/<name>/cluster.json       name, brokers, ports, cluster id
      clusters/<name>/log4j2.properties
      clusters/<name>/node-<id>/server.properties, data/, logs/server.log, broker.out, pid

Typical use::

    from grctl.dev import kafka

    bootstrap = kafka.start()               # "127.0.0.1:9092", idempotent
    bootstrap3 = kafka.start(brokers=3)     # cluster "cluster3" on 19092/19094/19096
    kafka.kill_node("cluster3", 2)
    kafka.restart_node("cluster3", 2)
    kafka.stop("cluster3")

Every failure the user can fix raises `LocalKafkaError` with a message saying what to do.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from grctl import settings
from grctl.dev import secure as _secure
from grctl.dev._errors import LocalKafkaError
from grctl.dev.java import JavaRuntime, chosen_java, parse_java_major, version_output
from grctl.dev.secure import SecureFiles

__all__ = [
    "DEFAULT_CLUSTER_PORT",
    "DEFAULT_NAME",
    "DEFAULT_PORT",
    "ClusterSpec",
    "ClusterStatus",
    "JavaInfo",
    "LocalKafkaError",
    "NodeSpec",
    "NodeStatus",
    "StartResult",
    "check_ports_free",
    "cluster_secure_files",
    "default_name",
    "ensure_jars",
    "ensure_running",
    "find_java",
    "find_maven",
    "kafka_version",
    "kill_node",
    "list_clusters",
    "log4j2_properties",
    "new_cluster_id",
    "pause_node",
    "render_properties",
    "resolve_home",
    "restart_node",
    "resume_node",
    "secure_files",
    "server_properties",
    "start",
    "status",
    "stop",
    "wipe",
]

logger = logging.getLogger(__name__)

POM_PATH = Path(__file__).with_name("kafka-pom.xml")
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# kafka_2.13 4.3.1 declares slf4j-api 1.7.36, which Maven's nearest-wins rule keeps over the
# 2.0.17 that log4j-slf4j2-impl needs; with 1.7.x on the classpath the broker logs nothing
# ("SLF4J: Defaulting to no-operation (NOP) logger"). The fetch replaces it with this version.
SLF4J_API_VERSION = "2.0.17"
MIN_JAVA_MAJOR = 17

DEFAULT_NAME = "dev"
DEFAULT_PORT = 9092
# Multi-node clusters default elsewhere so that they can run beside the single node.
DEFAULT_CLUSTER_PORT = 19092
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx512m"
# The stock kafka-run-class.sh JVM flags, minus the ones for JMX and GC logs.
JVM_FLAGS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)

# A cold JVM start plus storage format takes 5-10 s on 2 cores; three JVMs at once share them.
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
KILL_WAIT_S = 10.0
# Maven may download ~45 MB on the very first fetch.
FETCH_TIMEOUT_S = 900.0
LOCK_TIMEOUT_S = 600.0
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 25

READINESS_TXN_ID = "grctl-dev-readiness"
READINESS_GROUP = "grctl-dev-readiness"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _check_name(name: str) -> None:
    # Names become folder names: no separators, no "..", nothing a shell would mangle.
    if not _NAME_RE.match(name):
        raise LocalKafkaError(
            f"invalid cluster name {name!r}: use letters, digits, '.', '_' or '-' (at most 63 characters)"
        )


# --------------------------------------------------------------------------------------------
# Specs and paths


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node of a local cluster: a combined broker and controller.

    Attributes:
        node_id: The KRaft ``node.id`` (1-based).
        port: Client (PLAINTEXT) port on 127.0.0.1.
        controller_port: Controller quorum port on 127.0.0.1.
        mtls_port: The mTLS (client certificate) listener's port of a secured node, else None.
        advertised_port: The client port the node advertises (metadata), when not `port`.
    """

    node_id: int
    port: int
    controller_port: int
    mtls_port: int | None = None
    advertised_port: int | None = None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What a local cluster is; persisted as ``cluster.json`` in its folder.

    Node ``i`` (1-based) listens on ``port + 2*(i-1)`` for clients and the next port for the
    controller quorum, so one port base describes the whole cluster. A secured cluster's nodes
    take three ports each: node ``i`` starts at ``port + 3*(i-1)`` (clients, controller, mTLS).

    Attributes:
        name: Cluster name (its folder under ``<home>/clusters``).
        brokers: Number of nodes.
        port: Client port of node 1.
        cluster_id: KRaft cluster id (16 random bytes, base64url without padding).
        kafka_version: Kafka version the storage was formatted with.
        secure: Per node SASL_SSL (SCRAM-SHA-512) on its client port, mTLS on its client port
            + 2 (also the inter-broker listener), an SSL controller listener with client
            certificates, an authorizer (see `grctl.dev.secure`).
        advertised_port: The client port node 1 advertises instead of ``port`` (node ``i``:
            ``advertised_port + 2*(i-1)``): put a fault-injecting TCP proxy there, in front of
            ``port``, and every client (and the broker's own inter-broker traffic) goes
            through it, since clients connect to the advertised address from metadata. The
            controller quorum's voters are then ``advertised port + 1`` of each node (a proxy
            there, in front of the controller port). The proxies must run before the cluster
            starts. Plaintext clusters only.
    """

    name: str
    brokers: int
    port: int
    cluster_id: str
    kafka_version: str
    secure: bool = False
    advertised_port: int | None = None

    def __post_init__(self) -> None:
        """Validate the fields.

        Raises:
            LocalKafkaError: A field has an unusable value.
        """
        _check_name(self.name)
        if not 1 <= self.brokers <= 9:
            raise LocalKafkaError(f"invalid number of brokers {self.brokers}: use 1 to 9 (1 or 3 usually)")
        if self.advertised_port is not None and (
            self.secure or not 1024 <= self.advertised_port <= 65535 - 2 * self.brokers
        ):
            raise LocalKafkaError(
                f"invalid advertised port {self.advertised_port}: a plaintext cluster's advertised ports must lie "
                f"inside 1024..65535"
            )
        last = self.port + self.ports_per_node * self.brokers - 1
        if self.port < 1024 or last > 65535:
            raise LocalKafkaError(
                f"invalid port {self.port}: {self.brokers} node(s) need ports {self.port}..{last} inside 1024..65535"
            )

    @property
    def ports_per_node(self) -> int:
        """Client and controller port per node, and a secured node's mTLS port."""
        return 3 if self.secure else 2

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        """The cluster's nodes, node ids 1..brokers."""
        step = self.ports_per_node
        return tuple(
            NodeSpec(
                node_id=i,
                port=self.port + step * (i - 1),
                controller_port=self.port + step * (i - 1) + 1,
                mtls_port=self.port + step * (i - 1) + 2 if self.secure else None,
                advertised_port=self.advertised_port + 2 * (i - 1) if self.advertised_port is not None else None,
            )
            for i in range(1, self.brokers + 1)
        )

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string, ``127.0.0.1:<port>[,...]``."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, node_id: int) -> NodeSpec:
        """Return the node with this id.

        Args:
            node_id: A node id of this cluster.

        Returns:
            The node.

        Raises:
            LocalKafkaError: The cluster has no such node.
        """
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise LocalKafkaError(f"cluster {self.name!r} has no node {node_id}: its nodes are 1..{self.brokers}")


@dataclass(frozen=True, slots=True)
class _Paths:
    home: Path
    name: str

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def clusters(self) -> Path:
        return self.home / "clusters"

    @property
    def cluster_dir(self) -> Path:
        return self.clusters / self.name

    @property
    def lock_file(self) -> Path:
        # Outside the cluster folder, so that wipe() can delete the folder while holding it.
        return self.clusters / f".{self.name}.lock"

    @property
    def spec_file(self) -> Path:
        return self.cluster_dir / "cluster.json"

    @property
    def log4j_file(self) -> Path:
        return self.cluster_dir / "log4j2.properties"

    def node_dir(self, node_id: int) -> Path:
        return self.cluster_dir / f"node-{node_id}"

    def props_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def data_dir(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "data"

    def logs_dir(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "logs"

    def server_log(self, node_id: int) -> Path:
        return self.logs_dir(node_id) / "server.log"

    def broker_out(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "broker.out"

    def pid_file(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "pid"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Return the grctl dev home folder.

    Args:
        home: Explicit folder; else ``$GRCTL_DEV_HOME``; else ``$XDG_CACHE_HOME/grctl``
            (``~/.cache/grctl`` when XDG_CACHE_HOME is unset or relative).

    Returns:
        The absolute folder (not created).
    """
    if home is not None and str(home):
        return Path(home).expanduser().resolve()
    env = settings.dev_home()
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return (base / "grctl").resolve()


def default_name(brokers: int | None) -> str:
    """Return the default cluster name for a number of brokers.

    Args:
        brokers: Number of nodes, ``None`` meaning 1.

    Returns:
        ``"dev"`` for one node, ``"cluster<N>"`` otherwise.
    """
    return DEFAULT_NAME if brokers in (None, 1) else f"cluster{brokers}"


def new_cluster_id() -> str:
    """Return a fresh KRaft cluster id: 16 random bytes, base64url without padding (22 chars)."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")


def kafka_version(pom: Path = POM_PATH) -> str:
    """Return the Kafka version pinned in the pom (property ``kafka.version``).

    Args:
        pom: The pom listing the broker jars.

    Returns:
        The version string, e.g. ``"4.3.1"``.

    Raises:
        LocalKafkaError: The pom is missing or has no ``kafka.version`` property.
    """
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise LocalKafkaError(f"cannot read the Kafka pom {pom}: {exc}; reinstall grctl") from exc
    for elem in root.iter():
        if elem.tag.rsplit("}", 1)[-1] == "kafka.version" and elem.text:
            return elem.text.strip()
    raise LocalKafkaError(f"the Kafka pom {pom} has no <kafka.version> property; reinstall grctl")


# --------------------------------------------------------------------------------------------
# Configuration files


def server_properties(spec: ClusterSpec, node: NodeSpec, node_dir: Path) -> dict[str, str]:
    """Return the ``server.properties`` settings of one node.

    Single node: replication factor 1 everywhere (offsets and transaction-state topics too), so
    transactions work on one broker. Several nodes: replication factor ``min(3, brokers)`` and
    min ISR one less, no unclean election, and short heartbeat/session/election/lag timeouts so
    that fault tests see a killed broker fenced within seconds.

    Args:
        spec: The cluster.
        node: The node to configure.
        node_dir: The node's folder (``data/`` is created under it).

    Returns:
        Ordered key/value settings.
    """
    rf = min(3, spec.brokers)
    min_isr = max(1, rf - 1)
    # With advertised ports, the quorum too goes through what sits there (a proxy per node's
    # controller port at advertised port + 1), so a test can cut a node off the quorum as well.
    voters = ",".join(
        f"{n.node_id}@127.0.0.1:{n.advertised_port + 1 if n.advertised_port else n.controller_port}" for n in spec.nodes
    )
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.advertised_port or node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(node_dir / "data"),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(min_isr),
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": str(rf),
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        # The KIP-848 protocol's session and heartbeat (`Worker(group_protocol="consumer")`):
        # the broker's, 45 s and 5 s by default; 6 s and 1 s as the classic workers use.
        "group.consumer.min.session.timeout.ms": "1000",
        "group.consumer.session.timeout.ms": "6000",
        "group.consumer.min.heartbeat.interval.ms": "500",
        "group.consumer.heartbeat.interval.ms": "1000",
        # The cleaner sleeps this long when it finds nothing to compact (default 15 s).
        "log.cleaner.backoff.ms": "1000",
    }
    if spec.secure:
        assert node.mtls_port is not None
        props.update(
            _secure.broker_properties(
                secure_files(node_dir.parent),
                node.port,
                node.controller_port,
                node.mtls_port,
                node_id=node.node_id,
                brokers=spec.brokers,
            )
        )
    if spec.brokers > 1:
        props.update(
            {
                "broker.heartbeat.interval.ms": "500",
                "broker.session.timeout.ms": "4000",
                "controller.quorum.election.timeout.ms": "750",
                "controller.quorum.fetch.timeout.ms": "1500",
                "replica.lag.time.max.ms": "5000",
            }
        )
    return props


def render_properties(props: Mapping[str, str], header: str = "") -> str:
    """Render settings as a Java properties file.

    Args:
        props: Settings. Values must not contain newlines; a ``#`` in a value stays part of it.
        header: Optional comment put first (each line prefixed with ``#``).

    Returns:
        The file text.

    Raises:
        ValueError: A key or value cannot be written as one properties line.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in props.items():
        if not key or any(c in key for c in "=:# \t\r\n") or any(c in value for c in "\r\n"):
            raise ValueError(f"cannot write property {key!r}={value!r} as one line")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


# Loggers that write INFO lines for every topic, partition, segment, group or transaction (or
# dump the whole config); root stays at INFO so that lifecycle lines remain.
_QUIET_LOGGERS = (
    "state.change.logger",
    "kafka.request.logger",
    "kafka.cluster",
    "kafka.log",
    "kafka.coordinator",
    "kafka.server.ReplicaFetcherManager",
    "kafka.server.ReplicaFetcherThread",
    "kafka.server.ReplicaAlterLogDirsManager",
    "org.apache.kafka.storage.internals.log",
    "org.apache.kafka.coordinator",
    "org.apache.kafka.controller.ReplicationControlManager",
    "org.apache.kafka.image.loader",
    "org.apache.kafka.clients",
    "org.apache.kafka.common.config.AbstractConfig",
    "org.apache.kafka.common.utils.AppInfoParser",
)


def log4j2_properties() -> str:
    """Return the log4j2 configuration used by every node.

    The broker logs to ``${sys:kafka.logs.dir}/server.log`` (rolled at 20 MB, 3 files kept),
    nothing to the terminal. Noisy packages log at WARN, the rest (lifecycle lines such as
    "Kafka Server started") at INFO.

    Returns:
        The properties file text.
    """
    lines = [
        "# Written by grctl.dev.kafka: the local broker's logging.",
        "status = warn",
        "name = grctl-dev-kafka",
        "appender.server.type = RollingFile",
        "appender.server.name = SERVER",
        "appender.server.fileName = ${sys:kafka.logs.dir}/server.log",
        "appender.server.filePattern = ${sys:kafka.logs.dir}/server.log.%i",
        "appender.server.layout.type = PatternLayout",
        "appender.server.layout.pattern = [%d] %p %m (%c)%n",
        "appender.server.policies.type = Policies",
        "appender.server.policies.size.type = SizeBasedTriggeringPolicy",
        "appender.server.policies.size.size = 20MB",
        "appender.server.strategy.type = DefaultRolloverStrategy",
        "appender.server.strategy.max = 3",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.server.ref = SERVER",
    ]
    for i, name in enumerate(_QUIET_LOGGERS):
        lines += [f"logger.quiet{i}.name = {name}", f"logger.quiet{i}.level = WARN"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Prerequisites: java, maven, jars


#: The java the broker runs on (`grctl.dev.java.JavaRuntime`: path, major, version_line).
JavaInfo = JavaRuntime

_INSTALL_JAVA = "install OpenJDK 17+, e.g. apt-get install openjdk-17-jre-headless"


def find_java() -> JavaInfo:
    """Find a Java 17+ runtime: ``$JAVA_HOME/bin/java`` if set, else ``java`` on PATH.

    The broker runs on the java the user chose (`grctl.dev.java.chosen_java`), not on another
    one found on the machine: what ``scripts/setup`` checked is what runs.

    Returns:
        The java executable and its version.

    Raises:
        LocalKafkaError: No java, or one older than 17.
    """
    java = chosen_java()
    if java is None:
        raise LocalKafkaError(f"no `java` on PATH (and JAVA_HOME is not set): Kafka needs Java; {_INSTALL_JAVA}")
    try:
        text = version_output(java)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"cannot run {java} -version ({exc}); {_INSTALL_JAVA}") from exc
    major = parse_java_major(text)
    if major is None:
        raise LocalKafkaError(
            f"cannot tell the Java version of {java} (output: {text.strip()[:200]!r}); {_INSTALL_JAVA}"
        )
    first_line = text.strip().splitlines()[0]
    if major < MIN_JAVA_MAJOR:
        raise LocalKafkaError(
            f"{java} is Java {major} ({first_line}); Kafka 4 needs Java {MIN_JAVA_MAJOR}+: "
            f"{_INSTALL_JAVA}, or point JAVA_HOME at one"
        )
    return JavaInfo(path=java, major=major, version_line=first_line)


def find_maven() -> str:
    """Return the path of ``mvn``.

    Raises:
        LocalKafkaError: Maven is not on PATH.
    """
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "no `mvn` (Apache Maven) on PATH: it is needed once to fetch the Kafka jars; "
            "install it, e.g. apt-get install maven"
        )
    return mvn


def ensure_jars(home: str | os.PathLike[str] | None = None, *, pom: Path = POM_PATH) -> Path:
    """Fetch the broker jars into ``<home>/kafka-<version>/libs`` unless already there.

    A marker file is written only after a complete fetch, so an interrupted fetch is redone.
    A file lock makes concurrent callers (several pytest processes) wait for one fetch.

    Args:
        home: The dev home folder (see `resolve_home`).
        pom: The pom listing the jars.

    Returns:
        The ``libs`` folder.

    Raises:
        LocalKafkaError: Maven is missing or the fetch failed (with Maven's last lines).
    """
    home_dir = resolve_home(home)
    version = kafka_version(pom)
    kdir = home_dir / f"kafka-{version}"
    libs, marker = kdir / "libs", kdir / ".fetched"
    if marker.is_file() and libs.is_dir():
        return libs
    with _file_lock(home_dir / f"kafka-{version}.lock", f"fetching the Kafka {version} jars"):
        if marker.is_file() and libs.is_dir():
            return libs  # another process fetched them while we waited
        mvn = find_maven()
        logger.info("fetching the Kafka %s jars into %s (once)", version, libs)
        kdir.mkdir(parents=True, exist_ok=True)
        partial = kdir / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(libs, ignore_errors=True)
        shutil.copyfile(pom, kdir / "pom.xml")
        _run_maven(
            mvn,
            kdir,
            [
                f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
        )
        _fix_slf4j_api(mvn, kdir, partial)
        jars = sorted(p.name for p in partial.glob("*.jar"))
        if not any(j.startswith("kafka_2.13-") for j in jars):
            raise LocalKafkaError(f"Maven finished but {partial} holds no kafka_2.13 jar; check {kdir / 'pom.xml'}")
        partial.rename(libs)
        marker.write_text(json.dumps({"kafka_version": version, "jars": jars}, indent=1) + "\n")
        return libs


def _run_maven(mvn: str, kdir: Path, args: Sequence[str]) -> None:
    cmd = [mvn, "-B", "-q", "-f", str(kdir / "pom.xml"), *args]
    try:
        out = subprocess.run(cmd, cwd=kdir, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(
            f"Maven did not finish fetching the Kafka jars within {FETCH_TIMEOUT_S:.0f} s; "
            "check the network access to Maven Central and retry"
        ) from exc
    if out.returncode != 0:
        tail = _tail_text((out.stdout or "") + (out.stderr or ""), LOG_TAIL_LINES)
        raise LocalKafkaError(
            f"Maven could not fetch the Kafka jars (exit {out.returncode}); check access to Maven "
            f"Central (or a mirror in ~/.m2/settings.xml) and retry",
            f"command: {shlex.join(cmd)}\nlast lines of Maven's output:\n{tail}",
        )


def _fix_slf4j_api(mvn: str, kdir: Path, libs: Path) -> None:
    if not any(libs.glob("log4j-slf4j2-impl-*.jar")):
        return
    old = [p for p in libs.glob("slf4j-api-*.jar") if not p.name.startswith("slf4j-api-2.")]
    if not old:
        return
    _run_maven(
        mvn,
        kdir,
        [
            f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact=org.slf4j:slf4j-api:{SLF4J_API_VERSION}",
            f"-DoutputDirectory={libs}",
        ],
    )
    for p in old:
        p.unlink()


# --------------------------------------------------------------------------------------------
# Locks, processes, ports


@contextlib.contextmanager
def _file_lock(path: Path, purpose: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout
        logged = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LocalKafkaError(
                        f"timed out after {timeout:.0f} s waiting for {path} (another process is "
                        f"{purpose}); wait for it or end it"
                    ) from None
                if not logged:
                    logger.info("waiting for another process %s (lock %s)", purpose, path)
                    logged = True
                time.sleep(POLL_INTERVAL_S)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# JVMs started by this process, kept so that they can be reaped (no zombies) and their exit
# codes read. Processes started by other processes are checked through /proc or ps.
_children: dict[int, subprocess.Popen[bytes]] = {}
# Readiness clients whose last request may still be in flight: kept alive for the process.
_unfinished_clients: list[object] = []


def _cmdline(pid: int) -> str | None:
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            return None
    try:
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _pid_alive(pid: int, props_file: Path) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # Guard against pid reuse: it must be the JVM of this node (a zombie has an empty cmdline).
    cmd = _cmdline(pid)
    return cmd is not None and "kafka.Kafka" in cmd and str(props_file) in cmd


def _read_pid(paths: _Paths, node_id: int) -> int | None:
    try:
        return int(paths.pid_file(node_id).read_text().strip())
    except (OSError, ValueError):
        return None


def _node_pid_if_alive(paths: _Paths, node_id: int) -> int | None:
    pid = _read_pid(paths, node_id)
    if pid is not None and _pid_alive(pid, paths.props_file(node_id)):
        return pid
    return None


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    # SO_REUSEADDR as the JVM's server socket sets it, so TIME_WAIT leftovers do not count.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_holder(port: int, home: Path) -> str:
    for name in list_clusters(home):
        paths = _Paths(home, name)
        spec = _load_spec(paths)
        if spec is None:
            continue
        for node in spec.nodes:
            if port in (node.port, node.controller_port, node.mtls_port):
                pid = _node_pid_if_alive(paths, node.node_id)
                if pid is not None:
                    return f"grctl cluster {name!r} node {node.node_id} (pid {pid}, home {home})"
    for cmd in (["ss", "-Hltnp", f"sport = :{port}"], ["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN"]):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = re.search(r'\("([^"]+)",pid=(\d+)', out)
        lines = out.strip().splitlines()
        if m:
            program, pid = m.group(1), int(m.group(2))
        elif cmd[0] == "lsof" and len(lines) > 1 and lines[1].split()[1].isdigit():
            program, pid = lines[1].split()[0], int(lines[1].split()[1])
        else:
            continue
        cmdline = _cmdline(pid) or ""
        if "kafka.Kafka" in cmdline:
            return f"a Kafka broker (pid {pid}, config {cmdline.rsplit(' ', 1)[-1]})"
        return f"{program} (pid {pid})"
    return "another process (could not tell which)"


def check_ports_free(ports: Mapping[int, str], home: str | os.PathLike[str] | None = None) -> None:
    """Check that each port can be bound on 127.0.0.1.

    Args:
        ports: Port to a short description (e.g. ``"node 1 client port"``).
        home: The dev home folder, to recognise ports held by other local clusters.

    Raises:
        LocalKafkaError: A port is taken; the message names it, its holder if known, and
            suggests ``--port``.
    """
    for port, what in ports.items():
        if not _port_free(port):
            holder = _port_holder(port, resolve_home(home))
            raise LocalKafkaError(
                f"port {port} ({what}) is already in use by {holder}: stop it, or use another port base (--port)"
            )


def _tail_text(text: str, n: int) -> str:
    lines = text.rstrip().splitlines()[-n:]
    return "\n".join(f"    {line}" for line in lines) if lines else "    (empty)"


def _tail_file(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return "    (missing)"
    return _tail_text(text, n)


def _node_diagnostics(paths: _Paths, node_id: int) -> str:
    return (
        f"  JVM output: {paths.broker_out(node_id)}\n"
        f"  broker log: {paths.server_log(node_id)}\n"
        f"  last lines of broker.out:\n{_tail_file(paths.broker_out(node_id), 10)}\n"
        f"  last lines of server.log:\n{_tail_file(paths.server_log(node_id))}"
    )


# --------------------------------------------------------------------------------------------
# Cluster state on disk


def _load_spec(paths: _Paths) -> ClusterSpec | None:
    try:
        raw = json.loads(paths.spec_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LocalKafkaError(
            f"cannot read {paths.spec_file} ({exc}); delete the cluster with `grctl dev kafka wipe --name {paths.name}`"
        ) from exc
    try:
        return ClusterSpec(
            name=str(raw["name"]),
            brokers=int(raw["brokers"]),
            port=int(raw["port"]),
            cluster_id=str(raw["cluster_id"]),
            kafka_version=str(raw["kafka_version"]),
            secure=bool(raw.get("secure", False)),
            advertised_port=int(raw["advertised_port"]) if raw.get("advertised_port") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LocalKafkaError(
            f"{paths.spec_file} is incomplete ({exc!r}); delete the cluster with "
            f"`grctl dev kafka wipe --name {paths.name}`"
        ) from exc


def _write_cluster_files(paths: _Paths, spec: ClusterSpec) -> None:
    paths.cluster_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.spec_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(spec), indent=2) + "\n")
    tmp.replace(paths.spec_file)
    paths.log4j_file.write_text(log4j2_properties())
    for node in spec.nodes:
        ndir = paths.node_dir(node.node_id)
        paths.data_dir(node.node_id).mkdir(parents=True, exist_ok=True)
        paths.logs_dir(node.node_id).mkdir(parents=True, exist_ok=True)
        header = f"Written by grctl.dev.kafka for cluster {spec.name!r} node {node.node_id}; rewritten at every start."
        paths.props_file(node.node_id).write_text(render_properties(server_properties(spec, node, ndir), header))


def list_clusters(home: str | os.PathLike[str] | None = None) -> list[str]:
    """Return the names of the clusters recorded under the home folder.

    Args:
        home: The dev home folder (see `resolve_home`).

    Returns:
        Sorted cluster names.
    """
    clusters = resolve_home(home) / "clusters"
    if not clusters.is_dir():
        return []
    return sorted(p.name for p in clusters.iterdir() if (p / "cluster.json").is_file())


# --------------------------------------------------------------------------------------------
# Status


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The state of one node.

    Attributes:
        node_id: KRaft node id.
        pid: Process id of its JVM when alive, else ``None``.
        alive: Whether its JVM runs.
        port: Client port.
        controller_port: Controller port.
        port_open: Whether the client port accepts connections.
        dir: The node's folder.
    """

    node_id: int
    pid: int | None
    alive: bool
    port: int
    controller_port: int
    port_open: bool
    dir: str


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """The state of one local cluster.

    Attributes:
        name: Cluster name.
        home: The dev home folder.
        exists: Whether the cluster has been created (``cluster.json`` exists).
        brokers: Number of nodes (0 when it does not exist).
        bootstrap: Bootstrap servers string ('' when it does not exist).
        cluster_id: KRaft cluster id ('' when it does not exist).
        nodes: Per-node state.
    """

    name: str
    home: str
    exists: bool
    brokers: int
    bootstrap: str
    cluster_id: str
    nodes: tuple[NodeStatus, ...]

    @property
    def running(self) -> bool:
        """Whether every node's JVM runs."""
        return self.exists and bool(self.nodes) and all(n.alive for n in self.nodes)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict (with ``running``)."""
        data = asdict(self)
        data["running"] = self.running
        return data


def status(name: str = DEFAULT_NAME, *, home: str | os.PathLike[str] | None = None) -> ClusterStatus:
    """Return the state of a local cluster (without taking its lock).

    Args:
        name: Cluster name.
        home: The dev home folder (see `resolve_home`).

    Returns:
        Its status; ``exists`` is false when the cluster was never created.
    """
    paths = _Paths(resolve_home(home), name)
    spec = _load_spec(paths)
    if spec is None:
        return ClusterStatus(name, str(paths.home), False, 0, "", "", ())
    nodes = []
    for node in spec.nodes:
        pid = _node_pid_if_alive(paths, node.node_id)
        nodes.append(
            NodeStatus(
                node_id=node.node_id,
                pid=pid,
                alive=pid is not None,
                port=node.port,
                controller_port=node.controller_port,
                port_open=pid is not None and _port_open(node.port, timeout=0.3),
                dir=str(paths.node_dir(node.node_id)),
            )
        )
    return ClusterStatus(name, str(paths.home), True, spec.brokers, spec.bootstrap, spec.cluster_id, tuple(nodes))


# --------------------------------------------------------------------------------------------
# Start


@dataclass(frozen=True, slots=True)
class StartResult:
    """What `ensure_running` did.

    Attributes:
        bootstrap: Bootstrap servers string.
        name: Cluster name.
        started_nodes: Node ids this call started (empty when all were already running).
        elapsed_s: Seconds the call took.
        admin_config: A secured cluster's admin client config file (``grctl --kafka-config``).
    """

    bootstrap: str
    name: str
    started_nodes: tuple[int, ...]
    elapsed_s: float
    admin_config: Path | None = None

    @property
    def started(self) -> bool:
        """Whether this call started at least one node."""
        return bool(self.started_nodes)


def start(
    brokers: int | None = None,
    port: int | None = None,
    *,
    name: str | None = None,
    home: str | os.PathLike[str] | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> str:
    """Start a local Kafka cluster, or return the running one's bootstrap (idempotent).

    See `ensure_running` for the arguments.

    Returns:
        The bootstrap servers string ``127.0.0.1:<port>[,...]``.

    Raises:
        LocalKafkaError: See `ensure_running`.
    """
    return ensure_running(brokers, port, name=name, home=home, timeout=timeout).bootstrap


def ensure_running(
    brokers: int | None = None,
    port: int | None = None,
    *,
    name: str | None = None,
    home: str | os.PathLike[str] | None = None,
    timeout: float = READY_TIMEOUT_S,
    secure: bool | None = None,
    advertised_port: int | None = None,
) -> StartResult:
    """Start a local Kafka cluster and wait until it is ready; start only what is not running.

    Steps: 1. take the cluster's file lock; 2. if every node runs, check readiness and return;
    3. find java, check the ports, fetch the jars if needed, write the config files; 4. format
    the storage of never-formatted nodes; 5. start the missing nodes' JVMs detached;
    6. wait until ready: processes alive, ports accept, metadata lists every broker, the group
    coordinator answers and one ``init_transactions`` succeeds. On failure the JVMs started by
    this call are killed and the error shows the node's log tail.

    Args:
        brokers: Number of nodes; ``None`` means the recorded number, else 1. A recorded
            cluster cannot change its number of nodes (wipe it first).
        port: Client port of node 1 (node i uses ``port + 2*(i-1)`` and the next one for its
            controller; secured: ``port + 3*(i-1)``, then its controller and mTLS ports);
            ``None`` means the recorded port, else 9092 for one node and 19092 for more.
        name: Cluster name; ``None`` means ``dev`` for one node, ``cluster<N>`` otherwise.
        home: The dev home folder (see `resolve_home`).
        timeout: Seconds to wait for readiness once the JVMs are started.
        secure: A secured cluster (SASL_SSL + mTLS + authorizer, see `grctl.dev.secure`);
            ``None`` means as recorded, else not. A recorded cluster keeps what it was.
        advertised_port: Advertise this client port instead of ``port`` (see `ClusterSpec`);
            ``None`` means as recorded. A recorded cluster keeps what it was.

    Returns:
        The bootstrap string, which nodes were started, and a secured cluster's admin config.

    Raises:
        LocalKafkaError: Java or Maven missing, jars not fetchable, a port in use, settings
            that conflict with the recorded cluster, or a node that exited or was not ready
            in time.
    """
    t0 = time.monotonic()
    home_dir = resolve_home(home)
    name = name or default_name(brokers)
    paths = _Paths(home_dir, name)
    with _file_lock(paths.lock_file, f"starting or stopping cluster {name!r}"):
        spec = _load_spec(paths)
        alive: set[int] = set()
        if spec is not None:
            alive = {n.node_id for n in spec.nodes if _node_pid_if_alive(paths, n.node_id)}
            spec = _reconcile(spec, brokers, port, secure, running=bool(alive))
            if advertised_port is not None and advertised_port != spec.advertised_port:
                raise LocalKafkaError(
                    f"cluster {name!r} was created advertising port {spec.advertised_port or spec.port}, not "
                    f"{advertised_port}: wipe it first (grctl dev kafka wipe --name {name}), or use another --name"
                )
        else:
            n = brokers or 1
            spec = ClusterSpec(
                name=name,
                brokers=n,
                port=port or (DEFAULT_PORT if n == 1 else DEFAULT_CLUSTER_PORT),
                cluster_id=new_cluster_id(),
                kafka_version=kafka_version(),
                secure=bool(secure),
                advertised_port=advertised_port,
            )
        admin_file = secure_files(paths.cluster_dir).admin_properties if spec.secure else None
        missing = [n for n in spec.nodes if n.node_id not in alive]
        if not missing:
            _wait_ready(spec, paths, timeout)
            return StartResult(spec.bootstrap, name, (), time.monotonic() - t0, admin_file)

        java = find_java()
        ports: dict[int, str] = {}
        for node in missing:
            ports[node.port] = f"node {node.node_id} client port"
            ports[node.controller_port] = f"node {node.node_id} controller port"
            if node.mtls_port is not None:
                ports[node.mtls_port] = f"node {node.node_id} mTLS port"
        check_ports_free(ports, home_dir)
        libs = ensure_jars(home_dir)
        if spec.secure:
            _secure.ensure_material(paths.cluster_dir, java.path, spec.brokers)
        _write_cluster_files(paths, spec)
        for node in missing:
            _format_node(java, libs, paths, spec, node)

        logger.info(
            "starting Kafka %s cluster %r: %d node(s) on %s",
            kafka_version(),
            name,
            len(missing),
            ",".join(str(n.port) for n in missing),
        )
        started: list[int] = []
        try:
            for node in missing:
                _spawn_node(java, libs, paths, node)
                started.append(node.node_id)
            _wait_ready(spec, paths, timeout, must_answer=missing if alive else ())
        except BaseException:
            _terminate(paths, started, timeout=5.0)
            raise
        elapsed = time.monotonic() - t0
        logger.info("Kafka cluster %r ready in %.1f s: %s", name, elapsed, spec.bootstrap)
        return StartResult(spec.bootstrap, name, tuple(started), elapsed, admin_file)


def secure_files(cluster_dir: Path) -> SecureFiles:
    """The certificates and credentials of the secured cluster in `cluster_dir`."""
    return SecureFiles(cluster_dir / "secure")


def cluster_secure_files(name: str, *, home: str | os.PathLike[str] | None = None) -> SecureFiles:
    """The certificates and credentials of the secured local cluster `name`.

    Raises:
        LocalKafkaError: no such cluster, or it is not secured.
    """
    paths = _Paths(resolve_home(home), name)
    spec = _require_spec(paths)
    if not spec.secure:
        raise LocalKafkaError(f"cluster {name!r} is not secured: start a new one with --secure (and another --name)")
    return secure_files(paths.cluster_dir)


def _reconcile(
    spec: ClusterSpec, brokers: int | None, port: int | None, secure_wanted: bool | None, *, running: bool
) -> ClusterSpec:
    if secure_wanted is not None and secure_wanted != spec.secure:
        was = "secured" if spec.secure else "not secured"
        raise LocalKafkaError(
            f"cluster {spec.name!r} was created {was}: wipe it first (grctl dev kafka wipe --name {spec.name}), "
            "or use another --name"
        )
    if brokers is not None and brokers != spec.brokers:
        fix = (
            f"stop and wipe it first (grctl dev kafka wipe --name {spec.name})"
            if running
            else f"wipe it first (grctl dev kafka wipe --name {spec.name})"
        )
        raise LocalKafkaError(
            f"cluster {spec.name!r} was created with {spec.brokers} broker(s), not {brokers}: "
            f"{fix}, or use another --name"
        )
    if port is not None and port != spec.port:
        if running:
            raise LocalKafkaError(
                f"cluster {spec.name!r} is running on port {spec.port}, not {port}: stop it first "
                f"(grctl dev kafka stop --name {spec.name}) or use another --name"
            )
        # Static voters are read from the config at every start, so the ports may move.
        return replace(spec, port=port)
    return spec


def _format_node(java: JavaInfo, libs: Path, paths: _Paths, spec: ClusterSpec, node: NodeSpec) -> None:
    if (paths.data_dir(node.node_id) / "meta.properties").is_file():
        return
    logger.info("formatting the storage of cluster %r node %d", spec.name, node.node_id)
    # Static controller.quorum.voters: no --standalone / --initial-controllers (those are for
    # a dynamic quorum, controller.quorum.bootstrap.servers, and refused with static voters).
    cmd = [
        java.path,
        *_log_opts(paths, node.node_id),
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        # As one argument: a cluster id is base64url and may begin with "-", which the storage
        # tool's parser would take for an option ("expected one argument").
        f"--cluster-id={spec.cluster_id}",
        "-c",
        str(paths.props_file(node.node_id)),
        "--ignore-formatted",
        *(_secure.scram_format_args(secure_files(paths.cluster_dir)) if spec.secure else []),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(f"formatting the storage of node {node.node_id} did not finish in 120 s") from exc
    if out.returncode != 0:
        raise LocalKafkaError(
            f"formatting the storage of cluster {spec.name!r} node {node.node_id} failed "
            f"(exit {out.returncode}); if its data is from another cluster, wipe it "
            f"(grctl dev kafka wipe --name {spec.name})",
            f"command: {_redacted(cmd)}\n{_tail_text(out.stdout + out.stderr, LOG_TAIL_LINES)}",
        )


def _redacted(cmd: Sequence[str]) -> str:
    """The command line with the SCRAM password hidden."""
    return re.sub(r"password=[^\],]*", "password=***", shlex.join(cmd))


def _log_opts(paths: _Paths, node_id: int) -> list[str]:
    return [
        f"-Dlog4j2.configurationFile={paths.log4j_file.as_uri()}",
        f"-Dkafka.logs.dir={paths.logs_dir(node_id)}",
    ]


def _spawn_node(java: JavaInfo, libs: Path, paths: _Paths, node: NodeSpec) -> int:
    heap = shlex.split(settings.dev_kafka_heap_opts() or DEFAULT_HEAP_OPTS)
    cmd = [
        java.path,
        *heap,
        *JVM_FLAGS,
        *_log_opts(paths, node.node_id),
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(paths.props_file(node.node_id)),
    ]
    out_path = paths.broker_out(node.node_id)
    if out_path.exists():
        out_path.replace(out_path.with_name("broker.out.prev"))
    with out_path.open("wb") as out:
        out.write(f"# {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=paths.node_dir(node.node_id),
            start_new_session=True,  # outlives the CLI; Ctrl-C in a terminal does not reach it
            close_fds=True,
        )
    _children[proc.pid] = proc
    paths.pid_file(node.node_id).write_text(f"{proc.pid}\n")
    logger.debug("node %d: pid %d", node.node_id, proc.pid)
    return proc.pid


# --------------------------------------------------------------------------------------------
# Readiness


def _wait_ready(spec: ClusterSpec, paths: _Paths, timeout: float, *, must_answer: Sequence[NodeSpec] = ()) -> None:
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    deadline = time.monotonic() + max(timeout, 1.0)
    quiet: dict[str, str | int | float] = {"log_level": 0, "socket.connection.setup.timeout.ms": 2000}
    if spec.secure:
        quiet.update(_secure.admin_config(secure_files(paths.cluster_dir)))

    def poll(what: str, check: Callable[[], bool]) -> None:
        last_error = ""
        while True:
            for node in spec.nodes:
                if _node_pid_if_alive(paths, node.node_id) is None:
                    raise _exited_error(spec, paths, node.node_id)
            try:
                if check():
                    return
            except KafkaException as exc:
                last_error = str(exc.args[0] if exc.args else exc)
            if time.monotonic() > deadline:
                suffix = f" (last error: {last_error})" if last_error else ""
                raise LocalKafkaError(
                    f"Kafka cluster {spec.name!r} was not ready within {timeout:.0f} s: {what}{suffix}; "
                    "see the node logs below",
                    "\n".join(_node_diagnostics(paths, n.node_id) for n in spec.nodes),
                )
            time.sleep(POLL_INTERVAL_S)

    def remaining(cap: float) -> float:
        return max(0.5, min(cap, deadline - time.monotonic()))

    poll("the client ports do not accept connections", lambda: all(_port_open(n.port) for n in spec.nodes))
    admin = AdminClient({"bootstrap.servers": spec.bootstrap, **quiet})
    expected = {n.node_id for n in spec.nodes}
    poll(
        f"the metadata does not list all {spec.brokers} broker(s)",
        lambda: set(admin.list_topics(timeout=remaining(3.0)).brokers) == expected,
    )

    def answers_itself(node: NodeSpec) -> Callable[[], bool]:
        # A new client per try, bootstrapped on this node alone, so the request goes to it: a
        # client kept across tries learns the other brokers from its first answer and asks
        # them next (a restarted node's first answers come while it is still fenced, from a
        # bootstrap connection without its id), so it never saw the node answer as itself and
        # the wait ran out with the node up. Ready: the node answers and lists itself unfenced.
        def check() -> bool:
            direct = AdminClient({"bootstrap.servers": f"127.0.0.1:{node.port}", **quiet})
            meta = direct.list_topics(timeout=remaining(3.0))
            return meta.orig_broker_id in (node.node_id, -1) and node.node_id in meta.brokers

        return check

    for node in must_answer:
        poll(f"node {node.node_id} does not answer metadata requests", answers_itself(node))

    def group_coordinator() -> bool:
        # A plain consumer's committed() rather than AdminClient.list_consumer_group_offsets:
        # with confluent-kafka 2.16.1 the latter crashed the process (SIGSEGV in librdkafka's
        # rd_kafka_cgrp_op) when called while a new 3-node cluster had no coordinator yet.
        consumer = Consumer(
            {
                "bootstrap.servers": spec.bootstrap,
                "group.id": READINESS_GROUP,
                "enable.auto.commit": False,
                **quiet,
            }
        )
        try:
            consumer.committed([TopicPartition(READINESS_GROUP, 0)], timeout=remaining(5.0))
        finally:
            consumer.close()
        return True

    # Creates __consumer_offsets now, while every broker is up (its RF may be 3).
    poll("the group coordinator does not answer", group_coordinator)

    # One producer for every try: init_transactions() may be called again after a timeout, and
    # destroying a producer whose InitProducerId is still in flight aborted the process
    # (librdkafka: "rd_kafka_enq_once_del_source_return: Assertion `eonce->refcnt > 0'"), seen
    # while a restarted node of a 3-node cluster was still taking its partitions back.
    producer = Producer(
        {
            "bootstrap.servers": spec.bootstrap,
            "transactional.id": READINESS_TXN_ID,
            "transaction.timeout.ms": 10000,
            **quiet,
        }
    )
    initialised = False

    def transactions() -> bool:
        nonlocal initialised
        producer.init_transactions(remaining(10.0))
        initialised = True
        return True

    # Creates __transaction_state and proves a transaction coordinator answers.
    try:
        poll("init_transactions() does not succeed", transactions)
    finally:
        if not initialised:
            _unfinished_clients.append(producer)  # never destroyed mid-request (see above)


def _exited_error(spec: ClusterSpec, paths: _Paths, node_id: int) -> LocalKafkaError:
    pid = _read_pid(paths, node_id)
    code = ""
    child = _children.get(pid) if pid is not None else None
    if child is not None and child.returncode is not None:
        code = f" with exit code {child.returncode}"
    return LocalKafkaError(
        f"Kafka node {node_id} of cluster {spec.name!r} exited{code}; see its logs below",
        _node_diagnostics(paths, node_id),
    )


# --------------------------------------------------------------------------------------------
# Stop, kill, restart, wipe


def _terminate(paths: _Paths, node_ids: Sequence[int], timeout: float) -> list[int]:
    """SIGTERM the nodes' JVMs, wait, then SIGKILL what is left; returns the ids stopped."""
    pids = {}
    for node_id in node_ids:
        pid = _node_pid_if_alive(paths, node_id)
        if pid is not None:
            pids[node_id] = pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = dict(pids)
    while left and time.monotonic() < deadline:
        left = {i: p for i, p in left.items() if _pid_alive(p, paths.props_file(i))}
        if left:
            time.sleep(POLL_INTERVAL_S)
    for node_id, pid in left.items():
        logger.warning("node %d (pid %d) did not stop within %.0f s: killing it", node_id, pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_dead(paths, left)
    for node_id, pid in pids.items():
        _children.pop(pid, None)
        with contextlib.suppress(FileNotFoundError):
            paths.pid_file(node_id).unlink()
    return sorted(pids)


def _wait_dead(paths: _Paths, pids: Mapping[int, int]) -> None:
    deadline = time.monotonic() + KILL_WAIT_S
    for node_id, pid in pids.items():
        while _pid_alive(pid, paths.props_file(node_id)):
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"node {node_id} (pid {pid}) survived SIGKILL for {KILL_WAIT_S:.0f} s")
            time.sleep(0.05)


def stop(
    name: str = DEFAULT_NAME,
    *,
    home: str | os.PathLike[str] | None = None,
    timeout: float = STOP_TIMEOUT_S,
) -> list[int]:
    """Stop a local cluster: SIGTERM every node, wait, then SIGKILL the ones left.

    Args:
        name: Cluster name.
        home: The dev home folder (see `resolve_home`).
        timeout: Seconds to wait for a clean shutdown before SIGKILL.

    Returns:
        The ids of the nodes that were running (empty if none was).
    """
    paths = _Paths(resolve_home(home), name)
    with _file_lock(paths.lock_file, f"starting or stopping cluster {name!r}"):
        spec = _load_spec(paths)
        if spec is None:
            return []
        stopped = _terminate(paths, [n.node_id for n in spec.nodes], timeout)
        if stopped:
            logger.info("stopped cluster %r node(s) %s", name, ",".join(map(str, stopped)))
        return stopped


def kill_node(name: str, node_id: int, *, home: str | os.PathLike[str] | None = None) -> int | None:
    """SIGKILL one node's JVM (a crash, for fault tests) and wait until it is gone.

    Args:
        name: Cluster name.
        node_id: Node id (1-based).
        home: The dev home folder (see `resolve_home`).

    Returns:
        The pid that was killed, or ``None`` if the node was not running.

    Raises:
        LocalKafkaError: No such cluster or node.
    """
    paths = _Paths(resolve_home(home), name)
    with _file_lock(paths.lock_file, f"starting or stopping cluster {name!r}"):
        spec = _require_spec(paths)
        spec.node(node_id)
        pid = _node_pid_if_alive(paths, node_id)
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_dead(paths, {node_id: pid})
        _children.pop(pid, None)
        logger.info("killed cluster %r node %d (pid %d)", name, node_id, pid)
        return pid


def pause_node(name: str, node_id: int, *, home: str | os.PathLike[str] | None = None) -> int:
    """SIGSTOP one node's JVM: a hung broker (a long GC pause, a network partition) for fault tests.

    Its sockets stay open and nothing answers on them until `resume_node`.

    Returns:
        The pid that was stopped.

    Raises:
        LocalKafkaError: No such cluster or node, or the node is not running.
    """
    return _signal_node(name, node_id, signal.SIGSTOP, "paused", home)


def resume_node(name: str, node_id: int, *, home: str | os.PathLike[str] | None = None) -> int:
    """SIGCONT a node stopped by `pause_node`.

    Returns:
        The pid that was resumed.

    Raises:
        LocalKafkaError: No such cluster or node, or the node is not running.
    """
    return _signal_node(name, node_id, signal.SIGCONT, "resumed", home)


def _signal_node(name: str, node_id: int, sig: signal.Signals, what: str, home: str | os.PathLike[str] | None) -> int:
    paths = _Paths(resolve_home(home), name)
    spec = _require_spec(paths)
    spec.node(node_id)
    pid = _node_pid_if_alive(paths, node_id)
    if pid is None:
        raise LocalKafkaError(
            f"node {node_id} of cluster {name!r} is not running: "
            f"start it with `grctl dev kafka restart --node {node_id}`"
        )
    os.kill(pid, sig)
    logger.info("%s cluster %r node %d (pid %d)", what, name, node_id, pid)
    return pid


def restart_node(
    name: str,
    node_id: int,
    *,
    home: str | os.PathLike[str] | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> str:
    """Start one stopped or killed node again and wait until the cluster lists all brokers.

    Args:
        name: Cluster name.
        node_id: Node id (1-based).
        home: The dev home folder (see `resolve_home`).
        timeout: Seconds to wait for readiness.

    Returns:
        The cluster's bootstrap string.

    Raises:
        LocalKafkaError: No such cluster or node, or it did not come back in time.
    """
    paths = _Paths(resolve_home(home), name)
    spec = _require_spec(paths)
    node = spec.node(node_id)
    t0 = time.monotonic()
    with _file_lock(paths.lock_file, f"starting or stopping cluster {name!r}"):
        spawned = _node_pid_if_alive(paths, node_id) is None
        if spawned:
            java = find_java()
            libs = ensure_jars(paths.home)
            ports = {
                node.port: f"node {node_id} client port",
                node.controller_port: f"node {node_id} controller port",
            }
            if node.mtls_port is not None:
                ports[node.mtls_port] = f"node {node_id} mTLS port"
            check_ports_free(ports, paths.home)
            _spawn_node(java, libs, paths, node)
        try:
            _wait_ready(spec, paths, timeout, must_answer=[node])
        except BaseException:
            if spawned:
                _terminate(paths, [node_id], timeout=5.0)
            raise
    logger.info("cluster %r node %d back in %.1f s", name, node_id, time.monotonic() - t0)
    return spec.bootstrap


def wipe(name: str, *, home: str | os.PathLike[str] | None = None) -> bool:
    """Stop a cluster if it runs and delete its folder (data, logs, config, cluster id).

    Args:
        name: Cluster name.
        home: The dev home folder (see `resolve_home`).

    Returns:
        Whether there was anything to delete.
    """
    paths = _Paths(resolve_home(home), name)
    with _file_lock(paths.lock_file, f"starting or stopping cluster {name!r}"):
        spec = _load_spec(paths)
        if spec is not None:
            _terminate(paths, [n.node_id for n in spec.nodes], STOP_TIMEOUT_S)
        if not paths.cluster_dir.exists():
            return False
        shutil.rmtree(paths.cluster_dir)
        logger.info("deleted %s", paths.cluster_dir)
        return True


def _require_spec(paths: _Paths) -> ClusterSpec:
    spec = _load_spec(paths)
    if spec is None:
        raise LocalKafkaError(
            f"no cluster {paths.name!r} under {paths.home}: start it with `grctl dev kafka start --name {paths.name}`"
        )
    return spec
