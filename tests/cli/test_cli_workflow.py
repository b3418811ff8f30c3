"""Every ``grctl workflow`` command against a real broker and a real ``grctl worker`` process."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import pytest

from tests.cli.conftest import REPO, ServedNamespace
from tests.support.wait import wait_until

pytestmark = pytest.mark.kafka


def start(cli: Any, wf_type: str, wf_id: str, *extra: str) -> Any:
    run = cli("workflow", "start", "-t", wf_type, "-i", wf_id, *extra, "--json")
    assert run.exit_code == 0, run.stderr
    return run.json()


def wait_for_event(cli: Any, wf_id: str, kind: str, timeout: float = 30.0) -> None:
    """Poll ``grctl workflow history`` until the run's history holds an event of `kind`.

    `workflow start` returns once the run has started; what its first step does (put a store
    value, begin waiting) commits in a later transaction, so a test that needs it waits here.
    """
    seen: list[str] = []

    def check() -> bool:
        run = cli("workflow", "history", wf_id, "--json")
        seen[:] = [e["kind"] for e in run.jsonl()] if run.exit_code == 0 else [run.stderr.strip()]
        return kind in seen

    wait_until(f"the history of {wf_id} holds {kind}", check, timeout, seen=lambda: seen)


def test_start_then_result_describe_history(cli: Any, served: ServedNamespace) -> None:
    wf_id = served.new_id("echo")
    started = start(cli, "CliEcho", wf_id, "--input", '{"value": {"n": 1}}')
    assert started["wf_id"] == wf_id and started["wf_type"] == "CliEcho" and started["status"] == "running"
    run_id = started["run_id"]

    result = cli("workflow", "result", wf_id, "--timeout", "30s", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json() == {
        "wf_id": wf_id,
        "run_id": run_id,
        "status": "completed",
        "result": {"echo": {"n": 1}},
        "error": None,
    }
    plain = cli("workflow", "result", wf_id)
    assert plain.exit_code == 0 and plain.stdout.strip() == '{"echo":{"n":1}}'

    described = cli("workflow", "describe", wf_id, "--json")
    assert described.exit_code == 0, described.stderr
    info = described.json()
    assert info["id"] == run_id and info["status"] == "completed" and info["result"] == {"echo": {"n": 1}}
    assert info["created_at"] and info["ended_at"]
    text = cli("workflow", "describe", wf_id)
    assert "completed" in text.stdout and run_id in text.stdout

    history = cli("workflow", "history", wf_id, "--json")
    assert history.exit_code == 0, history.stderr
    events = history.jsonl()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run.started" and kinds[-1] == "run.completed"
    assert all(e["run_id"] == run_id for e in events)
    assert events[0]["msg"]["input"] == {"value": {"n": 1}}
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(offsets)
    by_run = cli("workflow", "history", wf_id, "--run-id", run_id, "--json")
    assert by_run.jsonl() == events
    table = cli("workflow", "history", wf_id)
    assert "run.completed" in table.stdout and "step.started" in table.stdout


def test_start_wait_prints_the_result(cli: Any, served: ServedNamespace) -> None:
    wf_id = served.new_id("wait")
    run = cli("workflow", "start", "-t", "CliEcho", "-i", wf_id, "-I", '{"value": "hi"}', "--wait", "--json")
    assert run.exit_code == 0, run.stderr
    out = run.json()
    assert out["status"] == "completed" and out["result"] == {"echo": "hi"}
    text = cli("workflow", "start", "-t", "CliEcho", "-I", '{"value": 2}', "--wait")
    assert text.exit_code == 0 and text.stdout.strip() == '{"echo":2}'


def test_input_file_and_stdin(cli: Any, served: ServedNamespace, tmp_path: Any) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"value": [1, 2, 3]}')
    wf_id = served.new_id("file")
    start(cli, "CliEcho", wf_id, "--input-file", str(path))
    assert cli("workflow", "result", wf_id, "--json").json()["result"] == {"echo": [1, 2, 3]}
    wf_id2 = served.new_id("stdin")
    run = cli(
        "workflow",
        "start",
        "-t",
        "CliEcho",
        "-i",
        wf_id2,
        "--input-file",
        "-",
        "--wait",
        "--json",
        input='{"value": 7}',
    )
    assert run.exit_code == 0 and run.json()["result"] == {"echo": 7}


def test_failed_run_exits_1(cli: Any, served: ServedNamespace) -> None:
    wf_id = served.new_id("fail")
    run = cli("workflow", "start", "-t", "CliFail", "-i", wf_id, "-I", '{"reason": "no stock"}', "--wait")
    assert run.exit_code == 1
    assert "failed" in run.stderr and "no stock" in run.stderr and wf_id in run.stderr
    result = cli("workflow", "result", wf_id, "--json")
    assert result.exit_code == 1
    assert result.json()["status"] == "failed"
    assert "no stock" in str(result.json()["error"])


def test_unknown_id_unknown_type_duplicate(cli: Any, served: ServedNamespace) -> None:
    missing = served.new_id("missing")
    for args in (
        ["describe", missing],
        ["result", missing],
        ["history", missing],
        ["send", missing, "go"],
        ["cancel", missing],
        ["terminate", missing],
        ["query", missing, "q"],
    ):
        run = cli("workflow", *args)
        assert run.exit_code == 1, (args, run.stdout, run.stderr)
        assert missing in run.stderr and "not found" in run.stderr, (args, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr

    run = cli("workflow", "start", "-t", "NoSuchType", "-I", "{}")
    assert run.exit_code == 1
    assert "NoSuchType" in run.stderr and "not served" in run.stderr

    wf_id = served.new_id("dup")
    start(cli, "CliWait", wf_id)
    again = cli("workflow", "start", "-t", "CliWait", "-i", wf_id)
    assert again.exit_code == 1
    assert "already has an active run" in again.stderr
    assert cli("workflow", "terminate", wf_id).exit_code == 0


def test_send_event_completes_a_waiting_run(cli: Any, served: ServedNamespace) -> None:
    wf_id = served.new_id("send")
    start(cli, "CliWait", wf_id)
    wait_for_event(cli, wf_id, "wait.started")
    info = cli("workflow", "describe", wf_id, "--json").json()
    assert info["status"] == "running" and info["waiting_for_event"] is True
    sent = cli("workflow", "send", wf_id, "go", "--payload", '{"value": "ok"}', "--json")
    assert sent.exit_code == 0, sent.stderr
    assert sent.json() == {"ok": True, "wf_id": wf_id, "event": "go"}
    result = cli("workflow", "result", wf_id, "--timeout", "30s", "--json")
    assert result.exit_code == 0 and result.json()["result"] == {"got": "ok"}
    # the run ended: a second event is refused
    late = cli("workflow", "send", wf_id, "go")
    assert late.exit_code == 1 and late.stderr.startswith("error:")


def test_cancel_and_terminate(cli: Any, served: ServedNamespace) -> None:
    a = served.new_id("cancel")
    start(cli, "CliWait", a)
    run = cli("workflow", "cancel", a, "--reason", "not needed", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json() == {"ok": True, "wf_id": a, "action": "cancel", "reason": "not needed"}
    result = cli("workflow", "result", a, "--timeout", "30s", "--json")
    assert result.exit_code == 1 and result.json()["status"] == "cancelled"
    kinds = [e["kind"] for e in cli("workflow", "history", a, "--json").jsonl()]
    assert kinds[-1] == "run.cancelled"

    b = served.new_id("term")
    start(cli, "CliWait", b)
    run = cli("workflow", "terminate", b, "--reason", "stuck")
    assert run.exit_code == 0 and "terminated" in run.stdout
    result = cli("workflow", "result", b, "--timeout", "30s", "--json")
    assert result.exit_code == 1 and result.json()["status"] == "terminated"
    again = cli("workflow", "cancel", b)
    assert again.exit_code == 1 and again.stderr.startswith("error:")


def test_result_timeout_exits_1(cli: Any, served: ServedNamespace) -> None:
    wf_id = served.new_id("slow")
    start(cli, "CliWait", wf_id)
    run = cli("workflow", "result", wf_id, "--timeout", "1s")
    assert run.exit_code == 1
    assert "did not end within 1s" in run.stderr
    cli("workflow", "terminate", wf_id)


def test_history_follow_tails_until_the_run_ends(cli: Any, served: ServedNamespace) -> None:
    wf_id = served.new_id("follow")
    start(cli, "CliWait", wf_id)
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "grctl.cli.main", "workflow", "history", wf_id, "--follow", "--json"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:

        def pump() -> None:
            for line in proc.stdout or []:
                lines.append(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        # Once it has printed the run's wait, it has caught up: the event's records must be tailed.
        wait_until(
            "history --follow printed wait.started (or ended)",
            lambda: proc.poll() is not None or any('"kind": "wait.started"' in line for line in lines),
            30,
            seen=lambda: lines,
        )
        assert proc.poll() is None, "history --follow ended before the run did"
        assert cli("workflow", "send", wf_id, "go", "--payload", '{"value": 1}').exit_code == 0
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        reader.join(5)
    kinds = [line.split('"kind": "')[1].split('"')[0] for line in lines]
    assert kinds[0] == "run.started"
    assert "wait.started" in kinds and "event.received" in kinds
    assert kinds[-1] == "run.completed"


def test_query(cli: Any, served: ServedNamespace) -> None:
    wf_id = served.new_id("query")
    start(cli, "CliWait", wf_id, "--input", '{"label": "box"}')
    wait_for_event(cli, wf_id, "wait.started")  # queries read committed state: the put of the start step
    run = cli("workflow", "query", wf_id, "label")
    assert run.exit_code == 0, run.stderr
    assert run.stdout.strip() == '"box"'
    run = cli("workflow", "query", wf_id, "label", "--payload", '{"suffix": "-7"}', "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json() == {"wf_id": wf_id, "query": "label", "answer": "box-7"}
    unknown = cli("workflow", "query", wf_id, "nope")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error:") and "nope" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert cli("workflow", "query", wf_id, "label", "--payload", "{x").exit_code == 2
    cli("workflow", "terminate", wf_id)


def test_list_filters_paging_and_json(cli: Any, served: ServedNamespace) -> None:
    tag = served.new_id("page")
    ids = [f"{tag}-{i:02d}" for i in range(25)]
    for wf_id in ids:
        start(cli, "CliEcho", wf_id, "-I", '{"value": 0}')
    failed = f"{tag}-failed"
    assert cli("workflow", "start", "-t", "CliFail", "-i", failed, "--wait").exit_code == 1
    assert cli("workflow", "result", ids[-1], "--timeout", "30s").exit_code == 0

    everything = cli("workflow", "list", "--search", tag, "--limit", "1000", "--json").json()
    assert {r["wf_id"] for r in everything["runs"]} == {*ids, failed}
    assert everything["next_page"] is None
    stamps = [(-r["started_ms"], r["wf_id"]) for r in everything["runs"]]
    assert stamps == sorted(stamps)  # newest first (by start), then by workflow id

    # pages of 10: no overlap, nothing missed, same order
    seen: list[str] = []
    token = None
    for _ in range(5):
        args = ["workflow", "list", "--search", tag, "--limit", "10", "--json"]
        page = cli(*args, *(["--page", token] if token else [])).json()
        seen += [r["wf_id"] for r in page["runs"]]
        token = page["next_page"]
        if token is None:
            break
    assert seen == [r["wf_id"] for r in everything["runs"]]

    only_failed = cli("workflow", "list", "--search", tag, "--status", "failed", "--json").json()
    assert [r["wf_id"] for r in only_failed["runs"]] == [failed]
    assert only_failed["runs"][0]["status"] == "failed"
    by_type = cli("workflow", "list", "--search", tag, "--type", "CliFail", "--type", "CliWait", "--json").json()
    assert [r["wf_id"] for r in by_type["runs"]] == [failed]
    recent = cli("workflow", "list", "--search", tag, "--since", "1h", "--limit", "1000", "--json").json()
    assert len(recent["runs"]) == 26
    table = cli("workflow", "list", "--search", tag, "--plain", "--limit", "5")
    assert table.exit_code == 0
    assert "WORKFLOW ID" in table.stdout and "next page: add --page" in table.stderr
    none = cli("workflow", "list", "--search", "no-such-run-anywhere", "--plain")
    assert none.exit_code == 0 and "no runs match" in none.stderr


def test_identity_of_each_action_is_in_history_describe_and_verify(cli: Any, served: ServedNamespace) -> None:
    """`grctl --identity` names who started, signalled, cancelled and terminated; the default is user@host/pid."""
    import getpass
    import socket

    signalled, cancelled, ended = served.new_id("who-ev"), served.new_id("who-cancel"), served.new_id("who-term")
    for wf_id in (signalled, cancelled, ended):
        run = cli("--identity", "ops-alice", "workflow", "start", "-t", "CliWait", "-i", wf_id, "--json")
        assert run.exit_code == 0, run.stderr
        wait_for_event(cli, wf_id, "wait.started")
    assert cli("--identity", "deploy-bot", "workflow", "send", signalled, "go", "--payload", "1").exit_code == 0
    assert cli("workflow", "cancel", cancelled, "--reason", "done").exit_code == 0
    assert cli("--identity", "oncall-bob", "workflow", "terminate", ended).exit_code == 0

    def identities(wf_id: str) -> dict[str, str | None]:
        events = cli("workflow", "history", wf_id, "--json").jsonl()
        return {e["kind"]: e["msg"].get("identity") for e in events if e["kind"] in OPERATOR_KINDS}

    wait_for_event(cli, signalled, "run.completed")
    wait_for_event(cli, cancelled, "run.cancelled")
    wait_for_event(cli, ended, "run.terminated")
    default = cli("workflow", "history", cancelled, "--json").jsonl()[-1]["msg"]["identity"]
    assert default.startswith(f"{getpass.getuser()}@{socket.gethostname()}/")  # this process's pid follows
    assert identities(signalled) == {"run.started": "ops-alice", "event.received": "deploy-bot"}
    assert identities(cancelled) == {"run.started": "ops-alice", "run.cancelled": default}
    assert identities(ended) == {"run.started": "ops-alice", "run.terminated": "oncall-bob"}
    assert "by=oncall-bob" in cli("workflow", "history", ended).stdout

    info = cli("workflow", "describe", ended, "--json").json()
    assert info["started_by"] == "ops-alice" and info["cancel_by"] == "oncall-bob"
    text = cli("workflow", "describe", ended).stdout
    assert "started by" in text and "cancelled by" in text and "oncall-bob" in text

    report = cli("verify", "--since", "10m", "--json").json()
    mine = {(a["wf_id"], a["kind"]): a["identity"] for a in report["operator_actions"]}
    assert mine[(ended, "run.terminated")] == "oncall-bob"
    assert mine[(signalled, "event.received")] == "deploy-bot"
    assert report["operator_action_count"] >= 6  # 3 starts, an event, a cancel, a terminate

    too_long = cli("--identity", "x" * 201, "workflow", "cancel", signalled)
    assert too_long.exit_code != 0 and "at most 200" in too_long.stderr


OPERATOR_KINDS = {"run.started", "event.received", "run.cancel_received", "run.cancelled", "run.terminated"}
