"""How runs and history events look in the terminal (shared by the commands and the TUI)."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from grctl.cli.common import fmt_duration_ms, fmt_ms, fmt_time, json_text, styled_status, to_jsonable
from grctl.client.reader import RunRow
from grctl.models.history import HistoryEvent
from grctl.models.run_info import RunInfo

KIND_STYLES = {
    "run.started": "bold cyan",
    "run.completed": "bold green",
    "run.failed": "bold red",
    "run.cancelled": "bold magenta",
    "run.terminated": "bold magenta",
    "run.timeout": "bold red",
    "run.rejected": "bold red",
    "step.failed": "red",
    "task.failed": "red",
    "task.attempt_failed": "yellow",
    "event.received": "blue",
    "wait.started": "yellow",
}


def event_step(event: HistoryEvent) -> str:
    """The step an event is about ("" if none)."""
    msg = to_jsonable(event.msg) if event.msg is not None else None
    if isinstance(msg, dict):
        return str(msg.get("step_name") or "")
    return ""


def event_details(event: HistoryEvent, limit: int | None = 120) -> str:
    """The interesting fields of an event's payload, compact (``key=value ...``)."""
    msg = to_jsonable(event.msg) if event.msg is not None else None
    if not isinstance(msg, dict):
        return "" if msg is None else json_text(msg, limit)
    # Who acted comes first, so a long payload cannot push it past the limit.
    parts = [f"by={msg['identity']}"] if msg.get("identity") else []
    for k, v in msg.items():
        if k in ("step_name", "identity") or (v in (None, "", 0, [], {}) and k not in ("result", "output")):
            continue
        if k == "error" and isinstance(v, dict):
            v = f"{v.get('type', 'Error')}: {v.get('message', '')}"
            parts.append(f"error={v}")
            continue
        if k.endswith("_ms") and isinstance(v, int) and k != "timeout_ms":
            parts.append(f"{k[:-3]}={fmt_duration_ms(v)}")
            continue
        parts.append(f"{k}={v if isinstance(v, str) else json_text(v)}")
    text = " ".join(parts)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def event_line(event: HistoryEvent, first_ms: int | None) -> Text:
    """One history event as a line: offset, +ms since the first event, time, kind, step, details."""
    ts = int(event.timestamp.timestamp() * 1000) if event.timestamp else 0
    rel = f"+{ts - first_ms}ms" if first_ms is not None and ts else ""
    kind = str(event.kind)
    line = Text()
    line.append(f"{rel:>10}  ", style="dim")
    line.append(f"{fmt_ms(ts)[11:]}  ", style="dim")
    line.append(f"{kind:<20}", style=KIND_STYLES.get(kind, ""))
    step = event_step(event)
    line.append(f" {step:<14}" if step else f" {'':<14}")
    details = event_details(event)
    if details:
        line.append(f" {details}")
    return line


def event_dict(event: HistoryEvent) -> dict[str, Any]:
    """An event as one JSONL line of ``history --json``."""
    return {
        "wf_id": event.wf_id,
        "run_id": event.run_id,
        "kind": str(event.kind),
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
        "msg": to_jsonable(event.msg),
        "worker_id": event.worker_id,
        "operation_id": event.operation_id,
        "partition": event.partition,
        "offset": event.offset,
    }


def info_dict(info: RunInfo) -> dict[str, Any]:
    """Every field of a `RunInfo` (defaults included, so scripts see stable keys)."""
    return {f: to_jsonable(getattr(info, f)) for f in info.__struct_fields__}


def remote_task_text(rt: dict[str, Any]) -> str:
    """What a run's step waits for: a remote task, its queue, attempt, deadline and last heartbeat."""
    text = f"{rt.get('task')} on queue {rt.get('queue')}, attempt {rt.get('attempt')}"
    if rt.get("deadline_ms"):
        text += f"; {rt.get('deadline')} deadline {fmt_ms(rt['deadline_ms'])}"
    if rt.get("last_heartbeat_ms"):
        text += f"; last heartbeat {fmt_ms(rt['last_heartbeat_ms'])}"
        if rt.get("details") is not None:
            text += f" {json_text(rt['details'])}"
    if rt.get("worker"):
        text += f"; worker {rt['worker']}"
    return text


