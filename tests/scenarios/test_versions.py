"""Versions of workflow code while runs are in flight (issue 26), on a real broker with real workers.

- pinned runs finish on the code they started on while new runs take the new version;
- a run whose code no worker owning it serves parks (awaiting_code, counted), and resumes when
  a worker that serves it takes over; nothing fails;
- an `upgrade="auto"` run moves to the newest version at its next step and takes the patch's
  new branch there;
- the replayer reports every mutation of the suite (`versions_code.UNSAFE`) on recorded runs and
  nothing on unchanged or safe changes; `grctl replay` and `grctl deploy check` say the same
  from the command line, the check also naming runs whose handler the new code lacks.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from grctl import Client, Context, Directive, Workflow
from grctl.cli.deploy import check_deploy
from grctl.models.history import HistoryKind
from grctl.models.run_info import RunStatus
from grctl.testing import Replayer, assert_replays
from tests.scenarios import versions_code
from tests.scenarios.support import kinds, wait_for_kind

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 120


# --------------------------------------------------------------------------------------------
# Two versions of one type: v2 renames a step, drops an event handler, and adds a patch.


def ticket(version: int, *, upgrade: str = "pinned") -> Workflow:
    wf = Workflow(workflow_type="VerTicket", version=version, upgrade=upgrade)  # type: ignore[arg-type]

    @wf.start()
    async def start(ctx: Context) -> Directive:
        ctx.store.put("trail", [f"start@v{version}"])
        return ctx.next.wait(timedelta(minutes=5))

    async def review(ctx: Context, note: str) -> Directive:
        trail = await ctx.store.get("trail")
        if version >= 2 and ctx.patched("stamp"):
            trail.append("stamped")
        trail.append(f"review@v{version}:{note}")
        ctx.store.put("trail", trail)
        return ctx.next.step(close if version == 1 else finish)

    wf.event()(review)
    if version == 1:

        @wf.event()
        async def escalate(ctx: Context) -> Directive:
            return ctx.next.complete({"escalated": True})

        @wf.step()
        async def close(ctx: Context) -> Directive:
            return ctx.next.complete({"trail": [*await ctx.store.get("trail"), "close@v1"]})

    else:

        @wf.step()
        async def finish(ctx: Context) -> Directive:
            return ctx.next.complete({"trail": [*await ctx.store.get("trail"), "finish@v2"]})

    return wf


async def waiting(client: Client, wf_id: str, version: int | None = None) -> Any:
    handle = await client.start_workflow("VerTicket", wf_id, None, version=version)
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    return handle


async def test_pinned_runs_finish_on_their_version_while_new_runs_take_the_new_one(workers, client: Client) -> None:
    first = await workers.start([ticket(1)])
    old = await waiting(client, "t-old")
    assert (await client.describe("t-old")).version == 1
    # The deploy: the v1-only worker leaves, one serving v1 and v2 takes over.
    await first.stop(shutdown_timeout=2.0)
    await workers.start([ticket(1), ticket(2)])
    new = await waiting(client, "t-new")
    assert (await client.describe("t-new")).version == 2
    pinned_v1 = await waiting(client, "t-asked-v1", version=1)
    for wf_id in ("t-old", "t-new", "t-asked-v1"):
        await client.send_event(wf_id, "review", {"note": "ok"})
    assert await old.result(timeout=30) == {"trail": ["start@v1", "review@v1:ok", "close@v1"]}
    assert await new.result(timeout=30) == {"trail": ["start@v2", "stamped", "review@v2:ok", "finish@v2"]}
    assert await pinned_v1.result(timeout=30) == {"trail": ["start@v1", "review@v1:ok", "close@v1"]}
    started = [e for e in await client.get_history("t-new") if e.kind == HistoryKind.run_started]
    assert started[0].msg.version == 2  # type: ignore[union-attr]
    counts = {(v.workflow_type, v.version): v.open for v in await client.workflow_versions("VerTicket")}
    assert counts == {("VerTicket", 1): 0, ("VerTicket", 2): 0}


async def test_a_run_whose_code_is_not_served_parks_and_resumes_on_a_worker_that_serves_it(
    workers, client: Client
) -> None:
    first = await workers.start([ticket(1)])
    handle = await waiting(client, "t-park")
    await first.stop(shutdown_timeout=2.0)
    only_v2 = await workers.start([ticket(2)])
    # The event is accepted and buffered (v1 is not served here, so it cannot be judged) ...
    await client.send_event("t-park", "review", {"note": "late"})
    await wait_for_kind(client, handle, HistoryKind.run_parked)
    info = await client.describe("t-park")
    assert info.status == RunStatus.awaiting_code
    assert info.awaiting is not None and "version 1" in info.awaiting
    (v1,) = [v for v in await client.workflow_versions("VerTicket") if v.version == 1]
    assert v1.open == 1 and v1.awaiting_code == 1
    # ... nothing failed; a worker serving v1 resumes the run where it stood.
    await only_v2.stop(shutdown_timeout=2.0)
    await workers.start([ticket(1), ticket(2)])
    assert await handle.result(timeout=60) == {"trail": ["start@v1", "review@v1:late", "close@v1"]}
    history = kinds(await client.get_history("t-park"))
    assert history.count("run.parked") == 1 and history.count("run.resumed") == 1
    assert "step.failed" not in history and "run.failed" not in history
    (v1,) = [v for v in await client.workflow_versions("VerTicket") if v.version == 1]
    assert v1.open == 0


async def test_an_auto_run_upgrades_at_its_next_step_and_takes_the_patch(workers, client: Client) -> None:
    first = await workers.start([ticket(1, upgrade="auto")])
    handle = await waiting(client, "t-auto")
    await first.stop(shutdown_timeout=2.0)
    await workers.start([ticket(1, upgrade="auto"), ticket(2, upgrade="auto")])
    await client.send_event("t-auto", "review", {"note": "up"})
    assert await handle.result(timeout=30) == {"trail": ["start@v1", "stamped", "review@v2:up", "finish@v2"]}
    events = await client.get_history("t-auto")
    upgraded = [e for e in events if e.kind == HistoryKind.run_upgraded]
    assert len(upgraded) == 1
    assert (upgraded[0].msg.from_version, upgraded[0].msg.to_version) == (1, 2)  # type: ignore[union-attr]
    assert [e for e in events if e.kind == HistoryKind.patch_recorded]
    # Its history replays on the code it ran on (v1 for the start, v2 after the upgrade).
    assert Replayer([ticket(1, upgrade="auto"), ticket(2, upgrade="auto")]).replay(events).ok


# --------------------------------------------------------------------------------------------
# The mutation suite: the replayer, `grctl replay` and `grctl deploy check`.

#: The step where each unsafe mutation first diverges from the recorded run.
DIVERGES_AT = {
    "insert_step": "start",
    "delete_step": "start",
    "reorder_steps": "start",
    "rename_task": "pack",
    "task_args": "pack",
    "now_before": "pack",
    "random_before": "pack",
    "sleep_before": "pack",
    "rename_event": "approve",
    "child_type": "ship",
}


async def record_orders(workers: Any, client: Client) -> tuple[list[Any], list[Any]]:
    """One order run to its end, one waiting for its approval: their histories."""
    await workers.start(versions_code.order_code())
    done = await client.start_workflow("VerOrder", "order-done", {"amount": 21})
    await wait_for_kind(client, done, HistoryKind.wait_started)
    await client.send_event("order-done", "approve", {"by": "ann"})
    assert await done.result(timeout=30) == {"by": "ann", "charged": 42, "label": "label-order-done"}
    held = await client.start_workflow("VerOrder", "order-held", {"amount": 5})
    await wait_for_kind(client, held, HistoryKind.wait_started)
    return await client.get_history("order-done"), await client.get_history("order-held")


async def grctl(*args: str, namespace: str) -> tuple[int, str]:
    """``python -m grctl ARGS`` from the repository's root (so --app finds tests.scenarios)."""
    env = {**os.environ, "GRCTL_NAMESPACE": namespace}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grctl", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    return proc.returncode or 0, out.decode()


