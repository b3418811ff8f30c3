"""``grctl workflow ...``: start, inspect and steer runs.

Reads (describe, result, history, list) go straight to the namespace's topics and work without
a running worker; writes (start, send, cancel, terminate) go through `Client` and need a worker
of the namespace to answer.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from ulid import ULID

from grctl.cli.common import (
    UI_INSTALL,
    CommandFailed,
    connect,
    connect_sync,
    err,
    fmt_duration_ms,
    globals_of,
    handle_errors,
    json_text,
    missing_ui_packages,
    out,
    parse_duration,
    parse_json,
    print_json,
    progress,
    require_ui_extra,
    run_async,
    styled_status,
    to_jsonable,
)
from grctl.cli.render import event_dict, event_line, info_dict, info_table, runs_table
from grctl.client import reader
from grctl.client.client import Client
from grctl.errors import InvalidArgumentError
from grctl.models.history import RUN_END_STATUS, HistoryEvent
from grctl.models.run_info import RunInfo, RunStatus

workflow_app = typer.Typer(
    help="Start, inspect and steer workflow runs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

#: The packages of the ``ui`` extra the interactive view runs on.
TUI_PACKAGES = ("textual",)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of text.")]
WfIdArg = Annotated[str, typer.Argument(metavar="ID", help="The workflow id.", show_default=False)]


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type') or 'Error'}: {error.get('message') or 'no message'}"
    return str(error)


def _outcome_failure(wf_id: str, run_id: str, status: str, error: Any) -> str:
    what = {
        "failed": f"failed: {_error_text(error)}",
        "cancelled": "was cancelled",
        "terminated": "was terminated",
        "timed_out": "timed out (workflow timeout)",
    }.get(status, status)
    return f"run {run_id} of workflow id {wf_id!r} {what}; see `grctl workflow history {wf_id}`"


# --------------------------------------------------------------------------------------------
# start


def _read_input(input_json: str | None, input_file: Path | None) -> Any:
    if input_json is not None and input_file is not None:
        raise typer.BadParameter("use --input or --input-file, not both", param_hint="--input / --input-file")
    if input_file is not None:
        if str(input_file) == "-":
            text = sys.stdin.read()
        else:
            try:
                text = input_file.read_text()
            except OSError as exc:
                raise typer.BadParameter(
                    f"cannot read {input_file}: {exc.strerror}", param_hint="--input-file"
                ) from None
        return parse_json(text, "--input-file")
    if input_json is not None:
        return parse_json(input_json, "--input")
    return None


@workflow_app.command("start")
def start_cmd(
    wf_type: Annotated[str, typer.Option("--type", "-t", help="The workflow type to start.", show_default=False)],
    wf_id: Annotated[
        str | None, typer.Option("--id", "-i", help="The workflow id [default: a new ULID].", show_default=False)
    ] = None,
    input_json: Annotated[
        str | None,
        typer.Option("--input", "-I", help="The start input as JSON (an object becomes keyword arguments)."),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", help="Read the input JSON from a file ('-' for stdin).")
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option("--timeout", help="Workflow timeout (30s, 5m, 1h30m): the run times out durably after it."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the run to end and print its result.")] = False,
    priority: Annotated[
        int | None,
        typer.Option("--priority", min=1, max=5, help="Its priority for limiters, 1 (first) to 5 (last) [default: 3]."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run of a workflow type; with --wait, wait for its result.

    Exits 1 if the id has an active run, no worker serves the type, or (with --wait) the run
    does not complete.

    **Examples**

      grctl workflow start -t Order --input '{"order_id": "A-1", "items": ["book"], "unit_price": 9.5}'

      grctl workflow start -t Approval -i approval-1 --input-file doc.json --timeout 1h

      grctl workflow start -t Order -I '{"order_id": "A-2", "items": [], "unit_price": 1}' --wait --json
    """
    value = _read_input(input_json, input_file)
    wf_timeout = parse_duration(timeout) if timeout is not None else None
    run_wf_id = wf_id or str(ULID())

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            with progress(f"starting {wf_type} {run_wf_id}"):
                handle = await client.start_workflow(wf_type, run_wf_id, value, timeout=wf_timeout, priority=priority)
            info = handle.run_info
            outcome: dict[str, Any] = {"wf_id": info.wf_id, "run_id": info.id, "wf_type": info.wf_type}
            if not wait:
                outcome["status"] = "running"
                if as_json:
                    print_json(outcome)
                else:
                    out.print("[bold green]Workflow started[/]")
                    out.print(f"  type:   {escape(info.wf_type)}\n  id:     {escape(info.wf_id)}\n  run id: {info.id}")
                return
            if not as_json:
                err.print(f"started {escape(info.wf_type)} {escape(info.wf_id)} (run {info.id}), waiting for it to end")
            t0 = time.monotonic()
            result: Any = None
            error: Any = None
            with progress("waiting for the result"):
                try:
                    result = await handle.result()
                except asyncio.CancelledError:
                    if handle.run_info.status not in (RunStatus.cancelled, RunStatus.terminated):
                        raise
                except Exception as exc:  # noqa: BLE001  # failed / timed out: reported below
                    error = {"type": type(exc).__name__, "message": str(exc)}
            status = str(handle.run_info.status)
            outcome.update(status=status, result=result, error=error)
            if as_json:
                print_json(outcome)
            else:
                took = fmt_duration_ms((time.monotonic() - t0) * 1000)
                if status == "completed":
                    err.print(f"{styled_status(status)} after {took}")
                    out.print(json_text(result), highlight=False, markup=False)
            if status != "completed":
                raise CommandFailed(_outcome_failure(info.wf_id, info.id, status, error))

    run_async(main)


