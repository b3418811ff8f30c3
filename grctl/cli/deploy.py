"""``grctl deploy check`` and ``grctl replay``: check new workflow code against the runs in flight, before a deploy.

Both read the namespace's topics (`grctl.client.inflight`: no worker needed, nothing written,
the worker group untouched) or history files, and never execute a task, a child or a sleep.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from grctl.cli.common import EXIT_FAILED, connect_sync, err, handle_errors, out, print_json, progress
from grctl.cli.worker import load_workflows
from grctl.client.inflight import InFlight, histories_of, runs_in_flight
from grctl.engine.deploy_check import DeployReport, check_runs
from grctl.engine.records import RunRecord
from grctl.errors import GrctlError
from grctl.kafka.connection import Connection
from grctl.kafka.partitioner import partition_for
from grctl.testing.replayer import Replayer, ReplayResult, load_history
from grctl.workflow.registry import WorkflowSet
from grctl.workflow.workflow import Workflow

deploy_app = typer.Typer(
    help="Check new workflow code before deploying it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

AppOption = Annotated[
    str,
    typer.Option(
        "--app", "-a", metavar="MODULE[:ATTRIBUTE]", help="The new code: the workflows the workers will serve."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of text.")]
#: Findings printed as text per kind (all of them go to --json).
SHOWN = 20


class _Catalog:
    """`grctl.engine.deploy_check.CodeCatalog` over a set of workflow definitions."""

    def __init__(self, workflows: WorkflowSet) -> None:
        self._set = workflows

    def versions(self, wf_type: str) -> list[int]:
        return self._set.versions(wf_type)

    def has_step(self, wf_type: str, version: int, step: str) -> bool:
        wf = self._set.get(wf_type, version)
        return wf is not None and wf.handler_for(step) is not None


def _code(app_spec: str) -> tuple[list[Workflow], WorkflowSet]:
    workflows = load_workflows(app_spec)
    found = WorkflowSet(workflows)
    if found.problems:
        raise GrctlError(f"{app_spec}: " + "; ".join(found.problems))
    return workflows, found


@dataclass
class ReplayTally:
    """Replays of many runs: how many, how fast, what diverged."""

    runs: int = 0
    steps: int = 0
    seconds: float = 0.0
    diverged: list[ReplayResult] = field(default_factory=list)
    incomplete: list[ReplayResult] = field(default_factory=list)

    def add(self, result: ReplayResult) -> None:
        self.runs += 1
        self.steps += result.steps
        if result.divergence is not None:
            self.diverged.append(result)
        elif result.incomplete is not None:
            self.incomplete.append(result)

    @property
    def rate(self) -> float:
        return self.runs / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "runs_per_second": round(self.rate, 1),
            "diverged": [_result_dict(r) for r in self.diverged],
            "incomplete": [{"wf_id": r.wf_id, "run_id": r.run_id, "why": r.incomplete} for r in self.incomplete],
        }


def _result_dict(r: ReplayResult) -> dict[str, Any]:
    d = r.divergence
    return {
        "wf_id": r.wf_id, "run_id": r.run_id, "wf_type": r.wf_type, "version": r.version,
        "step": d.step if d else None, "seq": d.seq if d else None, "position": d.position if d else None,
        "recorded": d.recorded if d else None, "called": d.called if d else None, "line": d.line if d else None,
        "message": d.message if d else None,
    }  # fmt: skip


def replay_in_flight(conn: Connection, replayer: Replayer, runs: list[RunRecord]) -> ReplayTally:
    """Replay the histories of `runs`, one partition at a time (memory: one partition's histories)."""
    tally = ReplayTally()
    by_part: dict[int, list[RunRecord]] = {}
    for run in runs:
        by_part.setdefault(partition_for(run.wf_id, conn.num_partitions), []).append(run)
    for p in sorted(by_part):
        histories = histories_of(conn, by_part[p])
        t0 = time.perf_counter()
        for run in by_part[p]:
            tally.add(replayer.replay(histories.get(run.run_id, [])))
        tally.seconds += time.perf_counter() - t0
    return tally


def check_deploy(
    conn: Connection, workflows: list[Workflow], *, replay: bool = True
) -> tuple[InFlight, DeployReport, ReplayTally | None]:
    """`grctl deploy check`'s findings: the runs in flight, what of their code is missing, their replays.

    Raises:
        GrctlError: the definitions are invalid (two of one type and version, ...).
        KafkaSetupError: the topics cannot be read.
    """
    found = WorkflowSet(workflows)
    if found.problems:
        raise GrctlError("; ".join(found.problems))
    inflight = runs_in_flight(conn)
    report = check_runs(inflight.runs, _Catalog(found))
    tally = replay_in_flight(conn, Replayer(workflows), inflight.runs) if replay else None
    return inflight, report, tally


def _print_tally(tally: ReplayTally, what: str) -> None:
    out.print(
        f"replayed {tally.runs:,} {what} ({tally.steps:,} steps) in {tally.seconds:.2f} s: {tally.rate:,.0f} runs/s",
        highlight=False,
    )
    for r in tally.diverged[:SHOWN]:
        d = r.divergence
        assert d is not None
        where = f" ({d.line})" if d.line else ""
        out.print(
            f"  [red]diverged[/] {escape(r.wf_id)} ({escape(r.wf_type)} v{r.version}): "
            f"{escape(d.message)}{escape(where)}"
        )
    if len(tally.diverged) > SHOWN:
        out.print(f"  ... and {len(tally.diverged) - SHOWN} more (--json lists them all)")
    if tally.incomplete:
        first = tally.incomplete[0]
        err.print(
            f"{len(tally.incomplete)} run(s) could not be replayed whole (not a divergence), e.g. "
            f"{first.wf_id}: {first.incomplete}",
            highlight=False,
        )


def _report_dict(report: DeployReport) -> dict[str, Any]:
    return {
        "runs": report.runs,
        "served": report.served,
        "ok": report.ok,
        "missing": [
            {
                "wf_type": m.wf_type,
                "version": m.version,
                "kind": m.kind,
                "name": m.name,
                "runs": report.counts[m],
                "example_wf_ids": report.missing[m],
                "what": m.describe(),
            }
            for m in sorted(report.counts)
        ],
        "open_runs": [{"wf_type": t, "version": v, "runs": n} for (t, v), n in sorted(report.by_version.items())],
    }


@deploy_app.command("check")
def check_cmd(
    app_spec: AppOption,
    no_replay: Annotated[
        bool,
        typer.Option("--no-replay", help="Only compare what the runs need with the code (no replay of histories)."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check new code against every run in flight: exit 0 if the deploy is safe, 1 naming what would break.

    Reads the namespace's state topic (no worker needed, nothing written) and, for every run not
    ended, checks that the new code serves its type and version and the handler it will run
    next: its due step, the events it waits for, its wait-timeout step (a run of an
    `upgrade="auto"` version may be served by a newer version). Then, unless --no-replay, it
    replays each run's history against the new code (`grctl replay`): a step whose recorded calls
    the code would not make again is a divergence. A run the check names would park on the new
    code (status awaiting_code) or fail with a NonDeterminismError.

    **Examples**

      grctl -n orders deploy check --app myapp.workflows:WORKFLOWS

      grctl -n orders deploy check --app myapp.workflows --no-replay --json
    """

    def main() -> int:
        workflows, found = _code(app_spec)
        conn = connect_sync()
        with progress(f"checking the runs in flight of {conn.namespace}"):
            inflight, report, tally = check_deploy(conn, workflows, replay=not no_replay)
        ok = report.ok and (tally is None or not tally.diverged)
        if as_json:
            doc = _report_dict(report)
            doc["replay"] = tally.to_dict() if tally is not None else None
            doc["ok"] = ok
            print_json(doc)
            return 0 if ok else EXIT_FAILED
        out.print(
            f"{report.runs:,} run(s) in flight in namespace {conn.namespace!r}; the new code serves "
            + "; ".join(found.describe()),
            highlight=False,
        )
        for (wf_type, version), n in sorted(report.by_version.items()):
            out.print(f"  {wf_type} v{version}: {n:,} run(s) in flight", highlight=False)
        if inflight.undecodable:
            err.print(f"{inflight.undecodable} run records could not be decoded and were skipped", highlight=False)
        for m in sorted(report.counts):
            ids = ", ".join(report.missing[m])
            more = "" if report.counts[m] <= len(report.missing[m]) else ", ..."
            out.print(
                f"[red]missing[/] {escape(m.describe())}: {report.counts[m]:,} run(s) need it "
                f"(e.g. {escape(ids)}{more}); they would park (awaiting_code) on this code",
            )
        if tally is not None:
            _print_tally(tally, "runs in flight")
        if ok:
            out.print("[green]safe[/]: every run in flight is served by this code")
            return 0
        out.print(
            "[bold red]not safe[/]: keep the old version's code in the workers (Workflow(..., version=N) per "
            "version), or guard the change with ctx.patched(...)"
        )
        return EXIT_FAILED

    code = handle_errors(main)
    if code:
        raise typer.Exit(code)


def replay_cmd(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[FILE]...",
            help="`grctl workflow history ID --json` outputs, or folders of *.jsonl.",
            show_default=False,
        ),
    ] = None,
    app_spec: AppOption = "",
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", help="Replay the runs in flight of this namespace (read-only) instead of files."),
    ] = None,
    wf_types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only runs of this type (repeatable).", show_default=False)
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every run not ended.")] = False,
    sample: Annotated[
        int, typer.Option("--sample", min=1, help="Replay this many runs not ended, chosen at random.")
    ] = 100,
    as_json: JsonOption = False,
) -> None:
    """Replay recorded runs against workflow code and report the first divergence of each (exit 1 on any).

    A replay executes each recorded step's handler with the values the run recorded (times,
    random values, task outcomes, child outcomes): nothing is called for real, nothing is
    written. A call the code makes that the run did not record there, a recorded call it does
    not make, or another next step is a divergence, named with the step, the position in the
    step, what was recorded and what was called, and the code's line.

    **Examples**

      grctl replay --app myapp.workflows:WORKFLOWS tests/histories/

      grctl replay --app myapp.workflows --namespace orders --all

      grctl replay --app myapp.workflows --namespace orders --type Order --sample 500 --json
    """
    if not app_spec:
        raise typer.BadParameter("--app is required: the code to replay against (module:ATTRIBUTE)", param_hint="--app")
    if bool(files) == (namespace is not None):
        raise typer.BadParameter("give history FILEs or --namespace NS (one of them)", param_hint="FILE / --namespace")

    def main() -> int:
        workflows, _found = _code(app_spec)
        replayer = Replayer(workflows)
        if files:
            tally = ReplayTally()
            paths: list[Path] = []
            for f in files:
                paths += sorted(f.glob("*.jsonl")) if f.is_dir() else [f]
            if not paths:
                raise GrctlError(f"no *.jsonl history files in {', '.join(map(str, files))}")
            for path in paths:
                if not path.is_file():
                    raise GrctlError(f"{path}: no such file")
                recorded = load_history(path)
                t0 = time.perf_counter()
                for events in recorded:
                    tally.add(replayer.replay(events))
                tally.seconds += time.perf_counter() - t0
            what = f"run(s) from {len(paths)} file(s)"
        else:
            conn = connect_sync(namespace=namespace)
            with progress(f"reading the runs in flight of {conn.namespace}"):
                inflight = runs_in_flight(conn, types=wf_types)
            runs = inflight.runs
            if not replay_all and len(runs) > sample:
                runs = random.sample(runs, sample)
            with progress(f"replaying {len(runs):,} runs"):
                tally = replay_in_flight(conn, replayer, runs)
            what = f"of {len(inflight.runs):,} run(s) in flight in {conn.namespace!r}"
            what = f"run(s) {what}"
        if as_json:
            print_json(tally.to_dict())
        else:
            _print_tally(tally, what)
            if not tally.diverged:
                out.print("[green]no divergence[/]")
        return EXIT_FAILED if tally.diverged else 0

    code = handle_errors(main)
    if code:
        raise typer.Exit(code)
