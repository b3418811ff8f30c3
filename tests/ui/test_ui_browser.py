"""The web UI (`grctl ui`) in a real headless Chromium (Debian's), driven by Playwright.

Real runs on the broker (completed, failed, waiting for an event, a parent with a child) and a
record that the worker sends to dead-letter; the UI app is served by uvicorn on a free port.
The test walks the pages as an operator would, acts on a run (an event, with confirmation),
meets each kind of bad input, and saves a screenshot of every main page under
`build/test-output/ui/` (or `GRCTL_TEST_OUTPUT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from confluent_kafka import Producer
from playwright.async_api import Browser, Page, async_playwright, expect

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.kafka.partitioner import partition_for
from grctl.taskworker import TaskContext, TaskWorker
from grctl.ui.app import create_app
from grctl.ui.data import PAGE_SIZE, RunActions, TopicsReader
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

CHROMIUM = "/usr/bin/chromium"
#: The flags this machine's Chromium needs (docs of the machine: no network but the registries).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
OUTPUT = Path(os.environ.get("GRCTL_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "build" / "test-output")) / "ui"

orders = Workflow(workflow_type="UiOrder")
approval = Workflow(workflow_type="UiApproval")
parent = Workflow(workflow_type="UiParent")


@orders.start()
async def order_start(ctx: Context, n: int) -> Directive:
    if n == 3:
        raise ValueError(f"order {n} has no items")
    ctx.store.put("total", n * 9.5)
    return ctx.next.step(ship)


@orders.step()
async def ship(ctx: Context) -> Directive:
    return ctx.next.complete({"shipped": True, "total": await ctx.store.get("total", float)})


@approval.start()
async def approval_start(ctx: Context, document: str) -> Directive:
    ctx.store.put("document", document)
    return ctx.next.wait()


@approval.event()
async def approve(ctx: Context, approver: str) -> Directive:
    return ctx.next.complete({"approved_by": approver, "document": await ctx.store.get("document", str)})


@parent.start()
async def parent_start(ctx: Context) -> Directive:
    total = await ctx.run_child("UiOrder", f"{ctx.run.wf_id}-line-1", {"n": 1})
    return ctx.next.complete({"child": total})


@pytest.fixture
async def ui(connection: Connection, client: Client) -> AsyncIterator[str]:
    app = create_app(TopicsReader(connection), RunActions(client))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    await wait_until_async("the UI server listens", lambda: _started(server), 15)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: the UI test needs Debian's chromium; scripts/setup installs it "
        f"(apt-get install -y chromium)"
    )
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def shot(page: Page, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


async def test_ui_pages_actions_and_bad_input_in_chromium(
    workers, client: Client, connection: Connection, ui: str, browser: Browser
) -> None:
    worker = await workers.start([orders, approval, parent])
    # Runs to look at: 28 orders (one fails), a waiting approval, a parent with its child.
    handles = [await client.start_workflow("UiOrder", f"order-{n:02d}", {"n": n}) for n in range(28)]
    for h in handles:
        with contextlib.suppress(Exception):
            await h.result(timeout=30)
    waiting = await client.start_workflow("UiApproval", "approval-1", {"document": "Q3 budget"})
    family = await client.start_workflow("UiParent", "parent-1", {})
    assert await family.result(timeout=30) == {"child": {"shipped": True, "total": 9.5}}
    # A record no worker can decode goes to dead-letter with its reason.
    p = partition_for("garbage-1", connection.num_partitions)
    producer = Producer(connection.client_config())
    producer.produce(connection.topics.directives, b"\x00not msgpack", b"garbage-1", partition=p)
    producer.flush(10)

    page = await browser.new_page(viewport={"width": 1280, "height": 900})

    # Namespace: partitions with their owner, lag, and the dead letter with its reason.
    async def dead_letter_shown() -> bool:
        await page.goto(f"{ui}/namespace")
        return "undecodable directive record" in await page.locator("#dead-letters").inner_text()

    await wait_until_async("the namespace page lists the dead letter", dead_letter_shown, 20)
    await expect(page.locator("#partitions tr")).to_have_count(1 + connection.num_partitions)
    rows = (await page.locator("#partitions").inner_text()).splitlines()[1:]
    # Every partition is owned by the worker (its static group instance id starts with its name).
    assert all(row.split("\t")[1].startswith(worker.worker_name) for row in rows), rows
    await expect(page.locator("#members")).to_contain_text(worker.worker_name)
    await shot(page, "namespace")

    # Runs: the first page, the next page, a filter.
    await page.goto(f"{ui}/runs")
    await expect(page.locator("#runs tr")).to_have_count(1 + PAGE_SIZE)
    await shot(page, "runs")
    first_page = await page.locator("#runs").inner_text()
    await page.click("#next-page")
    await expect(page.locator("#runs")).not_to_contain_text("No run matches")
    rest = await page.locator("#runs").inner_text()
    assert not set(first_page.splitlines()[1:]) & set(rest.splitlines()[1:]), "pages overlap"
    await page.goto(f"{ui}/runs")
    await page.select_option("select[name=status]", "failed")
    await page.click("button[type=submit]")
    await expect(page.locator("#runs tbody tr, #runs tr")).to_have_count(2)
    await expect(page.locator("#runs")).to_contain_text("order-03")

    # A run: status, input, store, history timeline; then an event, confirmed.
    await page.goto(f"{ui}/run?id=approval-1")
    await expect(page.locator("#run-status")).to_have_text("running")
    await expect(page.locator("#input")).to_contain_text("Q3 budget")
    await expect(page.locator("#store")).to_contain_text("document")
    await expect(page.locator("#history")).to_contain_text("run.started")
    await page.fill("#event-form input[name=event]", "approve")
    await page.fill("#event-form input[name=payload]", '{"approver": "alice"}')
    await page.click("#event-form button")
    await expect(page.locator("#confirm")).to_contain_text("Send event approve")
    await shot(page, "confirm")
    await page.click("#confirm-yes")
    await expect(page.locator("#notice")).to_contain_text("delivered")
    assert await waiting.result(timeout=30) == {"approved_by": "alice", "document": "Q3 budget"}

    async def shows_completed() -> bool:
        await page.goto(f"{ui}/run?id=approval-1")
        return (await page.locator("#run-status").inner_text()) == "completed"

    await wait_until_async("the run page shows the approval completed", shows_completed, 20)
    await expect(page.locator("#result")).to_contain_text("alice")
    await expect(page.locator("#timeline .bar").first).to_be_visible()
    await shot(page, "run")

    # A parent lists its child, which links to the child's page.
    await page.goto(f"{ui}/run?id=parent-1")
    await expect(page.locator("#children")).to_contain_text("parent-1-line-1")
    await page.click("#children a")
    await expect(page.locator("#run-status")).to_have_text("completed")
    await expect(page.locator("#store")).to_contain_text("total")

    # Bad input: an action on an ended run, an unknown run, a bad filter, a bad payload.
    await page.goto(f"{ui}/run?id=approval-1")
    await page.click("#cancel-form button[value=cancel]")
    await page.click("#confirm-yes")
    await expect(page.locator("#problem")).to_contain_text("Cancel refused")
    await shot(page, "action-refused")
    response = await page.goto(f"{ui}/run?id=no-such-run")
    assert response is not None and response.status == 404
    await expect(page.locator("#problem")).to_contain_text("No run with workflow id 'no-such-run'")
    response = await page.goto(f"{ui}/runs?status=bogus")
    assert response is not None and response.status == 400
    await expect(page.locator("#problem")).to_contain_text("unknown status 'bogus'")
    response = await page.goto(f"{ui}/runs?cursor=%%%")
    assert response is not None and response.status == 400
    await page.goto(f"{ui}/run?id=order-05")
    await page.fill("#event-form input[name=event]", "approve")
    await page.fill("#event-form input[name=payload]", "{not json")
    await page.click("#event-form button")
    await expect(page.locator("#problem")).to_contain_text("the payload is not JSON")
    response = await page.goto(f"{ui}/nowhere")
    assert response is not None and response.status == 404
    body = await page.content()
    assert "Traceback" not in body
    for name in ("namespace", "runs", "run", "confirm", "action-refused"):
        assert (OUTPUT / f"{name}.png").stat().st_size > 10_000


async def test_ui_schedules_page_in_chromium(workers, client: Client, ui: str, browser: Browser) -> None:
    """The Schedules page (issue 27): specs, next tick, state, counts and the last ticks' runs."""
    await workers.start([orders, approval])
    await client.create_schedule(
        "orders-every-2s", workflow_type="UiOrder", cron="*/2 * * * * *", time_zone="Europe/Berlin", input={"n": 1}
    )
    await client.create_schedule(
        "approvals-nightly", workflow_type="UiApproval", cron="0 2 * * *", time_zone="Europe/Berlin",
        input={"document": "report"}, paused=True, note="until the auditors are back", jitter="30s",
    )  # fmt: skip

    async def two_completed() -> bool:
        d = await client.get_schedule_handle("orders-every-2s").describe()
        return sum(1 for t in d.recent if t.status == "completed") >= 2

    await wait_until_async("two scheduled runs completed", two_completed, 30)
    page = await browser.new_page()
    await page.goto(f"{ui}/schedules")
    table = page.locator("#schedules")
    await expect(table).to_contain_text("orders-every-2s")
    await expect(table).to_contain_text("cron */2 * * * * *")
    await expect(table).to_contain_text("until the auditors are back")
    await expect(table).to_contain_text("completed")
    await shot(page, "schedules")
    await page.locator("#schedules a", has_text="run").first.click()
    await expect(page.locator("h1")).to_contain_text("orders-every-2s:")

    # The operator's actions: resume, pause with a note, trigger now (while paused), each shown
    # as a notice and checked on the schedule itself; without the page's token nothing is done.
    await page.goto(f"{ui}/schedules")
    await page.click("#pause-approvals-nightly button")
    await expect(page.locator("#notice")).to_have_text("approvals-nightly resumed")
    assert not (await client.get_schedule_handle("approvals-nightly").describe()).paused
    await page.fill("#pause-orders-every-2s input[name=note]", "maintenance window")
    await page.click("#pause-orders-every-2s button")
    await expect(page.locator("#notice")).to_have_text("orders-every-2s paused: maintenance window")
    paused = await client.get_schedule_handle("orders-every-2s").describe()
    assert (paused.paused, paused.note, paused.updated_by) == (True, "maintenance window", client.identity)
    await expect(page.locator("#paused-by-orders-every-2s")).to_have_text(f"by {client.identity}")
    await page.click("#trigger-orders-every-2s button")
    await expect(page.locator("#notice")).to_contain_text("orders-every-2s triggered: started, run orders-every-2s:")
    triggered = (await page.locator("#notice").inner_text()).rsplit("run ", 1)[1]
    assert await (await client.get_workflow_handle(triggered)).result() is not None
    await shot(page, "schedules-actions")
    r = await page.request.post(f"{ui}/schedule/action", form={"id": "orders-every-2s", "action": "resume"})
    assert r.status == 403, "a POST without the page's CSRF token"
    assert (await client.get_schedule_handle("orders-every-2s").describe()).paused
    csrf = await page.locator("#trigger-orders-every-2s input[name=csrf]").get_attribute("value")
    assert csrf
    headers = {"origin": ui}
    r = await page.request.post(
        f"{ui}/schedule/action", form={"csrf": csrf, "id": "no-such-schedule", "action": "pause"}, headers=headers
    )
    assert r.status == 404 and "no-such-schedule" in await r.text()
    r = await page.request.post(
        f"{ui}/schedule/action", form={"csrf": csrf, "id": "orders-every-2s", "action": "delete"}, headers=headers
    )
    assert r.status == 400 and "use pause, resume, trigger" in await r.text()
    assert "Traceback" not in await page.content()
    await page.close()


