"""``grctl namespace create|describe|delete`` and ``grctl worker`` against a real broker."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from tests.cli.conftest import start_worker

pytestmark = pytest.mark.kafka


def new_namespace() -> str:
    return f"cli-ns-{str(ULID()).lower()[-12:]}"


def test_namespace_lifecycle(cli: Any, kafka_bootstrap: str) -> None:
    ns = new_namespace()
    refused = cli("namespace", "create", ns, "-c", "history.retention.ms=86400000")  # shorter than 7d of runs
    assert refused.exit_code == 1 and "longer than the history topic's retention" in refused.stderr
    created = cli(
        "namespace", "create", ns, "-p", "3", "-c", "history.retention.ms=86400000", "--retention", "12h", "--json"
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    body = created.json()
    assert body["namespace"] == ns and body["partitions"] == 3
    assert sorted(body["created"]) == sorted(
        f"grctl.{ns}.{r}" for r in ("directives", "history", "state", "replies", "dead-letter", "config")
    )
    assert body["settings"]["run_retention_ms"] == 12 * 3600 * 1000
    try:
        again = cli("namespace", "create", ns, "-p", "5", "--json")
        assert again.exit_code == 0
        assert again.json()["created"] == [] and again.json()["partitions"] == 3  # existing count wins

        described = cli("namespace", "describe", ns, "--json")
        assert described.exit_code == 0, described.stderr
        info = described.json()
        assert info["partitions"] == 3 and info["missing_topics"] == []
        topics = {t["role"]: t for t in info["topics"]}
        assert topics["state"]["configs"]["cleanup.policy"] == "compact"
        assert topics["history"]["configs"]["retention.ms"] == "86400000"
        assert all(t["partitions"] == 3 for role, t in topics.items() if role != "config")
        assert topics["config"]["partitions"] == 1
        assert info["settings"]["run_retention_ms"] == 12 * 3600 * 1000
        changed = cli("namespace", "set", ns, "--retention", "6h", "--type-retention", "Report=1h", "--json")
        assert changed.exit_code == 0, changed.stderr
        assert changed.json()["settings"] == {
            "run_retention_ms": 6 * 3600 * 1000,
            "type_retention_ms": {"Report": 3600 * 1000},
        }
        too_long = cli("namespace", "set", ns, "--retention", "2d")
        assert too_long.exit_code == 1 and "history" in too_long.stderr
        bad = cli("namespace", "set", ns, "--retention", "soon")
        assert bad.exit_code == 2 and "is not a duration" in bad.stderr
        negative = cli("namespace", "set", ns, "--retention", "-3d")
        assert negative.exit_code == 2
        assert info["workers"]["group"] == f"grctl.{ns}.workers" and info["workers"]["members"] == []
        assert [p["partition"] for p in info["lag"]["partitions"]] == [0, 1, 2] and info["lag"]["total"] == 0
        text = cli("namespace", "describe", ns)
        assert text.exit_code == 0 and f"grctl.{ns}.state" in text.stdout and "lag" in text.stdout

        # global --namespace works too
        assert cli("--namespace", ns, "namespace", "describe", "--json").json()["namespace"] == ns
    finally:
        deleted = cli("namespace", "delete", ns, "--yes", "--json")
        assert deleted.exit_code == 0, deleted.stderr
        assert len(deleted.json()["deleted"]) == 6
    gone = cli("namespace", "describe", ns)
    assert gone.exit_code == 1 and "does not exist" in gone.stderr
    assert cli("namespace", "delete", ns, "--yes").exit_code == 1


def test_delete_asks_for_confirmation(cli: Any, kafka_bootstrap: str) -> None:
    ns = new_namespace()
    assert cli("namespace", "create", ns, "-p", "1").exit_code == 0
    try:
        refused = cli("namespace", "delete", ns, input="n\n")
        assert refused.exit_code == 1  # aborted
        assert cli("namespace", "describe", ns).exit_code == 0
    finally:
        assert cli("namespace", "delete", ns, input="y\n").exit_code == 0


def test_commands_on_a_missing_namespace_say_how_to_create_it(cli: Any, kafka_bootstrap: str) -> None:
    ns = new_namespace()
    run = cli("-n", ns, "workflow", "list", "--plain")
    assert run.exit_code == 1
    assert f"grctl namespace create {ns}" in run.stderr


def test_worker_logs_partitions_and_stops_gracefully(cli: Any, kafka_bootstrap: str, tmp_path: Path) -> None:
    ns = new_namespace()
    worker = start_worker(ns, tmp_path / "state")  # creates the namespace (4 partitions)
    try:
        log = "\n".join(worker.lines)
        assert "serving ['CliEcho', 'CliFail', 'CliWait']" in log
        for p in range(4):
            assert f"partition {p} assigned: restored " in log, log
        described = cli("-n", ns, "namespace", "describe", "--json").json()
        members = described["workers"]["members"]
        assert len(members) == 1 and members[0]["partitions"] == [0, 1, 2, 3]
        run = cli("-n", ns, "workflow", "start", "-t", "CliEcho", "-I", '{"value": 1}', "--wait", "--json")
        assert run.exit_code == 0 and run.json()["result"] == {"echo": 1}
    finally:
        code = worker.stop(signal.SIGINT)
        log = "\n".join(worker.lines)
        cli("namespace", "delete", ns, "--yes")
    assert code == 0, log
    assert "SIGINT: stopping gracefully" in log
    assert "partition 0 revoked" in log and "stopped" in log
    assert "Traceback" not in log
