"""``grctl schedule ...``: create, inspect and steer schedules.

Every command goes through `Client` (a schedule lives in the partition that owns its id and
only that partition's worker answers), so a worker of the namespace must be running.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from grctl.cli.common import (
    EXIT_USAGE,
    CommandFailed,
    connect,
    globals_of,
    handle_errors,
    out,
    parse_duration,
    parse_json,
    print_json,
    progress,
    run_async,
)
from grctl.client.client import Client
from grctl.client.schedules import ScheduleDescription, build_spec
from grctl.display import fmt_time as format_time
from grctl.engine.schedule_spec import CalendarSpec, ScheduleSpec
from grctl.errors import ScheduleSpecError

schedule_app = typer.Typer(
    help="Create, inspect and steer schedules (runs started at cron, interval or calendar ticks).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of text.")]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="The schedule id.", show_default=False)]
CronOption = Annotated[
    list[str] | None,
    typer.Option("--cron", help='A cron line, 5 fields or 6 with seconds first, e.g. "0 2 * * *" (repeatable).'),
]
EveryOption = Annotated[
    list[str] | None,
    typer.Option("--every", help='An interval, e.g. "5m" or "1h offset 15m" (repeatable).'),
]
CalendarOption = Annotated[
    list[str] | None,
    typer.Option(
        "--calendar",
        help="A calendar spec as JSON (every field must match; fields second minute hour day_of_month month "
        'day_of_week year), e.g. \'{"hour": "9", "minute": "30", "day_of_week": "MON-FRI"}\' (repeatable).',
    ),
]
ExcludeOption = Annotated[
    list[str] | None,
    typer.Option("--exclude", help="A calendar spec as JSON whose times never tick, e.g. holidays (repeatable)."),
]
TzOption = Annotated[str | None, typer.Option("--tz", help="IANA time zone of the cron lines [default: UTC].")]
OverlapOption = Annotated[
    str | None,
    typer.Option(
        "--overlap",
        help="While the last run runs: skip, buffer_one, buffer_all, cancel_other, terminate_other, allow_all.",
    ),
]


def _time(text: str | None, hint: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO time (e.g. 2026-12-07T02:00:00Z)", param_hint=hint) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _calendars(texts: list[str] | None, hint: str) -> tuple[CalendarSpec, ...]:
    """Calendar specs from JSON objects (a usage error names the option and the bad field)."""
    allowed = [f for f in CalendarSpec.__struct_fields__ if f != "comment"]
    found = []
    for text in texts or []:
        value = parse_json(text, hint)
        if not isinstance(value, dict):
            raise typer.BadParameter(f'{text!r} is not a JSON object (e.g. {{"hour": "2"}})', param_hint=hint)
        unknown = sorted(set(value) - {*allowed, "comment"})
        if unknown:
            raise typer.BadParameter(
                f"unknown calendar field(s) {', '.join(unknown)}: use {', '.join(allowed)}", param_hint=hint
            )
        found.append(CalendarSpec(**{k: str(v) for k, v in value.items()}))
    return tuple(found)


def _checked_spec(**parts: Any) -> ScheduleSpec:
    """The spec of the options, checked before connecting: a bad one is a usage error (exit 2)."""

    def check() -> ScheduleSpec:
        try:
            return build_spec(**parts)
        except ScheduleSpecError as exc:
            raise CommandFailed(str(exc), EXIT_USAGE) from None

    return handle_errors(check)


def _description_dict(d: ScheduleDescription) -> dict[str, Any]:
    return {
        "id": d.id,
        "workflow_type": d.workflow_type,
        "spec": d.spec,
        "input": d.input,
        "overlap": d.overlap,
        "catchup_s": d.catchup.total_seconds(),
        "paused": d.paused,
        "note": d.note,
        "created_by": d.created_by,
        "updated_by": d.updated_by,
        "next_ticks": d.next_ticks,
        "recent": [t.__dict__ for t in d.recent],
        "counts": {"fired": d.fired, "skipped": d.skipped, "buffered": d.buffered, "missed": d.missed},
        "running": d.running,
        "waiting": d.waiting,
    }


def _spec_text(d: ScheduleDescription) -> str:
    s = d.spec
    parts = [f"cron {c!r}" for c in s.cron]
    parts += [
        f"every {i.every_ms / 1000:g}s" + (f" offset {i.offset_ms / 1000:g}s" if i.offset_ms else "")
        for i in s.intervals
    ]
    parts += [f"calendar {c}" for c in s.calendars]
    parts += [f"except {c}" for c in s.exclude]
    text = ", ".join(parts)
    if s.time_zone != "UTC":
        text += f" in {s.time_zone}"
    if s.jitter_ms:
        text += f", jitter {s.jitter_ms / 1000:g}s"
    return text


@schedule_app.command("create")
def create_cmd(
    schedule_id: IdArg,
    wf_type: Annotated[str, typer.Option("--type", "-t", help="The workflow type of the runs it starts.")],
    cron: CronOption = None,
    every: EveryOption = None,
    calendar: CalendarOption = None,
    exclude: ExcludeOption = None,
    tz: TzOption = None,
    input_json: Annotated[str | None, typer.Option("--input", "-I", help="The runs' input as JSON.")] = None,
    overlap: OverlapOption = None,
    jitter: Annotated[
        str | None, typer.Option("--jitter", help="Spread each tick's firing over this, e.g. 30s.")
    ] = None,
    catchup: Annotated[
        str | None, typer.Option("--catchup", help="Fire ticks missed within this window late [default: 365d].")
    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="No tick before this ISO time.")] = None,
    end: Annotated[str | None, typer.Option("--end", help="No tick after this ISO time.")] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    note: Annotated[str, typer.Option("--note", help="Why it is paused.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create a schedule: a run of TYPE at each tick, exactly once.

    **Examples**

      grctl schedule create nightly --type Report --cron "0 2 * * *" --tz Europe/Berlin --input '{"full": true}'

      grctl schedule create poll --type Poll --every "5m offset 30s" --overlap buffer_one --jitter 10s

      grctl schedule create standup --type Remind --calendar '{"hour": "9", "minute": "30", "day_of_week": "MON-FRI"}'
      --exclude '{"month": "12", "day_of_month": "24-26"}' --tz Europe/Berlin
    """
    value = parse_json(input_json, "--input") if input_json is not None else None
    calendars, excluded = _calendars(calendar, "--calendar"), _calendars(exclude, "--exclude")
    _checked_spec(
        cron=cron,
        interval=every,
        calendars=calendars,
        exclude=excluded,
        time_zone=tz or "UTC",
        start=_time(start, "--start"),
        end=_time(end, "--end"),
        jitter=jitter,
    )

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            with progress(f"creating schedule {schedule_id}"):
                handle = await client.create_schedule(
                    schedule_id,
                    workflow_type=wf_type,
                    cron=cron,
                    interval=every,
                    calendars=calendars,
                    exclude=excluded,
                    time_zone=tz or "UTC",
                    start=_time(start, "--start"),
                    end=_time(end, "--end"),
                    jitter=jitter,
                    input=value,
                    overlap=overlap or "skip",
                    catchup=catchup,
                    paused=paused,
                    note=note,
                )
                described = await handle.describe()
        if as_json:
            print_json(_description_dict(described))
        else:
            first = described.next_ticks[0] if described.next_ticks else None
            when = format_time(first) if first else "never (paused, or the spec has ended)"
            out.print(f"schedule {escape(schedule_id)} created; next tick {when}")

    run_async(main)