async def test_the_replayer_reports_every_mutation_and_nothing_on_safe_changes(workers, client: Client) -> None:
    done, held = await record_orders(workers, client)
    assert {e.kind for e in done} >= {
        HistoryKind.timestamp_recorded, HistoryKind.task_completed, HistoryKind.sleep_recorded,
        HistoryKind.random_recorded, HistoryKind.child_started, HistoryKind.child_completed,
    }  # fmt: skip
    for mutation in versions_code.SAFE:
        replayer = Replayer(versions_code.order_code(mutation))
        for history in (done, held):
            result = replayer.replay(history)
            assert result.ok and result.incomplete is None, (mutation, result)
    for mutation in versions_code.SAFE_AHEAD:
        replayer = Replayer(versions_code.order_code(mutation))
        assert replayer.replay(held).ok, mutation  # no run waiting there has reached the change
        assert not replayer.replay(done).ok, mutation  # one that passed it went on otherwise
    for mutation, step in DIVERGES_AT.items():
        result = Replayer(versions_code.order_code(mutation)).replay(done)
        found = result.divergence
        assert found is not None, f"{mutation}: no divergence found"
        assert found.step == step, (mutation, found)
        assert found.message and found.recorded != found.called, (mutation, found)
    # The run in flight has not reached the event: only the mutations before it show there.
    for mutation, step in DIVERGES_AT.items():
        result = Replayer(versions_code.order_code(mutation)).replay(held)
        assert result.ok == (step == "approve"), (mutation, result.divergence)
    # A divergence names the code's line.
    found = Replayer(versions_code.order_code("now_before")).replay(done).divergence
    assert found is not None and found.line is not None and "versions_code.py" in found.line
    assert found.recorded == "task:charge" and found.called == "now:now" and found.position == 0


