"""The interactive view, driven with Textual's pilot on a namespace with a few hundred runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from grctl import Client, Connection
from grctl.cli.reader import RunFilter
from grctl.cli.tui import HistoryApp, HistoryScreen, RunsApp
from tests.cli.flows import WORKFLOWS

pytestmark = pytest.mark.kafka

ECHO_RUNS = 280
FAILED_RUNS = 15
WAITING_RUNS = 5


async def until(check: Callable[[], bool], pilot: Any, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


async def start_runs(client: Client) -> None:
    sem = asyncio.Semaphore(100)

    async def one(wf_type: str, wf_id: str, value: Any) -> None:
        async with sem:
            handle = await client.start_workflow(wf_type, wf_id, value)
            handle.discard()

    jobs = [one("CliEcho", f"echo-{i:03d}", {"value": i}) for i in range(ECHO_RUNS)]
    jobs += [one("CliFail", f"fail-{i:03d}", {"reason": f"bad {i}"}) for i in range(FAILED_RUNS)]
    jobs += [one("CliWait", f"wait-{i:03d}", None) for i in range(WAITING_RUNS)]
    await asyncio.gather(*jobs)


async def test_runs_view_shows_filters_opens_history_and_updates_live(
    connection: Connection, client: Client, workers: Any
) -> None:
    await workers.start(WORKFLOWS)
    await start_runs(client)
    total = ECHO_RUNS + FAILED_RUNS + WAITING_RUNS
    # let the last runs finish so their statuses are final
    handle = await client.get_workflow_handle(f"echo-{ECHO_RUNS - 1:03d}")
    await handle.result(timeout=30)

    app = RunsApp(connection, RunFilter(), page_size=200)
    async with app.run_test(size=(180, 50)) as pilot:
        await until(lambda: app.loaded, pilot)
        table = app.query_one("#runs")
        assert len(app.rows) >= 200 and app.more
        assert table.row_count == len(app.visible_rows())

        # older runs on demand, until all are loaded
        while app.more:
            before = len(app.rows)
            await pilot.press("m")
            await until(lambda n=before: len(app.rows) > n or not app.more, pilot)
        await until(lambda: len(app.rows) == total, pilot)
        assert table.row_count == total

        # the filter box: status and text
        await pilot.press("slash")
        await pilot.press(*"status:failed")
        await pilot.press("enter")
        await until(lambda: table.row_count == FAILED_RUNS, pilot)
        assert {r.record.status for r in app.visible_rows()} == {"failed"}
        await pilot.press("slash", *" fail-007", "enter")
        await until(lambda: table.row_count == 1, pilot)

        # Enter opens the run's history
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, HistoryScreen) and app.screen.ended, pilot)
        screen = app.screen
        assert isinstance(screen, HistoryScreen) and screen.wf_id == "fail-007"
        kinds = [str(e.kind) for e in screen.events]
        assert kinds[0] == "run.started" and kinds[-1] == "run.failed"
        assert screen.query_one("#events").row_count == len(kinds)
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, HistoryScreen), pilot)

        # live: a run that changes shows up without reloading
        await pilot.press("slash")
        app.query_one("#filter").value = ""
        await pilot.press("enter")
        await until(lambda: table.row_count == total, pilot)
        await client.send_event("wait-002", "go", {"value": "live"})
        await client.start_workflow("CliEcho", "echo-live", {"value": "new"})
        await until(lambda: "echo-live" in app.rows, pilot)
        await until(lambda: app.rows["wait-002"].record.status == "completed", pilot)
        await until(lambda: table.row_count == total + 1, pilot)
        assert app.visible_rows()[0].wf_id in ("echo-live", "wait-002")
        await pilot.press("q")


async def test_history_view_follows_a_running_run(connection: Connection, client: Client, workers: Any) -> None:
    await workers.start(WORKFLOWS)
    handle = await client.start_workflow("CliWait", "wait-live", None)
    app = HistoryApp(connection, "wait-live", handle.run_info.id)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(lambda: isinstance(app.screen, HistoryScreen) and len(app.screen.events) >= 2, pilot)
        screen = app.screen
        assert isinstance(screen, HistoryScreen) and not screen.ended
        await handle.send("go", {"value": 1})
        await until(lambda: screen.ended, pilot)
        assert str(screen.events[-1].kind) == "run.completed"
        await pilot.press("q")
