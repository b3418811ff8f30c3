"""CLI behaviour that needs no broker: help, bad usage (exit 2), parsing, unreachable broker (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
import typer

from grctl.cli.common import parse_duration, read_kafka_config_file
from grctl.cli.tui import parse_filter
from grctl.cli.worker import load_workflows

COMMANDS = [
    [],
    ["workflow"],
    ["workflow", "start"],
    ["workflow", "describe"],
    ["workflow", "result"],
    ["workflow", "history"],
    ["workflow", "list"],
    ["workflow", "send"],
    ["workflow", "cancel"],
    ["workflow", "terminate"],
    ["workflow", "query"],
    ["namespace"],
    ["namespace", "create"],
    ["namespace", "describe"],
    ["namespace", "delete"],
    ["worker"],
    ["ui"],
    ["verify"],
    ["dev"],
    ["dev", "kafka"],
    ["init"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "grctl")
def test_every_command_has_help(cli: Any, command: list[str]) -> None:
    run = cli(*command, "--help")
    assert run.exit_code == 0, run.stderr
    assert "Usage:" in run.stdout
    leaf = (len(command) >= 2 and command[0] == "workflow") or command in (["worker"], ["ui"], ["dev"], [])
    if leaf or (command[:1] == ["namespace"] and len(command) == 2):
        assert "Examples" in run.stdout, f"no examples in the help of {command}"


@pytest.mark.parametrize(
    "args",
    [
        ["workflow", "start", "-t", "X", "--input", "{bad json"],
        ["workflow", "start", "-t", "X", "--input", "{}", "--input-file", "x.json"],
        ["workflow", "start", "-t", "X", "--timeout", "soon"],
        ["workflow", "start"],  # --type is required
        ["workflow", "send", "id", "ev", "--payload", "[1,"],
        ["workflow", "list", "--status", "happy"],
        ["workflow", "list", "--since", "-1h"],
        ["workflow", "list", "--page", "!!!"],
        ["workflow", "list", "--limit", "0"],
        ["workflow", "history", "id", "--run-id", "not-a-ulid"],
        ["workflow", "result", "id", "--timeout", "0s"],
        ["-X", "no-equals-sign", "workflow", "list"],
        ["namespace", "create", "bad name!"],
        ["namespace", "create", "x", "--config", "nosuchrole.retention.ms=1"],
        ["worker", "--app", "no_such_module_xyz:WORKFLOWS"],
        ["worker", "--app", "tests.cli.flows:NOPE"],
        ["worker", "--app", "tests.cli.flows:"],
        ["workflow", "nosuchcommand"],
        ["worker", "--app", "tests.cli.flows:WORKFLOWS", "--log-format", "xml"],
        ["worker", "--app", "tests.cli.flows:WORKFLOWS", "--metrics-port", "70000"],
        ["ui", "--port", "70000"],
        ["verify", "--since", "soon"],
        ["verify", "--settle", "0s"],
        ["worker", "--app", "examples.demo:WORKFLOWS", "--processes", "many"],
        ["worker", "--app", "examples.demo:WORKFLOWS", "--processes", "0"],
    ],
)
def test_bad_usage_exits_2_with_one_message(cli: Any, args: list[str]) -> None:
    run = cli(*args)
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr + run.stdout


def test_input_file_with_invalid_json_is_bad_usage(cli: Any, tmp_path: Any) -> None:
    path = tmp_path / "in.json"
    path.write_text("{'single': 'quotes'}")
    run = cli("workflow", "start", "-t", "X", "--input-file", str(path))
    assert run.exit_code == 2
    assert "invalid JSON" in run.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["workflow", "describe", "some-id"],
        ["workflow", "list", "--plain"],
        ["workflow", "start", "-t", "X"],
        ["namespace", "describe"],
        ["verify"],
    ],
)
def test_unreachable_broker_is_one_line_and_exit_1(cli: Any, args: list[str]) -> None:
    run = cli("--servers", "127.0.0.1:1", "--connect-timeout", "1", *args)
    assert run.exit_code == 1
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: cannot reach Kafka at 127.0.0.1:1")
    assert "Traceback" not in run.stderr


def test_debug_shows_the_traceback(cli: Any) -> None:
    run = cli("--servers", "127.0.0.1:1", "--connect-timeout", "1", "--debug", "workflow", "describe", "x")
    assert run.exit_code == 1
    assert "Traceback" in run.stderr
    assert "error: cannot reach Kafka" in run.stderr


def test_version(cli: Any) -> None:
    run = cli("--version")
    assert run.exit_code == 0
    assert run.stdout.startswith("grctl ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800), ("1.5h", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "m5", "0", "-3s", "1h 2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_kafka_config_file(tmp_path: Any) -> None:
    path = tmp_path / "client.properties"
    path.write_text("# a comment\nsecurity.protocol=SASL_SSL\nsasl.mechanism = PLAIN\n\nsasl.username: me\n")
    assert read_kafka_config_file(path) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "me",
    }


def test_load_workflows_forms() -> None:
    from tests.cli import flows

    assert [w.workflow_type for w in load_workflows("tests.cli.flows:WORKFLOWS")] == ["CliEcho", "CliFail", "CliWait"]
    assert load_workflows("tests.cli.flows:echo") == [flows.echo]
    # a module alone: every module-level Workflow (a registry)
    assert {w.workflow_type for w in load_workflows("tests.cli.flows")} == {"CliEcho", "CliFail", "CliWait"}
    # the demo the `grctl dev` command serves
    assert {w.workflow_type for w in load_workflows("examples.demo:WORKFLOWS")} >= {"Order", "Approval"}


def test_tui_filter_syntax() -> None:
    flt = parse_filter("status:running,failed type:Order  abc")
    assert flt.statuses == {"running", "failed"}
    assert flt.types == {"Order"}
    assert flt.text == "abc"
    assert parse_filter("").text is None


def test_ui_on_a_port_in_use_is_one_clear_error(cli: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = cli("ui", "--port", str(port))
    assert run.exit_code == 1
    assert f"cannot serve the UI on 127.0.0.1:{port}" in run.stderr and "--port" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_python_dash_m_grctl_is_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "grctl", "workflow", "list", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m grctl workflow list" in done.stdout and "--status" in done.stdout


def test_ui_on_a_non_loopback_address_without_authentication_refuses_to_start(cli: Any) -> None:
    run = cli("ui", "--host", "0.0.0.0", "--port", "0")
    assert run.exit_code == 1
    assert "will not serve 0.0.0.0 without authentication" in run.stderr
    for fix in ("--token-file", "--users-file", "--proxy-user-header", "--trusted-proxy", "docs/security.md"):
        assert fix in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_ui_authentication_settings_are_checked_before_serving(cli: Any, tmp_path: Any) -> None:
    clear = tmp_path / "users"
    clear.write_text("alice:hunter2\n")
    run = cli("ui", "--host", "0.0.0.0", "--users-file", str(clear))
    assert run.exit_code == 1
    assert "line 1 is not 'user:scrypt$N$r$p$salt$hash'" in run.stderr and "--hash-password" in run.stderr
    short = tmp_path / "token"
    short.write_text("abc\n")
    run = cli("ui", "--token-file", str(short))
    assert run.exit_code == 1 and "shorter than 16 characters" in run.stderr
    run = cli("ui", "--host", "0.0.0.0", "--proxy-user-header", "X-Forwarded-User")
    assert run.exit_code == 1 and "needs --trusted-proxy" in run.stderr
    run = cli("ui", "--proxy-user-header", "X-User", "--trusted-proxy", "not-an-ip")
    assert run.exit_code == 1 and "'not-an-ip' is not an address or network" in run.stderr
    run = cli("ui", "--token-file", str(short), "--users-file", str(clear))
    assert run.exit_code == 1 and "give one authentication setting" in run.stderr


def test_ui_hash_password_makes_a_users_file_line_the_ui_accepts(cli: Any, tmp_path: Any) -> None:
    from grctl.ui.auth import UiAuth, _check_password

    run = cli("ui", "--hash-password", "alice", input="correct horse\n")
    assert run.exit_code == 0, run.stderr
    line = run.stdout.strip()
    assert line.startswith("alice:scrypt$") and "correct horse" not in line
    users = tmp_path / "users"
    users.write_text(line + "\n")
    auth = UiAuth.from_users_file(users)
    assert _check_password("correct horse", auth.users["alice"])
    assert not _check_password("correct horsE", auth.users["alice"])
    run = cli("ui", "--hash-password", "bob", input="short\n")
    assert run.exit_code == 1 and "shorter than 8 characters" in run.stderr
