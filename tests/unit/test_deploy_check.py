"""`grctl deploy check`'s judgement (issue 26): what runs in flight need of the code, and which code serves it.

Pure logic: run records as the state topic holds them, real `Workflow` definitions in a
`WorkflowSet`, and the same question the worker's state machine asks (`has_step`).
"""

from __future__ import annotations

from grctl import Workflow
from grctl.cli.deploy import _Catalog
from grctl.engine.deploy_check import Missing, check_runs, needs_of
from grctl.engine.records import RunRecord
from grctl.models.run_info import RunStateKind, RunStatus
from grctl.workflow.registry import WorkflowSet
from tests.unit.test_versions import order


def run(wf_id: str, *, version: int = 1, state: RunStateKind = RunStateKind.step, step: str | None = "ship",
        status: RunStatus = RunStatus.running, awaits: list[str] | None = None, on_timeout: str | None = None,
        auto: bool = False) -> RunRecord:  # fmt: skip
    return RunRecord(
        run_id="r-" + wf_id, wf_id=wf_id, wf_type="Order", status=status, state=state, step=step, version=version,
        awaits=awaits, wait_on_timeout=on_timeout, upgrade_auto=auto,
    )  # fmt: skip


def check(runs: list[RunRecord], *code: Workflow):  # type: ignore[no-untyped-def]
    return check_runs(runs, _Catalog(WorkflowSet(code)))


def test_needs_of_each_state() -> None:
    assert needs_of(run("a")) == [("version", ""), ("step", "ship")]
    waiting = run("b", state=RunStateKind.wait, step=None, awaits=["approve", "reject"], on_timeout="expire")
    assert needs_of(waiting) == [
        ("version", ""), ("event handler", "approve"), ("event handler", "reject"), ("wait-timeout step", "expire")
    ]  # fmt: skip
    assert needs_of(run("c", status=RunStatus.completed, state=RunStateKind.complete)) == []


def test_the_same_code_serves_every_run() -> None:
    runs = [run("a"), run("b", state=RunStateKind.wait, step=None, awaits=["approve"]), run("c", step="pack")]
    report = check(runs, order(1))
    assert report.ok and report.runs == 3 and report.served == 3
    assert report.by_version == {("Order", 1): 3}


def test_ended_runs_need_nothing() -> None:
    report = check([run("a", status=RunStatus.failed, state=RunStateKind.fail)], order(2))
    assert report.ok and report.runs == 0


def test_removing_the_version_too_early_names_it_with_the_runs() -> None:
    runs = [run(f"o-{i}") for i in range(7)]
    report = check(runs, order(2, steps=("pack", "dispatch")))
    assert not report.ok
    gap = Missing("Order", 1, "version")
    assert report.counts == {gap: 7}
    assert report.missing[gap] == ["o-0", "o-1", "o-2", "o-3", "o-4"]  # a sample; the count is exact
    assert gap.describe() == "Order v1: the version is not served"


def test_a_renamed_step_names_the_step_due() -> None:
    report = check([run("a", step="ship"), run("b", step="pack")], order(1, steps=("pack", "dispatch")))
    assert report.counts == {Missing("Order", 1, "step", "ship"): 1}
    assert report.served == 1


def test_a_removed_event_handler_names_the_waiting_runs() -> None:
    waiting = run("w", state=RunStateKind.wait, step=None, awaits=["approve"], on_timeout="pack")
    report = check([waiting], order(1, events=()))
    assert report.counts == {Missing("Order", 1, "event handler", "approve"): 1}


def test_a_parked_run_is_checked_like_a_due_one() -> None:
    parked = run("p", status=RunStatus.awaiting_code, step="ship")
    assert check([parked], order(1)).ok
    assert not check([parked], order(1, steps=("pack",))).ok


def test_both_versions_served_is_safe_for_old_and_new_runs() -> None:
    runs = [run("old", version=1, step="ship"), run("new", version=2, step="dispatch")]
    assert check(runs, order(1), order(2, steps=("pack", "dispatch"))).ok


def test_an_auto_upgrading_run_may_be_served_by_a_newer_version_only() -> None:
    auto = run("a", version=1, step="ship", auto=True)
    assert check([auto], order(2, steps=("pack", "ship"))).ok  # upgrades at its next step
    assert not check([auto], order(2, steps=("pack", "dispatch"))).ok  # no version has 'ship'
    pinned = run("p", version=1, step="ship")
    assert not check([pinned], order(2, steps=("pack", "ship"))).ok  # a pinned run never moves