# --------------------------------------------------------------------------------------------
# describe / result


def _find(wf_id: str) -> tuple[Any, reader.RunRow]:
    conn = connect_sync()
    with progress(f"looking up {wf_id}"):
        return conn, reader.find_run(conn, wf_id)


@workflow_app.command("describe")
def describe_cmd(wf_id: WfIdArg, as_json: JsonOption = False) -> None:
    """Show the latest run of a workflow id: status, step, times, result or error.

    Reads the committed run record from the namespace's state topic (no worker needed).

    **Examples**

      grctl workflow describe order-1

      grctl workflow describe order-1 --json | jq .status
    """

    def main() -> None:
        _conn, row = _find(wf_id)
        info = row.info()
        if as_json:
            print_json(info_dict(info))
        else:
            out.print(info_table(info))

    handle_errors(main)


def _wait_outcome(conn: Any, info: RunInfo, timeout: float | None) -> tuple[str, Any, Any]:
    """Follow the run's history until its terminal event: (status, result, error)."""
    for event in reader.iter_history(conn, info.wf_id, info.id, follow=True, timeout=timeout):
        status = RUN_END_STATUS.get(event.kind)
        if status is not None:
            msg = to_jsonable(event.msg) or {}
            return status.value, msg.get("result"), msg.get("error")
    raise CommandFailed(f"the history of run {info.id} ended without a terminal event")


