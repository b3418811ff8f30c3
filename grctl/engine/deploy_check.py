"""What the runs in flight need of the code, and whether a set of workflow code serves it (`grctl deploy check`).

A run not ended needs, of its type at its version (or, for a run whose version declared
`upgrade="auto"`, at that version or a newer one, as `Machine._run_or_park` upgrades it):

- in state `step` (its step due, running, retrying or parked): the handler of that step;
- waiting for an event: a handler for each event it waits for (`RunRecord.awaits`), and the
  step its wait timeout goes to;
- always: its version, for the events and queries it may still receive.

The check answers with the same catalog the worker's state machine uses
(`grctl.engine.machine.Catalog`), so "served" means here what it means to a worker: a run the
check passes would not park on this code, and one it names would.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from grctl.engine.records import RunRecord
from grctl.models.run_info import TERMINAL_STATUSES, RunStateKind

__all__ = ["CodeCatalog", "DeployReport", "Missing", "check_runs", "needs_of"]

#: Workflow ids kept per finding (the report counts them all).
SAMPLE_IDS = 5


class CodeCatalog(Protocol):
    """The questions the check asks of the new code (a subset of `grctl.engine.machine.Catalog`)."""

    def versions(self, wf_type: str) -> list[int]: ...

    def has_step(self, wf_type: str, version: int, step: str) -> bool: ...


@dataclass(frozen=True, slots=True, order=True)
class Missing:
    """Code a group of runs needs and the new code does not serve."""

    wf_type: str
    version: int
    #: "version", "step", "event handler" or "wait-timeout step".
    kind: str
    #: The step or handler name ("" for a whole version).
    name: str = ""

    def describe(self) -> str:
        if self.kind == "version":
            return f"{self.wf_type} v{self.version}: the version is not served"
        return f"{self.wf_type} v{self.version}: {self.kind} {self.name!r} is not served"


@dataclass
class DeployReport:
    """The runs in flight checked against new code.

    Attributes:
        runs: runs not ended that were checked.
        served: how many of them the code serves.
        missing: per missing piece of code, how many runs need it and a few of their ids.
        by_version: runs not ended per (type, version).
    """

    runs: int = 0
    served: int = 0
    missing: dict[Missing, list[str]] = field(default_factory=dict)
    counts: dict[Missing, int] = field(default_factory=dict)
    by_version: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every run in flight is served."""
        return not self.counts


def needs_of(run: RunRecord) -> list[tuple[str, str]]:
    """What `run` needs of its version's code: (kind, name) pairs (see the module docstring)."""
    if run.status in TERMINAL_STATUSES:
        return []
    needs: list[tuple[str, str]] = [("version", "")]
    if run.state == RunStateKind.step and run.step:
        needs.append(("step", run.step))
    elif run.state == RunStateKind.wait:
        needs += [("event handler", name) for name in run.awaits or []]
        if run.wait_on_timeout:
            needs.append(("wait-timeout step", run.wait_on_timeout))
    return needs


def _served(cat: CodeCatalog, run: RunRecord, kind: str, name: str) -> bool:
    versions = cat.versions(run.wf_type)
    usable = [v for v in versions if v == run.version or (run.upgrade_auto and v > run.version)]
    if kind == "version":
        return bool(usable)
    return any(cat.has_step(run.wf_type, v, name) for v in usable)


def check_runs(runs: Iterable[RunRecord], cat: CodeCatalog) -> DeployReport:
    """Check each run not ended against the code of `cat`."""
    report = DeployReport()
    for run in runs:
        needs = needs_of(run)
        if not needs:
            continue
        report.runs += 1
        key = (run.wf_type, run.version)
        report.by_version[key] = report.by_version.get(key, 0) + 1
        gaps = [Missing(run.wf_type, run.version, k, n) for k, n in needs if not _served(cat, run, k, n)]
        if any(g.kind == "version" for g in gaps):
            gaps = [g for g in gaps if g.kind == "version"]  # one finding: the whole version
        if not gaps:
            report.served += 1
            continue
        for gap in gaps:
            report.counts[gap] = report.counts.get(gap, 0) + 1
            ids = report.missing.setdefault(gap, [])
            if len(ids) < SAMPLE_IDS:
                ids.append(run.wf_id)
    return report