async def test_grctl_replay_and_deploy_check_find_the_mutations(
    workers, client: Client, connection: Any, tmp_path: Path
) -> None:
    await record_orders(workers, client)
    ns = connection.namespace
    app = "tests.scenarios.versions_code"
    # Export a history as JSON lines and replay it, as a CI job would keep it.
    code, text = await grctl("workflow", "history", "order-done", "--json", namespace=ns)
    assert code == 0, text
    saved = tmp_path / "histories"
    saved.mkdir()
    (saved / "order-done.jsonl").write_text(text)
    assert_replays(versions_code.RECORDED, saved)
    with pytest.raises(AssertionError, match="pack"):
        assert_replays(versions_code.NOW_BEFORE, saved)
    code, text = await grctl("replay", "--app", f"{app}:RECORDED", str(saved), namespace=ns)
    assert code == 0, text
    assert "no divergence" in text
    code, text = await grctl("replay", "--app", f"{app}:NOW_BEFORE", str(saved / "order-done.jsonl"), namespace=ns)
    assert code == 1, text
    assert "order-done" in text and "pack" in text and "now:now" in text
    # The namespace's runs in flight (order-held, waiting; its child ended).
    code, text = await grctl("replay", "--app", f"{app}:RECORDED", "--namespace", ns, "--all", "--json", namespace=ns)
    assert code == 0, text
    assert json.loads(text)["runs"] == 1
    code, text = await grctl("replay", "--app", f"{app}:NOW_BEFORE", "--namespace", ns, "--all", namespace=ns)
    assert code == 1 and "order-held" in text, text
    # The deploy check: structural (the handler the waiting run needs) and the replay.
    code, text = await grctl("deploy", "check", "--app", f"{app}:RECORDED", namespace=ns)
    assert code == 0 and "safe" in text, text
    code, text = await grctl("deploy", "check", "--app", f"{app}:RENAMED_EVENT", "--no-replay", namespace=ns)
    assert code == 1, text
    assert "VerOrder v1: event handler 'approve' is not served: 1 run(s) need it (e.g. order-held)" in text
    code, text = await grctl("deploy", "check", "--app", f"{app}:NOW_BEFORE", "--json", namespace=ns)
    assert code == 1, text
    report = json.loads(text)
    assert report["missing"] == [] and [d["wf_id"] for d in report["replay"]["diverged"]] == ["order-held"]
    # Every mutation of the suite, through the check's own function: each is found (by the
    # structure or the replay of the run in flight); the safe changes give nothing.
    for mutation in (*versions_code.UNSAFE, *versions_code.SAFE, *versions_code.SAFE_AHEAD):
        _, found, tally = await asyncio.to_thread(check_deploy, connection, versions_code.order_code(mutation))
        assert tally is not None and found.runs == tally.runs == 1
        caught = not found.ok or bool(tally.diverged)
        assert caught == (mutation in versions_code.UNSAFE), (mutation, found.counts, tally.to_dict())


async def test_grctl_workflow_versions_prints_the_drain_counts(workers, client: Client, connection: Any) -> None:
    await workers.start([ticket(1), ticket(2)])
    await waiting(client, "t-v1", version=1)
    done = await waiting(client, "t-v2")
    await client.send_event("t-v2", "review", {"note": "x"})
    await done.result(timeout=30)
    code, text = await grctl("workflow", "versions", "VerTicket", namespace=connection.namespace)
    assert code == 0, text
    assert "VerTicket v1: 1 run open (1 running) — keep its code" in text
    assert "VerTicket v2: 0 runs open — its code can be removed" in text
