"""The interactive view of ``grctl workflow list`` and ``history`` (Textual).

`RunsApp` shows the runs of a namespace, newest first, and keeps them live: a background
thread asks the workers for the first page (their run indexes, see `grctl.cli.reader.RunLister`)
and asks again every `FOLLOW_S`, merging what changed. The filter box narrows the loaded runs
(``status:running type:Order text``); ``m`` loads an older page; Enter opens the run's history,
which follows the run until it ends.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.worker import get_current_worker

from grctl.cli.common import STATUS_STYLES, fmt_duration_ms, fmt_ms
from grctl.cli.render import KIND_STYLES, event_details, event_step
from grctl.client.reader import RunFilter, RunLister, RunRow, iter_history
from grctl.kafka.connection import Connection
from grctl.models.history import HistoryEvent

REFRESH_S = 0.3
#: The list view asks the workers for the newest page again this often (live updates).
FOLLOW_S = 2.0


def parse_filter(text: str) -> RunFilter:
    """``status:running,failed type:Order some-text`` → a `RunFilter` (unknown keys are text)."""
    flt = RunFilter()
    words = []
    for token in text.split():
        key, sep, value = token.partition(":")
        values = {v for v in value.split(",") if v}
        if sep and key in ("status", "s") and values:
            flt.statuses = values
        elif sep and key in ("type", "t") and values:
            flt.types = values
        else:
            words.append(token)
    flt.text = " ".join(words) or None
    return flt


def _status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


class HistoryScreen(Screen[None]):
    """The history of one run, followed live until it ends."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back"),
    ]

    def __init__(
        self, conn: Connection, wf_id: str, run_id: str, *, follow: bool = True, standalone: bool = False
    ) -> None:
        super().__init__()
        self.standalone = standalone
        self.conn = conn
        self.wf_id = wf_id
        self.run_id = run_id
        self.follow = follow
        self.events: list[HistoryEvent] = []
        self.ended = False
        self._first_ms: int | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"history of [b]{self.wf_id}[/b]  run {self.run_id}", id="title")
        table: DataTable[Any] = DataTable(id="events", cursor_type="row", zebra_stripes=True)
        table.add_columns("+ms", "time", "kind", "step", "details")
        yield table
        yield Static("reading…", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self._read()

    @work(thread=True, exclusive=True, group="history")
    def _read(self) -> None:
        worker = get_current_worker()
        try:
            for event in iter_history(
                self.conn, self.wf_id, self.run_id, follow=self.follow, should_stop=lambda: worker.is_cancelled
            ):
                self.app.call_from_thread(self._add, event)
            self.app.call_from_thread(self._done, None)
        except Exception as exc:  # noqa: BLE001  # shown in the status line
            self.app.call_from_thread(self._done, f"error: {exc}")

    def _add(self, event: HistoryEvent) -> None:
        self.events.append(event)
        ts = int(event.timestamp.timestamp() * 1000) if event.timestamp else 0
        if self._first_ms is None and ts:
            self._first_ms = ts
        rel = str(ts - self._first_ms) if self._first_ms is not None and ts else ""
        kind = str(event.kind)
        self.query_one(DataTable).add_row(
            rel,
            fmt_ms(ts)[11:],
            Text(kind, style=KIND_STYLES.get(kind, "")),
            event_step(event),
            event_details(event, limit=None),
        )
        self.query_one("#status", Static).update(f"{len(self.events)} events" + ("" if self.ended else ", following…"))

    def _done(self, error: str | None) -> None:
        self.ended = True
        text = error or f"{len(self.events)} events" + (" (the run ended)" if self.follow else "")
        self.query_one("#status", Static).update(text)

    def action_close(self) -> None:
        self.workers.cancel_group(self, "history")
        if self.standalone:
            self.app.exit()
        else:
            self.app.pop_screen()


class RunsApp(App[None]):
    """Runs of a namespace: filter, live updates, Enter for a run's history."""

    TITLE = "grctl"
    CSS = """
    #runs, #events { height: 1fr; }
    #status { height: 1; color: $text-muted; }
    #title { height: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("m", "load_more", "Older runs"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def __init__(self, conn: Connection, base: RunFilter | None = None, *, page_size: int = 200) -> None:
        super().__init__()
        self.conn = conn
        self.base = base or RunFilter()
        self.page_size = page_size
        self.rows: dict[str, RunRow] = {}
        self.view = RunFilter()
        self.loaded = False
        self.more = True
        self.live_updates = 0
        self._dirty = False
        self._lister: RunLister | None = None
        self._older: str | None = None  # the page token of the next older page
        self.sub_title = f"namespace {conn.namespace}"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: text  status:running,failed  type:Order   (Enter: apply)", id="filter")
        table: DataTable[Any] = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        table.add_column("workflow id", key="wf_id")
        table.add_column("type", key="type")
        table.add_column("status", key="status")
        table.add_column("step", key="step")
        table.add_column("created", key="created")
        table.add_column("updated", key="updated")
        table.add_column("duration", key="duration")
        table.add_column("run id", key="run_id")
        yield table
        yield Static("loading runs…", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self._load(first=True)
        self.set_interval(REFRESH_S, self._refresh_if_dirty)

    # ------------------------------------------------------------------ data

    def _lister_of(self) -> RunLister:
        if self._lister is None:
            self._lister = RunLister(self.conn)
        return self._lister

    @work(thread=True, exclusive=True, group="load")
    def _load(self, first: bool = False) -> None:
        try:
            t0 = time.monotonic()
            flt = dataclasses.replace(self.base, page_token=None if first else self._older)
            page = self._lister_of().page(flt, self.page_size)
            self._older = page.next_cursor
            self.call_from_thread(self._loaded, page.rows, page.next_cursor is not None, time.monotonic() - t0)
            if first:
                self.call_from_thread(self._follow)
        except Exception as exc:  # noqa: BLE001  # shown in the status line
            self.call_from_thread(self._status, f"error: {exc}")

    @work(thread=True, exclusive=True, group="follow")
    def _follow(self) -> None:
        """Live updates: the newest page again every FOLLOW_S (the workers answer from their indexes)."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            time.sleep(FOLLOW_S)  # the refresh period of the view, not a wait for a state
            try:
                page = self._lister_of().page(self.base, self.page_size)
            except Exception as exc:  # noqa: BLE001  # shown in the status line; the next refresh retries
                self.call_from_thread(self._status, f"live updates paused: {exc}")
                continue
            self.call_from_thread(self._merge_live, page.rows)

    def _loaded(self, rows: list[RunRow], more: bool, elapsed: float) -> None:
        for r in rows:
            self.rows.setdefault(r.wf_id, r)  # a live update may already be newer
        self.more = more
        self.loaded = True
        self._render_table()
        self._status(f"loaded {len(rows)} runs in {elapsed * 1000:.0f} ms")

    def _merge_live(self, rows: list[RunRow]) -> None:
        for r in rows:
            if not self.base.matches(r):
                continue
            old = self.rows.get(r.wf_id)
            if old is None or r.updated_ms >= old.updated_ms:
                self.rows[r.wf_id] = r
                self.live_updates += 1
        self._dirty = True

    def _refresh_if_dirty(self) -> None:
        if self._dirty:
            self._dirty = False
            self._render_table()

    def visible_rows(self) -> list[RunRow]:
        """The loaded runs that pass the filter box, most recently changed first."""
        rows = [r for r in self.rows.values() if self.view.matches(r)]
        rows.sort(key=lambda r: r.sort_key, reverse=True)
        return rows

    def _render_table(self) -> None:
        table: DataTable[Any] = self.query_one("#runs", DataTable)
        selected = None
        if table.row_count and table.cursor_row >= 0:
            try:
                selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            except Exception:  # noqa: BLE001  # no row under the cursor
                selected = None
        rows = self.visible_rows()
        table.clear()
        for r in rows:
            rec = r.record
            duration = rec.ended_ms - rec.started_ms if rec.ended_ms and rec.started_ms else None
            table.add_row(
                rec.wf_id,
                rec.wf_type,
                _status_text(rec.status),
                (rec.step or "-") if rec.state != "wait" else "(waiting)",
                fmt_ms(rec.created_ms),
                fmt_ms(r.updated_ms)[11:],
                fmt_duration_ms(duration),
                rec.run_id,
                key=rec.wf_id,
            )
        if selected is not None and selected in self.rows:
            try:
                table.move_cursor(row=table.get_row_index(selected))
            except Exception:  # noqa: BLE001  # filtered out
                pass
        more = "  m: older runs" if self.more else ""
        self._status(
            f"{len(rows)} of {len(self.rows)} loaded runs  |  live updates: {self.live_updates}{more}  |  "
            f"Enter: history  /: filter  q: quit"
        )

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    # ------------------------------------------------------------------ actions

    @on(Input.Submitted, "#filter")
    def _apply_filter(self, event: Input.Submitted) -> None:
        self.view = parse_filter(event.value)
        self._render_table()
        self.query_one("#runs", DataTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.view = parse_filter(event.value)
        self._render_table()

    @on(DataTable.RowSelected, "#runs")
    def _open(self, event: DataTable.RowSelected) -> None:
        wf_id = event.row_key.value
        row = self.rows.get(wf_id) if wf_id is not None else None
        if row is not None:
            self.push_screen(HistoryScreen(self.conn, row.wf_id, row.record.run_id))

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one("#runs", DataTable).focus()

    def action_load_more(self) -> None:
        if self.more:
            self._status("loading older runs…")
            self._load()

    def on_unmount(self) -> None:
        if self._lister is not None:
            self._lister.close()


class HistoryApp(App[None]):
    """``grctl workflow history ID --tui``: the history screen on its own."""

    TITLE = "grctl"

    def __init__(self, conn: Connection, wf_id: str, run_id: str) -> None:
        super().__init__()
        self.conn = conn
        self.wf_id = wf_id
        self.run_id = run_id

    def on_mount(self) -> None:
        self.push_screen(HistoryScreen(self.conn, self.wf_id, self.run_id, standalone=True))


def run_list_app(conn: Connection, flt: RunFilter, page_size: int = 200) -> None:
    """Run the interactive list until the user quits."""
    RunsApp(conn, flt, page_size=page_size).run()


def run_history_app(conn: Connection, wf_id: str, run_id: str) -> None:
    """Run the interactive history of one run until the user quits."""
    HistoryApp(conn, wf_id, run_id).run()
