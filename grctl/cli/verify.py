"""`grctl verify`: check a namespace for lost and duplicated transitions (after an incident)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from grctl.cli.common import (
    EXIT_FAILED,
    connect_sync,
    err,
    globals_of,
    handle_errors,
    out,
    parse_duration,
    print_json,
    progress,
)
from grctl.client.verify import verify_namespace
from grctl.engine.verify import DEFAULT_SETTLE_MS

#: Findings printed as text (all of them go to --json).
SHOWN = 20


def verify_cmd(
    since: Annotated[
        str | None, typer.Option("--since", help="Judge only runs started in this last period (1h, 30m, 7d).")
    ] = None,
    settle: Annotated[
        str,
        typer.Option("--settle", help="A run quiet this long is not about to move (a due step then counts as lost)."),
    ] = f"{DEFAULT_SETTLE_MS // 1000}s",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every run of the namespace for lost or duplicated transitions and orphaned state.

    Reads the namespace's history and state topics (no worker needed) and reports, per run:
    duplicated transitions (two run.started, two terminal events, two step.completed for one
    step, a task completed twice), lost ones (a run that started and neither ended nor is
    pending, a due step nothing started, accepted events never handled, history and state
    disagreeing on the end) and state that belongs to no run. Exit 0 when clean, 1 when not.

    Run it after an incident (a broker or worker failure), once the load has stopped.

    **Examples**

      grctl -n orders verify

      grctl -n orders verify --since 1h --json | jq '.findings[:5]'
    """
    since_td = parse_duration(since, "--since") if since is not None else None
    settle_td = parse_duration(settle, "--settle")

    def main() -> int:
        conn = connect_sync(globals_of())
        with progress(f"reading the history and state of {conn.namespace}"):
            report = verify_namespace(conn, since=since_td, settle=settle_td)
        if as_json:
            print_json(report.to_dict())
            return 0 if report.clean else EXIT_FAILED
        window = f"started in the last {since}" if since else "in the history"
        out.print(
            f"checked {report.runs:,} runs {window} ({report.history_records:,} history records, "
            f"{report.state_keys:,} live state keys)"
        )
        if report.undecodable:
            err.print(f"[yellow]{report.undecodable} records could not be decoded and were skipped[/]")
        if report.clean:
            out.print("[green]clean[/]: nothing lost, nothing duplicated, no permit leaked, no orphaned state")
            return 0
        c = report.counts
        out.print(
            f"[bold red]not clean[/]: {c['lost']} lost, {c['duplicated']} duplicated, {c['leaked']} leaked, "
            f"{c['orphaned']} orphaned"
        )
        for f in report.findings[:SHOWN]:
            run = f" run {f.run_id}" if f.run_id else ""
            out.print(f"  {f.kind:<10} {escape(f.wf_id)}{escape(run)}: {escape(f.what)}")
        if sum(c.values()) > SHOWN:
            out.print(f"  ... and {sum(c.values()) - SHOWN} more (--json lists up to 1,000)")
        return EXIT_FAILED

    code = handle_errors(main)
    if code:
        raise typer.Exit(code)