@workflow_app.command("result")
def result_cmd(
    wf_id: WfIdArg,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Give up after this long (30s, 5m) [default: wait forever].")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Wait for the latest run of a workflow id to end and print its result as JSON.

    Exits 0 if the run completed, 1 if it failed, was cancelled, terminated or timed out, or if
    --timeout ran out first.

    **Examples**

      grctl workflow result order-1

      grctl workflow result approval-1 --timeout 30s --json
    """
    limit = parse_duration(timeout).total_seconds() if timeout is not None else None

    def main() -> None:
        conn, row = _find(wf_id)
        info = row.info()
        if info.status.is_terminal:
            status, result, error = str(info.status), info.result, info.error
        else:
            with progress(f"waiting for run {info.id} of {wf_id} to end"):
                status, result, error = _wait_outcome(conn, info, limit)
        if as_json:
            print_json({"wf_id": info.wf_id, "run_id": info.id, "status": status, "result": result, "error": error})
        elif status == "completed":
            out.print(json_text(result), highlight=False, markup=False)
        if status != "completed":
            raise CommandFailed(_outcome_failure(info.wf_id, info.id, status, error))

    handle_errors(main)


# --------------------------------------------------------------------------------------------
# history


@workflow_app.command("history")
def history_cmd(
    wf_id: WfIdArg,
    run_id: Annotated[
        str | None, typer.Option("--run-id", "-r", help="A run of this id [default: the latest run].")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until the run ends.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as JSON lines (JSONL).")] = False,
    tui: Annotated[bool, typer.Option("--tui", help="Open the interactive view of this run.")] = False,
) -> None:
    """Print the history of a run: every event, in order, from its first.

    Seeks to the run's first record in the history topic (the run id carries its start time)
    instead of scanning. With --follow, tails until the run completes, fails, is
    cancelled, terminated or times out.

    **Examples**

      grctl workflow history order-1

      grctl workflow history approval-1 --follow

      grctl workflow history order-1 --json | jq -r .kind
    """
    if run_id is not None:
        try:
            ULID.from_str(run_id)
        except ValueError:
            raise typer.BadParameter(f"{run_id!r} is not a run id (a ULID)", param_hint="--run-id") from None
    if tui:
        handle_errors(lambda: require_ui_extra("the interactive view (--tui)", TUI_PACKAGES))

    def main() -> None:
        conn = connect_sync()
        rid = run_id
        if rid is None:
            with progress(f"looking up {wf_id}"):
                rid = reader.find_run(conn, wf_id).record.run_id
        if tui:
            from grctl.cli.tui import run_history_app

            run_history_app(conn, wf_id, rid)
            return
        first_ms: int | None = None
        count = 0
        if not as_json:
            err.print(f"history of {escape(wf_id)} run {rid}" + (" (following; Ctrl-C to stop)" if follow else ""))
        events = reader.iter_history(conn, wf_id, rid, follow=follow)
        with progress("reading history", enabled=not follow):
            batch: list[HistoryEvent] = []
            for event in events:
                count += 1
                if as_json:
                    print_json(event_dict(event), indent=None)
                    continue
                if first_ms is None and event.timestamp is not None:
                    first_ms = int(event.timestamp.timestamp() * 1000)
                if follow:
                    out.print(event_line(event, first_ms))
                else:
                    batch.append(event)
        for event in batch:
            out.print(event_line(event, first_ms))
        if count == 0:
            raise CommandFailed(
                f"no history for run {rid} of workflow id {wf_id!r} (expired from the history topic, or a wrong "
                f"--run-id)"
            )

    handle_errors(main)


# --------------------------------------------------------------------------------------------
# list

StatusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        "-s",
        help=f"Only runs with this status (repeatable): {', '.join(reader.ALL_STATUSES)}.",
        show_default=False,
    ),
]


@workflow_app.command("list")
def list_cmd(
    wf_types: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only runs of this type (repeatable).", show_default=False)
    ] = None,
    statuses: StatusOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only runs created in this last period (1h, 30m, 7d).")
    ] = None,
    search: Annotated[
        str | None, typer.Option("--search", "-q", help="Only ids, types or run ids containing this text.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000, help="Runs per page.")] = 50,
    page: Annotated[
        str | None, typer.Option("--page", help="The next-page token printed by the previous page.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"runs": [...], "next_page": token|null} as JSON.')
    ] = False,
    plain: Annotated[
        bool, typer.Option("--plain", help="Print a table even on a terminal (no interactive view).")
    ] = False,
) -> None:
    """List runs, newest first: the latest run of each workflow id.

    On a terminal this opens the interactive view (filter, Enter for a run's history, live
    updates); otherwise, or with --plain or --json, it prints one page. The workers answer from
    their run indexes (every partition's owner, merged here), so a page is quick on any number
    of runs; it needs running workers.

    **Examples**

      grctl workflow list

      grctl workflow list --status running --type Order --since 1h --plain

      grctl workflow list --limit 100 --json | jq -r '.runs[].wf_id'

      grctl workflow list --page <token from the previous page>
    """
    bad = [s for s in statuses or [] if s not in reader.ALL_STATUSES]
    if bad:
        raise typer.BadParameter(
            f"unknown status {bad[0]!r}; use one of {', '.join(reader.ALL_STATUSES)}", param_hint="--status"
        )
    since_ms = int((time.time() - parse_duration(since, "--since").total_seconds()) * 1000) if since else None
    flt = reader.RunFilter(
        types=set(wf_types) if wf_types else None,
        statuses=set(statuses) if statuses else None,
        since_ms=since_ms,
        text=search,
        page_token=page,
    )
    if page is not None:
        try:
            reader.check_page_token(flt, globals_of().resolved_namespace)
        except InvalidArgumentError as exc:
            raise typer.BadParameter(str(exc), param_hint="--page") from None
    interactive = not (as_json or plain) and sys.stdout.isatty() and sys.stdin.isatty()
    if interactive and missing_ui_packages(TUI_PACKAGES):
        interactive = False  # a table, as with --plain
        err.print(f"(the interactive view needs the ui extra: {UI_INSTALL}; printing a table)", highlight=False)

    def main() -> None:
        conn = connect_sync()
        if interactive:
            from grctl.cli.tui import run_list_app

            run_list_app(conn, flt, page_size=max(limit, 200))
            return
        with progress("listing runs"):
            result = reader.list_runs(conn, flt, limit)
        if as_json:
            print_json(
                {
                    "runs": [r.to_dict() for r in result.rows],
                    "next_page": result.next_cursor,
                    "unavailable_partitions": result.unavailable_partitions,
                }
            )
            return
        if result.unavailable_partitions:
            err.print(
                f"partitions {', '.join(map(str, result.unavailable_partitions))} did not answer (moving between "
                f"workers?): their runs are missing from this page",
                highlight=False,
            )
        if not result.rows:
            err.print(f"no runs match in namespace {conn.namespace!r}")
            return
        out.print(runs_table(result.rows))
        err.print(
            f"{len(result.rows)} run(s), newest first; listed by the workers in {result.elapsed_s * 1000:.0f} ms",
            highlight=False,
        )
        if result.next_cursor:
            err.print(f"next page: add --page {result.next_cursor}", highlight=False)

    handle_errors(main)


@workflow_app.command("versions")
def versions_cmd(
    wf_type: Annotated[
        str | None, typer.Argument(metavar="[TYPE]", help="Only this workflow type.", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Per workflow type and version, how many runs are not ended: when old code can be removed.

    The counts are exact: each partition's owner keeps them in the same transactions as the
    runs' starts and ends (it needs running workers). A version with 0 open runs can be removed
    from the workers' code; a version with runs awaiting code has runs parked until a worker
    serving it owns their partition.

    **Examples**

      grctl workflow versions

      grctl workflow versions Order --json
    """

    def main() -> None:
        conn = connect_sync()
        with progress("counting runs per version"), reader.RunLister(conn) as lister:
            page = lister.page(reader.RunFilter(types={wf_type} if wf_type else None), 1, counts=True)
        if page.unavailable_partitions:
            raise CommandFailed(
                f"partitions {', '.join(map(str, page.unavailable_partitions))} did not answer (moving between "
                "workers?): the counts would be short; ask again"
            )
        rows = [v for v in page.versions or [] if wf_type is None or v.workflow_type == wf_type]
        if as_json:
            print_json(
                [
                    {
                        "workflow_type": v.workflow_type,
                        "version": v.version,
                        "open": v.open,
                        "awaiting_code": v.awaiting_code,
                        "by_status": v.by_status,
                    }
                    for v in rows
                ]
            )
            return
        if not rows:
            what = f"type {wf_type!r}" if wf_type else "any type"
            err.print(f"no runs of {what} in namespace {conn.namespace!r}", highlight=False)
            return
        for v in rows:
            out.print(version_line(v), highlight=False)

    handle_errors(main)


def version_line(v: Any) -> str:
    """One drain count as `grctl workflow versions` prints it."""
    if v.open == 0:
        return f"{v.workflow_type} v{v.version}: 0 runs open — its code can be removed"
    runs = "run" if v.open == 1 else "runs"
    detail = ", ".join(f"{n} {status}" for status, n in v.by_status.items())
    parked = f"; {v.awaiting_code} parked awaiting code" if v.awaiting_code else ""
    return f"{v.workflow_type} v{v.version}: {v.open} {runs} open ({detail}){parked} — keep its code"


# --------------------------------------------------------------------------------------------
# send / cancel / terminate / query


@workflow_app.command("send")
def send_cmd(
    wf_id: WfIdArg,
    event: Annotated[str, typer.Argument(metavar="EVENT", help="The event name (an @wf.event handler).")],
    payload: Annotated[
        str | None, typer.Option("--payload", "-p", help="The event payload as JSON (an object: keyword arguments).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send an event to the latest run of a workflow id.

    **Examples**

      grctl workflow send approval-1 approve --payload '{"approver": "alice"}'
    """
    value = parse_json(payload, "--payload") if payload is not None else None

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            with progress(f"sending {event} to {wf_id}"):
                await client.send_event(wf_id, event, value)
        if as_json:
            print_json({"ok": True, "wf_id": wf_id, "event": event})
        else:
            out.print(f"event {escape(event)!r} delivered to {escape(wf_id)}")

    run_async(main)


def _cancel(wf_id: str, reason: str | None, terminate: bool, as_json: bool) -> None:
    verb = "terminate" if terminate else "cancel"

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            with progress(f"{verb} {wf_id}"):
                await client.cancel_run(wf_id, reason, terminate=terminate)
        if as_json:
            print_json({"ok": True, "wf_id": wf_id, "action": verb, "reason": reason})
        elif terminate:
            out.print(f"{escape(wf_id)} terminated")
        else:
            out.print(
                f"cancel of {escape(wf_id)} accepted (a running step finishes first); "
                f"`grctl workflow result {escape(wf_id)}` waits for the end"
            )

    run_async(main)


ReasonOption = Annotated[str | None, typer.Option("--reason", help="Why (recorded in the history).")]


@workflow_app.command("cancel")
def cancel_cmd(wf_id: WfIdArg, reason: ReasonOption = None, as_json: JsonOption = False) -> None:
    """Cancel the latest run of a workflow id: at once if it waits, after its running step otherwise.

    **Examples**

      grctl workflow cancel order-1 --reason "customer changed their mind"
    """
    _cancel(wf_id, reason, False, as_json)


@workflow_app.command("terminate")
def terminate_cmd(wf_id: WfIdArg, reason: ReasonOption = None, as_json: JsonOption = False) -> None:
    """Terminate the latest run of a workflow id at once (a running step is cancelled).

    **Examples**

      grctl workflow terminate order-1 --reason stuck
    """
    _cancel(wf_id, reason, True, as_json)


@workflow_app.command("query")
def query_cmd(
    wf_id: WfIdArg,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The query name (a @wf.query handler).")],
    payload: Annotated[
        str | None,
        typer.Option("--payload", "-p", help="The query arguments as JSON (an object: keyword arguments)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Ask the latest run of a workflow id a query and print the answer as JSON.

    The worker that owns the run answers from its committed state.

    **Examples**

      grctl workflow query order-1 progress

      grctl workflow query counter-1 times --payload '{"factor": 10}' --json
    """
    value = parse_json(payload, "--payload") if payload is not None else None

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            with progress(f"querying {wf_id}"):
                answer = await client.query(wf_id, name, value)
        if as_json:
            print_json({"wf_id": wf_id, "query": name, "answer": answer})
        else:
            out.print(json_text(answer), highlight=False, markup=False)

    run_async(main)