@schedule_app.command("list")
def list_cmd(as_json: JsonOption = False) -> None:
    """List the namespace's schedules with their next tick and counts."""

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            found = await client.list_schedules()
        if as_json:
            print_json([_description_dict(d) for d in found])
            return
        table = Table(box=None)
        for column in ("ID", "TYPE", "SPEC", "NEXT", "STATE", "FIRED", "SKIPPED", "MISSED"):
            table.add_column(column)
        for d in found:
            table.add_row(
                escape(d.id),
                escape(d.workflow_type),
                escape(_spec_text(d)),
                format_time(d.next_ticks[0]) if d.next_ticks else "-",
                "paused" if d.paused else "active",
                str(d.fired),
                str(d.skipped),
                str(d.missed),
            )
        out.print(table if found else "no schedules")

    run_async(main)


@schedule_app.command("describe")
def describe_cmd(schedule_id: IdArg, as_json: JsonOption = False) -> None:
    """Show a schedule: its spec, next 10 ticks, last ticks with their runs and outcomes, counts."""

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            d = await client.get_schedule_handle(schedule_id).describe()
        if as_json:
            print_json(_description_dict(d))
            return
        state = f"paused ({d.note})" if d.paused and d.note else "paused" if d.paused else "active"
        out.print(f"[bold]{escape(d.id)}[/] starts {escape(d.workflow_type)}: {escape(_spec_text(d))}")
        out.print(f"  state {state}, overlap {d.overlap}, catch-up {d.catchup}")
        out.print(f"  fired {d.fired}, skipped {d.skipped}, buffered {d.buffered}, missed {d.missed}")
        if d.created_by or d.updated_by:
            out.print(f"  created by {escape(d.created_by or '?')}, last changed by {escape(d.updated_by or '?')}")
        if d.running:
            out.print(f"  running: {escape(', '.join(d.running))}")
        out.print("next ticks:")
        for t in d.next_ticks:
            out.print(f"  {format_time(t)}")
        if d.recent:
            table = Table(box=None, title="last ticks")
            for column in ("TICK", "ACTION", "HOW", "BY", "RUN", "OUTCOME"):
                table.add_column(column)
            for tick in reversed(d.recent):
                table.add_row(
                    format_time(tick.tick), tick.action, tick.how, escape(tick.by or "-"),
                    escape(tick.run_wf_id or "-"), tick.status or "-",
                )  # fmt: skip
            out.print(table)

    run_async(main)