scorer = Workflow(workflow_type="UiScore")


@scorer.start()
async def score_start(ctx: Context) -> Directive:
    result = await ctx.remote_task("score", {"amount": 5}, queue="ui-scoring")
    return ctx.next.complete(result)


async def test_ui_run_page_shows_the_remote_task_a_run_waits_for(
    workers, connection: Connection, client: Client, ui: str, browser: Browser
) -> None:
    """Issue 28: a run suspended on a remote task shows which one, who took it and its heartbeat."""
    release = asyncio.Event()

    async def score(payload: dict[str, int], task: TaskContext) -> dict[str, int]:
        task.heartbeat({"progress": "half"})
        await release.wait()  # held until the page was read
        return {"score": payload["amount"] * 2}

    await workers.start([scorer])
    async with TaskWorker([score], connection, queue="ui-scoring", concurrency=1):
        handle = await client.start_workflow("UiScore", "ui-score-1", None)

        async def heartbeat_seen() -> bool:
            task = (await client.describe("ui-score-1")).remote_task
            return task is not None and task.get("last_heartbeat_ms") is not None

        await wait_until_async("the run's remote task was taken and heartbeated", heartbeat_seen, 60)
        page = await browser.new_page()
        await page.goto(f"{ui}/run?id=ui-score-1")
        task = page.locator("#remote-task")
        await expect(task).to_contain_text("score")
        await expect(task).to_contain_text("on queue ui-scoring, attempt 1, taken by")
        await expect(task).to_contain_text('"progress": "half"')
        await page.close()
        release.set()
        assert await handle.result(timeout=60) == {"score": 10}
