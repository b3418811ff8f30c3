"""Versions of a workflow type (issue 26): pinned and auto-upgrading runs, parked runs, patches, drain counts.

The state machine with the worker's real catalog of served code (`Served`, `ServedCatalog`)
and real `Workflow` definitions; the processor on a real RocksDB store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from grctl import Context, Directive, Workflow
from grctl.engine import keys
from grctl.engine.machine import Machine, StepOutcome
from grctl.engine.records import EventCmd, InboxEntry, ReplyTo, RunRecord, StartCmd, encoder
from grctl.errors import InvalidArgumentError, RegistrationError
from grctl.models.history import HistoryKind
from grctl.models.run_info import RunStateKind, RunStatus
from grctl.worker._partition.listing import version_counts
from grctl.worker._session.served import Served, ServedCatalog
from grctl.workflow.context import Context as StepContext
from grctl.workflow.runtime import JournalEntry, StepRuntime
from grctl.workflow.store import Store
from tests.unit.test_partition_processor import Harness, wf_ids_on

T0 = 1_000_000
TO = ReplyTo(client_id="c", request_id="q", partition=0)


def order(version: int, *, upgrade: str = "pinned", steps: tuple[str, ...] = ("pack", "ship"),
          events: tuple[str, ...] = ("approve",)) -> Workflow:  # fmt: skip
    """An `Order` type at `version` with the named steps and events (handlers that never run here)."""
    wf = Workflow(workflow_type="Order", version=version, upgrade=upgrade)  # type: ignore[arg-type]

    async def start(ctx: Context) -> Directive:
        raise AssertionError("not executed by these tests")

    wf.start()(start)
    for name in steps:

        async def step(ctx: Context) -> Directive:
            raise AssertionError("not executed by these tests")

        step.__name__ = name
        wf.step()(step)
    for name in events:

        async def event(ctx: Context) -> Directive:
            raise AssertionError("not executed by these tests")

        event.__name__ = name
        wf.event()(event)
    return wf


def machine(*workflows: Workflow) -> Machine:
    return Machine(ServedCatalog(Served(workflows)), "w_test")


def no_inbox(_seq: int) -> InboxEntry | None:
    return None


def started(m: Machine, version: int | None = None) -> RunRecord:
    tr = m.apply(None, StartCmd(wf_id="o-1", run_id="r1", wf_type="Order", version=version), 0, T0, no_inbox)
    assert tr.run is not None
    return tr.run


def kinds(tr: Any) -> list[str]:
    return [h.kind for h in tr.history]


def to_step(m: Machine, run: RunRecord, step: str) -> tuple[RunRecord, Any]:
    tr = m.on_step_outcome(run, StepOutcome(run_id=run.run_id, seq=run.seq, next_kind="step", next_step=step), T0,
                           no_inbox)  # fmt: skip
    assert tr.run is not None
    return tr.run, tr


def test_a_run_starts_on_the_newest_version_served_or_the_one_asked_for_and_records_it() -> None:
    m = machine(order(1), order(2))
    run = started(m)
    assert run.version == 2 and run.status == RunStatus.running and run.upgrade_auto is False
    tr = m.apply(None, StartCmd(wf_id="o-2", run_id="r2", wf_type="Order", version=1), 0, T0, no_inbox)
    assert tr.run is not None and tr.run.version == 1 and tr.execute
    (started_event,) = [h for h in tr.history if h.kind == HistoryKind.run_started]
    assert started_event.msg is not None and started_event.msg["version"] == 1
    _, info = Machine.describe(tr.run, TO)
    assert info.payload["version"] == 1 and info.payload["awaiting"] is None


def test_a_pinned_run_parks_where_its_version_is_not_served_and_resumes_where_it_is() -> None:
    v1_only, v2_only = machine(order(1)), machine(order(2))
    run = started(v1_only)
    run, tr = to_step(v2_only, run, "pack")  # a worker with only v2 owns it now
    assert (run.status, run.state, run.step, tr.execute) == (RunStatus.awaiting_code, RunStateKind.step, "pack", False)
    assert run.missing == "version 1 of workflow type 'Order'" and kinds(tr)[-1] == HistoryKind.run_parked
    assert v2_only.ensure_served(run, T0).skipped  # still not served: nothing changes, no second event
    resumed = v1_only.ensure_served(run, T0)
    assert resumed.run is not None and resumed.execute and kinds(resumed) == [HistoryKind.run_resumed]
    assert (resumed.run.status, resumed.run.missing, resumed.run.version) == (RunStatus.running, None, 1)


def test_a_step_its_version_does_not_have_parks_the_run_naming_the_step() -> None:
    renamed = machine(order(1, steps=("pack", "dispatch")))  # v1 code changed without a new version
    run, tr = to_step(renamed, started(renamed), "ship")
    assert run.status == RunStatus.awaiting_code and not tr.execute
    assert run.missing == "step 'ship' of workflow type 'Order' version 1"


def test_an_auto_run_moves_to_the_newest_version_with_the_step_at_its_next_step() -> None:
    v1 = order(1, upgrade="auto")
    v2 = order(2, upgrade="auto", steps=("pack", "ship", "insure"))
    v3 = order(3, steps=("pack", "insure"))  # no "ship": a run due to ship stays on v2
    run = started(machine(v1))
    assert run.upgrade_auto
    m = machine(v1, v2, v3)
    moved, tr = to_step(m, run, "ship")
    assert moved.version == 2 and moved.upgrade_auto and tr.execute
    (ev,) = [h for h in tr.history if h.kind == HistoryKind.run_upgraded]
    assert ev.msg == {"from_version": 1, "to_version": 2}
    last, _ = to_step(m, moved, "insure")
    assert last.version == 3 and last.upgrade_auto is False  # v3 is pinned: it stays there


def test_a_pinned_run_never_moves_even_when_newer_versions_are_served() -> None:
    m = machine(order(1), order(2))
    run, tr = to_step(m, started(m, version=1), "pack")
    assert run.version == 1 and tr.execute and HistoryKind.run_upgraded not in kinds(tr)


def test_an_event_for_a_version_not_served_is_buffered_and_one_its_version_lacks_is_refused() -> None:
    run = started(machine(order(1)))
    waiting = msgspec_replace(run, state=RunStateKind.wait, step=None)
    elsewhere = machine(order(2))
    tr = elsewhere.apply(waiting, EventCmd(wf_id="o-1", event_name="approve", reply_to=TO), 5, T0, no_inbox)
    assert tr.run is not None and tr.run.status == RunStatus.awaiting_code  # accepted, and the run parks on it
    assert HistoryKind.event_received in kinds(tr) and tr.replies[0][1].ok
    served = machine(order(1, events=()))
    refused = served.apply(waiting, EventCmd(wf_id="o-1", event_name="approve", reply_to=TO), 5, T0, no_inbox)
    assert refused.replies[0][1].code == "unknown_event" and HistoryKind.event_received not in kinds(refused)
    assert refused.run is None or refused.run.inbox_next == waiting.inbox_next


def msgspec_replace(run: RunRecord, **kw: Any) -> RunRecord:
    import msgspec

    return msgspec.structs.replace(run, **kw)


def test_a_waiting_run_records_the_events_its_version_handles() -> None:
    m = machine(order(1, events=("approve", "reject")))
    run = started(m)
    tr = m.on_step_outcome(run, StepOutcome(run_id="r1", seq=run.seq, next_kind="wait"), T0, no_inbox)
    assert tr.run is not None and tr.run.awaits == ["approve", "reject"]
    nxt, _ = to_step(m, msgspec_replace(tr.run, state=RunStateKind.step, step="pack"), "ship")
    assert nxt.awaits is None


def test_workflow_and_worker_refuse_bad_versions_naming_them() -> None:
    with pytest.raises(InvalidArgumentError, match="version must be an integer >= 1"):
        Workflow(workflow_type="Order", version=0)
    with pytest.raises(InvalidArgumentError, match='upgrade must be "pinned" or "auto"'):
        Workflow(workflow_type="Order", upgrade="sometimes")  # type: ignore[arg-type]
    assert Served([order(1), order(2)]).problems == []
    assert Served([order(2), order(2)]).problems == ["workflow type 'Order' v2 is listed twice"]
    from grctl import Worker

    with pytest.raises(RegistrationError, match="'Order' v2 is listed twice"):
        Worker([order(1), order(2), order(2)])


# --------------------------------------------------------------------------- patches


class Port:
    """A step's port that keeps what the step journals and publishes."""

    def __init__(self) -> None:
        self.journal: list[JournalEntry] = []
        self.history: list[tuple[str, Any]] = []

    def journal_append(self, runtime: StepRuntime, position: int, entry: JournalEntry) -> None:
        self.journal.append(entry)

    def history_append(self, runtime: StepRuntime, kind: str, msg: Any, operation_id: str = "") -> None:
        self.history.append((kind, msg))