def permits_text(permits: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows of a run's permits: the one it waits for (and its place in line), those it holds."""
    rows: list[tuple[str, str]] = []
    w = permits.get("waiting_for")
    if w:
        text = f"permit of {w.get('limiter')}"
        position = w.get("position")
        if position is not None:
            text += f", {_ordinal(int(position) + 1)} in line"
        if w.get("since_ms"):
            text += f", since {fmt_ms(w['since_ms'])}"
        extras = [f"{k} {w[k]}" for k in ("key", "fairness") if w.get(k)]
        if extras:
            text += f" ({', '.join(extras)})"
        rows.append(("waiting for", text))
    for p in permits.get("holding") or []:
        rows.append(
            ("holding", f"permit {p.get('acquire_id')} of {p.get('limiter')} since {fmt_ms(p.get('since_ms'))}")
        )
    return rows


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def info_table(info: RunInfo) -> Table:
    """A two-column table of a run's details."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    duration = None
    if info.started_at is not None:
        end = info.ended_at
        if end is not None:
            duration = (end - info.started_at).total_seconds() * 1000
    rows: list[tuple[str, str]] = [
        ("workflow id", info.wf_id),
        ("run id", info.id),
        ("type", f"{info.wf_type} v{info.version}"),
        ("status", styled_status(str(info.status))),
        ("state", str(info.state or "-")),
        ("current step", f"{info.current_step} (#{info.step_seq})" if info.current_step else "-"),
        ("created", fmt_time(info.created_at)),
        ("started", fmt_time(info.started_at)),
        ("ended", fmt_time(info.ended_at)),
        ("duration", fmt_duration_ms(duration)),
    ]
    if info.awaiting:
        rows.append(("awaiting code", f"{info.awaiting} (parked: it resumes when a worker serving it owns it)"))
    if info.timeout is not None:
        rows.append(("timeout", f"{info.timeout:g} s"))
    if info.waiting_for_event:
        due = f" (until {fmt_time(info.wait_deadline)})" if info.wait_deadline else ""
        rows.append(("waiting", f"for an event{due}"))
    rows.append(("pending events", str(info.pending_events)))
    if info.remote_task:
        rows.append(("remote task", remote_task_text(info.remote_task)))
    if info.permits:
        rows.extend(permits_text(info.permits))
    if info.priority != 3:
        rows.append(("priority", str(info.priority)))
    if info.started_by:
        rows.append(("started by", info.started_by))
    if info.cancel_by:
        rows.append(("cancelled by", info.cancel_by))
    if info.parent_wf_id:
        rows.append(("parent", f"{info.parent_wf_type} {info.parent_wf_id} (run {info.parent_run_id})"))
    if info.result is not None:
        rows.append(("result", json_text(info.result)))
    if info.error is not None:
        e = info.error
        rows.append(("error", f"{e.get('type')}: {e.get('message')}" if isinstance(e, dict) else str(e)))
    for k, v in rows:
        t.add_row(k, v)
    return t


def runs_table(rows: list[RunRow], title: str | None = None) -> Table:
    """The runs of ``list`` as a table."""
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("WORKFLOW ID", overflow="fold")
    t.add_column("TYPE")
    t.add_column("V", justify="right")
    t.add_column("STATUS")
    t.add_column("STEP")
    t.add_column("CREATED")
    t.add_column("DURATION", justify="right")
    t.add_column("RUN ID", style="dim")
    for row in rows:
        r = row.record
        end = r.ended_ms or None
        duration = (end - r.started_ms) if end and r.started_ms else None
        t.add_row(
            r.wf_id,
            r.wf_type,
            str(r.version),
            styled_status(r.status),
            (r.step or "-") if r.state != "wait" else "(waiting)",
            fmt_ms(r.created_ms),
            fmt_duration_ms(duration),
            r.run_id,
        )
    return t
