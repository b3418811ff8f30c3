"""grctl.dev.kafka without a broker: generated config, cluster ids, and the setup errors.

The error tests run the real checks against a real PATH (emptied, or holding a real or a
too-old ``java``), and the CLI as a real subprocess.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from grctl.dev import kafka
from grctl.dev.kafka import ClusterSpec, LocalKafkaError

PACKAGE_PARENT = Path(kafka.__file__).parents[2]  # where `import grctl` finds this package


def parse_properties(text: str) -> dict[str, str]:
    """Parse a properties file the way Java does for our simple files (key=value, # comments)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        props[key.strip()] = value
    return props


def spec(brokers: int = 1, port: int = 9092) -> ClusterSpec:
    return ClusterSpec(
        name="dev" if brokers == 1 else "cluster3",
        brokers=brokers,
        port=port,
        cluster_id=kafka.new_cluster_id(),
        kafka_version="4.3.1",
    )


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**env, "PYTHONPATH": str(PACKAGE_PARENT), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "grctl.cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def free_port_base() -> int:
    """A port whose successor is also free (client + controller port of one node)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 65535 and kafka._port_free(port) and kafka._port_free(port + 1):
            return port
    raise AssertionError("no free port pair found")


# --------------------------------------------------------------------------------------------
# Properties


def test_single_node_properties_fit_transactions_on_one_broker() -> None:
    cluster = spec(1, 9092)
    (node,) = cluster.nodes
    props = kafka.server_properties(cluster, node, Path("/h/clusters/dev/node-1"))

    assert props == parse_properties(kafka.render_properties(props))
    expected = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": "1@127.0.0.1:9093",
        "listeners": "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093",
        "advertised.listeners": "PLAINTEXT://127.0.0.1:9092",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": "/h/clusters/dev/node-1/data",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "min.insync.replicas": "1",
        "default.replication.factor": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "auto.create.topics.enable": "false",
    }
    assert {k: props.get(k) for k in expected} == expected
    # Defaults kept on one node: no fault-test timeouts, no flush or transaction timeout changes.
    for key in ("broker.session.timeout.ms", "log.flush.interval.ms", "transaction.max.timeout.ms"):
        assert key not in props
    assert cluster.bootstrap == "127.0.0.1:9092"


def test_three_node_properties_replicate_and_detect_failures_fast() -> None:
    cluster = spec(3, 19092)
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    all_ports: list[int] = []
    for node in cluster.nodes:
        props = kafka.server_properties(cluster, node, Path(f"/h/node-{node.node_id}"))
        all_ports += [node.port, node.controller_port]
        assert props["node.id"] == str(node.node_id)
        assert props["controller.quorum.voters"] == voters
        assert props["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        )
        assert props["log.dirs"] == f"/h/node-{node.node_id}/data"
        for key in (
            "offsets.topic.replication.factor",
            "transaction.state.log.replication.factor",
            "default.replication.factor",
        ):
            assert props[key] == "3", key
        assert props["transaction.state.log.min.isr"] == "2"
        assert props["min.insync.replicas"] == "2"
        assert props["unclean.leader.election.enable"] == "false"
        # Shorter than Kafka's defaults (2 s, 9 s, 1 s, 30 s) so a killed broker is noticed fast.
        assert int(props["broker.heartbeat.interval.ms"]) < 2000
        assert int(props["broker.heartbeat.interval.ms"]) < int(props["broker.session.timeout.ms"]) < 9000
        assert int(props["controller.quorum.election.timeout.ms"]) < 1000
        assert int(props["replica.lag.time.max.ms"]) < 30000
    assert len(set(all_ports)) == 6
    assert cluster.bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"


def test_advertised_ports_put_clients_and_the_quorum_behind_what_listens_there() -> None:
    """`advertised_port` (issue 31): node i advertises port + 2(i-1) and votes through port + 1 there."""
    cluster = ClusterSpec(name="n", brokers=3, port=19092, cluster_id="x", kafka_version="4", advertised_port=19192)
    for node in cluster.nodes:
        props = kafka.server_properties(cluster, node, Path("/h"))
        assert props["listeners"].startswith(f"PLAINTEXT://127.0.0.1:{node.port},")  # still listens on its own
        assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{19192 + 2 * (node.node_id - 1)}"
        assert props["controller.quorum.voters"] == "1@127.0.0.1:19193,2@127.0.0.1:19195,3@127.0.0.1:19197"
    with pytest.raises(LocalKafkaError, match="advertised port"):
        ClusterSpec(name="n", brokers=1, port=19092, cluster_id="x", kafka_version="4", advertised_port=80)


def test_render_properties_writes_one_plain_line_per_key() -> None:
    text = kafka.render_properties({"a.b": "x#y", "c": ""}, header="two\nlines")
    assert text == "# two\n# lines\na.b=x#y\nc=\n"
    with pytest.raises(ValueError, match="one line"):
        kafka.render_properties({"k": "multi\nline"})
    with pytest.raises(ValueError, match="one line"):
        kafka.render_properties({"bad key": "v"})


def test_log4j2_config_writes_server_log_and_nothing_to_the_terminal() -> None:
    text = kafka.log4j2_properties()
    assert "appender.server.fileName = ${sys:kafka.logs.dir}/server.log" in text
    assert "Console" not in text
    assert "rootLogger.level = INFO" in text
    assert "logger.quiet0.name = state.change.logger" in text
    assert "logger.quiet0.level = WARN" in text


def test_spec_validation_and_defaults() -> None:
    assert kafka.default_name(None) == "dev"
    assert kafka.default_name(1) == "dev"
    assert kafka.default_name(3) == "cluster3"
    with pytest.raises(LocalKafkaError, match="invalid cluster name"):
        ClusterSpec("no spaces", 1, 9092, kafka.new_cluster_id(), "4.3.1")
    with pytest.raises(LocalKafkaError, match="65535"):
        ClusterSpec("x", 3, 65532, kafka.new_cluster_id(), "4.3.1")
    with pytest.raises(LocalKafkaError, match="has no node 4"):
        spec(3).node(4)
    assert kafka.kafka_version() == "4.3.1"


def test_cluster_id_is_16_random_bytes_base64url_unpadded() -> None:
    ids = {kafka.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_home_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GRCTL_DEV_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kafka.resolve_home() == (tmp_path / "home" / ".cache" / "grctl").resolve()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kafka.resolve_home() == (tmp_path / "xdg" / "grctl").resolve()
    monkeypatch.setenv("GRCTL_DEV_HOME", str(tmp_path / "env"))
    assert kafka.resolve_home() == (tmp_path / "env").resolve()
    assert kafka.resolve_home(tmp_path / "explicit") == (tmp_path / "explicit").resolve()


def test_status_of_a_cluster_never_created(tmp_path: Path) -> None:
    st = kafka.status("nothing", home=tmp_path)
    assert (st.exists, st.running, st.nodes) == (False, False, ())
    assert kafka.list_clusters(tmp_path) == []
    assert kafka.stop("nothing", home=tmp_path) == []


# --------------------------------------------------------------------------------------------
# Setup errors


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalKafkaError, match=r"install OpenJDK 17\+, e\.g\. apt-get install openjdk-17-jre-headless"):
        kafka.find_java()


def test_missing_java_cli_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_cli(
        "dev",
        "kafka",
        "start",
        "--home",
        str(tmp_path / "home"),
        "--port",
        str(free_port_base()),
        env={"PATH": str(empty), "HOME": str(tmp_path)},
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: no `java` on PATH")
    assert "apt-get install openjdk-17-jre-headless" in lines[0]
    assert result.stdout == ""


def test_old_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    old_java = bin_dir / "java"
    old_java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    old_java.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalKafkaError, match=r"Java 11 .*needs Java 17\+.*install OpenJDK 17\+"):
        kafka.find_java()


def test_java_8_version_string_is_understood(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java8 = bin_dir / "java"
    java8.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    java8.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(LocalKafkaError, match="Java 8 "):
        kafka.find_java()


@pytest.mark.skipif(shutil.which("java") is None, reason="needs a real java on PATH")
def test_missing_maven_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(os.path.realpath(java))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert kafka.find_java().major >= 17  # the real java passes
    with pytest.raises(LocalKafkaError, match=r"no `mvn`.*apt-get install maven"):
        kafka.ensure_jars(tmp_path / "fresh-home")
    # Nothing half-fetched is left marked as complete.
    assert not (tmp_path / "fresh-home" / "kafka-4.3.1" / ".fetched").exists()

    result = run_cli(
        "dev",
        "kafka",
        "start",
        "--home",
        str(tmp_path / "fresh-home"),
        "--port",
        str(free_port_base()),
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no `mvn`")
    assert "Traceback" not in result.stderr


def test_port_in_use_names_the_port_and_the_holder() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = int(sock.getsockname()[1])
        with pytest.raises(LocalKafkaError) as excinfo:
            kafka.check_ports_free({port: "node 1 client port"})
    message = str(excinfo.value)
    assert f"port {port} (node 1 client port) is already in use" in message
    assert "--port" in message
    if shutil.which("ss") or shutil.which("lsof"):
        assert f"pid {os.getpid()}" in message


def test_cli_bad_usage_exits_2(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    assert run_cli("dev", "kafka", "start", "--brokers", "0", env=env).returncode == 2
    assert run_cli("dev", "kafka", "kill", env=env).returncode == 2  # --node is required
    assert run_cli("dev", "kafka", "nonsense", env=env).returncode == 2


def test_cli_status_json_of_empty_home(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    result = run_cli("dev", "kafka", "status", "--json", "--home", str(tmp_path / "h"), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