def ctx_with(recorded: list[JournalEntry]) -> tuple[StepContext, Port]:
    port = Port()
    rt = StepRuntime(wf_id="w", run_id="r", wf_type="Order", step_name="pack", seq=2, recorded=recorded, sink=port)  # type: ignore[arg-type]
    wf = order(1)
    from grctl.codec import default_codec
    from grctl.models.run_info import RunInfo

    info = RunInfo(id="r", wf_id="w", wf_type="Order")
    return StepContext(run=info, workflow=wf, store=Store(lambda k: None, default_codec()), runtime=rt,
                       codec=default_codec()), port  # fmt: skip


def test_patched_is_true_live_and_records_a_marker() -> None:
    ctx, port = ctx_with([])
    assert ctx.patched("send-sms") is True
    assert port.journal == [JournalEntry("patch", "send-sms", None)]
    assert port.history == [("patch.recorded", {"patch_id": "send-sms"})]


def test_on_replay_patched_follows_what_the_recorded_execution_did() -> None:
    took_new = [JournalEntry("patch", "send-sms", None), JournalEntry("task", "sms", {"ok": True})]
    ctx, port = ctx_with(took_new)
    assert ctx.patched("send-sms") is True and port.journal == []  # replayed, nothing recorded again
    old = [JournalEntry("task", "email", {"ok": True})]  # recorded before the patch existed
    ctx, port = ctx_with(old)
    assert ctx.patched("send-sms") is False and port.journal == []
    assert ctx._rt.next_recorded("task", "email") is not None  # the old branch still replays