def _simple(schedule_id: str, verb: str, call: Any, as_json: bool) -> None:
    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            with progress(f"{verb} {schedule_id}"):
                result = await call(client.get_schedule_handle(schedule_id))
        if as_json:
            print_json({"ok": True, "id": schedule_id, "action": verb, "result": result})
        else:
            detail = f": {result}" if result else ""
            out.print(f"schedule {escape(schedule_id)}: {verb} done{escape(detail)}")

    run_async(main)


@schedule_app.command("pause")
def pause_cmd(
    schedule_id: IdArg,
    note: Annotated[str, typer.Option("--note", help="Why (shown by describe).")] = "",
    as_json: JsonOption = False,
) -> None:
    """Pause a schedule: no tick fires until it is resumed (paused ticks are not caught up)."""
    _simple(schedule_id, "pause", lambda h: h.pause(note), as_json)


@schedule_app.command("resume")
def resume_cmd(
    schedule_id: IdArg,
    note: Annotated[str, typer.Option("--note", help="A note (replaces the pause's).")] = "",
    as_json: JsonOption = False,
) -> None:
    """Resume a paused schedule: its next tick is the first after now."""
    _simple(schedule_id, "resume", lambda h: h.resume(note), as_json)


@schedule_app.command("trigger")
def trigger_cmd(schedule_id: IdArg, overlap: OverlapOption = None, as_json: JsonOption = False) -> None:
    """Start a run now, as a tick of its own (the overlap policy applies; works while paused)."""
    _simple(schedule_id, "trigger", lambda h: h.trigger(overlap), as_json)


@schedule_app.command("backfill")
def backfill_cmd(
    schedule_id: IdArg,
    start: Annotated[str, typer.Option("--from", help="The first time of the range (ISO).")],
    end: Annotated[str, typer.Option("--to", help="The last time of the range (ISO, in the past).")],
    overlap: OverlapOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fire the ticks of a past range, each of the spec in force at its time (at most 1000)."""
    first, last = _time(start, "--from"), _time(end, "--to")
    _simple(schedule_id, "backfill", lambda h: h.backfill(first, last, overlap), as_json)


@schedule_app.command("update")
def update_cmd(
    schedule_id: IdArg,
    cron: CronOption = None,
    every: EveryOption = None,
    calendar: CalendarOption = None,
    exclude: ExcludeOption = None,
    tz: TzOption = None,
    jitter: Annotated[str | None, typer.Option("--jitter", help="The new jitter (with a new spec).")] = None,
    wf_type: Annotated[str | None, typer.Option("--type", "-t", help="The new workflow type.")] = None,
    input_json: Annotated[str | None, typer.Option("--input", "-I", help="The new input as JSON.")] = None,
    overlap: OverlapOption = None,
    catchup: Annotated[str | None, typer.Option("--catchup", help="The new catch-up window.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change a schedule; what is not given stays. A new spec (--cron/--every/--calendar) takes force now."""
    spec = None
    if cron or every or calendar:
        spec = _checked_spec(
            cron=cron, interval=every, calendars=_calendars(calendar, "--calendar"),
            exclude=_calendars(exclude, "--exclude"), time_zone=tz or "UTC", jitter=jitter,
        )  # fmt: skip
    kwargs: dict[str, Any] = {"spec": spec, "workflow_type": wf_type, "overlap": overlap}
    if catchup is not None:
        kwargs["catchup"] = parse_duration(catchup, "--catchup")
    if input_json is not None:
        kwargs["input"] = parse_json(input_json, "--input")
    _simple(schedule_id, "update", lambda h: h.update(**kwargs), as_json)


@schedule_app.command("delete")
def delete_cmd(schedule_id: IdArg, as_json: JsonOption = False) -> None:
    """Delete a schedule (the runs it started go on)."""
    _simple(schedule_id, "delete", lambda h: h.delete(), as_json)