def test_deprecate_patch_replays_a_recorded_marker_and_records_none() -> None:
    ctx, port = ctx_with([JournalEntry("patch", "send-sms", None), JournalEntry("now", "now", 1)])
    ctx.deprecate_patch("send-sms")
    assert ctx._rt.next_recorded("now", "now") is not None
    ctx, port = ctx_with([])
    ctx.deprecate_patch("send-sms")
    assert port.journal == [] and port.history == []


# --------------------------------------------------------------------------- drain counts


async def test_the_run_index_keeps_drain_counts_per_type_and_version(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    first, second = next(wf_ids := wf_ids_on(0)), next(wf_ids)
    for wf_id in (first, second):
        h.feed(encoder.encode(StartCmd(wf_id=wf_id, run_id=f"run-{wf_id}", wf_type="Order", input={})))
    await h.committer.flush()
    assert version_counts(h.store) == {"Order": {1: {"running": 2}}}
    rs = h.proc.running[first]
    h.proc.step_finished(rs, StepOutcome(run_id=f"run-{first}", seq=1, next_kind="complete", result=1))
    await h.committer.flush()
    assert version_counts(h.store) == {"Order": {1: {"running": 1}}}
    rs = h.proc.running[second]
    h.proc.step_finished(rs, StepOutcome(run_id=f"run-{second}", seq=1, next_kind="complete", result=1))
    await h.committer.flush()
    assert version_counts(h.store) == {"Order": {1: {"running": 0}}}  # kept: "v1: 0 runs open"
    assert h.store.get(keys.version_count_key("Order", 1, "running")) is not None
    h.store.close()


async def test_runs_of_older_workers_are_counted_once_at_assignment(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    wf_id = next(wf_ids_on(0))
    legacy = RunRecord(run_id="r-old", wf_id=wf_id, wf_type="Order", status=RunStatus.running,
                       state=RunStateKind.wait)  # fmt: skip
    h.proc.stage(keys.run_key(wf_id), encoder.encode(legacy))
    await h.committer.flush()
    h.proc.start()
    await h.committer.flush()
    assert version_counts(h.store) == {"Order": {1: {"running": 1}}}
    h.proc.start()  # the marker: nothing counted twice
    await h.committer.flush()
    assert version_counts(h.store) == {"Order": {1: {"running": 1}}}
    h.store.close()
