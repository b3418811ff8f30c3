"""The Limiters pages of the web UI (issue 29), in a real headless Chromium, against a real worker.

Runs of `UiLimited` hold a permit of a limiter inside `async with ctx.limit(...)` until the test
opens their in-process gate, so "2 inside, 3 waiting" is a state the test reaches and observes
(`Client.describe_limiter`), never a moment it sleeps until. The operator's change form is
checked for its effect (`Client.describe_limiter` afterwards), its refusals (no CSRF token,
read-only, bad numbers: each a clear page and the limits unchanged) and who it records.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.ui.app import create_app
from grctl.ui.auth import UiAuth
from grctl.ui.data import RunActions, TopicsReader
from tests.support.wait import wait_until_async
from tests.ui.test_ui_browser import CHROMIUM, CHROMIUM_ARGS, OUTPUT, shot

pytestmark = pytest.mark.kafka

limited = Workflow(workflow_type="UiLimited")
#: One gate per run: its limited section ends when the test sets it.
gates: dict[str, asyncio.Event] = {}


def gate(wf_id: str) -> asyncio.Event:
    return gates.setdefault(wf_id, asyncio.Event())


@pytest.fixture(autouse=True)
def _reset() -> None:
    gates.clear()


@limited.start()
async def limited_start(ctx: Context, req: dict[str, Any]) -> Directive:
    async with ctx.limit(
        req["limiter"], key=req.get("key"), fairness=req.get("fairness"), priority=req.get("priority")
    ):
        await gate(ctx.run.wf_id).wait()
    return ctx.next.complete("done")


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(connection: Connection, client: Client) -> AsyncIterator[Serve]:
    """`await serve(auth=...)` → the base URL of the UI on a free loopback port."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(auth: UiAuth | None = None) -> str:
        app = create_app(TopicsReader(connection), RunActions(client), auth=auth)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve())
        servers.append((server, task))

        async def started() -> bool:
            return bool(server.started)

        await wait_until_async("the UI server listens", started, 15)
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield start
    for server, _ in servers:
        server.should_exit = True
    for _, task in servers:
        await task


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: scripts/setup installs it (apt-get install -y chromium)"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def start_limited(client: Client, wf_id: str, limiter: str, **req: Any) -> Any:
    return await client.start_workflow("UiLimited", wf_id, {"limiter": limiter, **req})


async def until_limiter(client: Client, name: str, in_use: int, waiting: int) -> None:
    async def reached() -> bool:
        d = await client.describe_limiter(name)
        return (d.in_use, d.waiting) == (in_use, waiting)

    await wait_until_async(f"{name} has {in_use} in use and {waiting} waiting", reached, 30)


async def text(page: Page, selector: str) -> str:
    return await page.locator(selector).inner_text()


async def test_ui_limiters_pages_waiting_runs_and_the_change_form_in_chromium(
    workers: Any, client: Client, serve: Serve, browser: Browser
) -> None:
    await workers.start([limited])
    await client.set_limiter("payments-api", concurrency=2, per_key=2)
    await client.set_limiter("reports", rate="600/min", burst=5)
    handles = [
        await start_limited(client, "pay-0", "payments-api", key="cust-a", fairness="tenant-a"),
        await start_limited(client, "pay-1", "payments-api", key="cust-a", fairness="tenant-a"),
    ]
    await until_limiter(client, "payments-api", 2, 0)
    # Three wait, started one at a time so the limiter hears them in this order (other partitions).
    for n, (wf_id, fairness, priority) in enumerate(
        [("pay-2", "tenant-a", 3), ("pay-3", "tenant-b", 3), ("pay-4", "tenant-b", 5)], start=1
    ):
        handles.append(await start_limited(client, wf_id, "payments-api", key="cust-b", fairness=fairness,
                                           priority=priority))  # fmt: skip
        await until_limiter(client, "payments-api", 2, n)
    ui = await serve()
    page = await browser.new_page(viewport={"width": 1280, "height": 900})

    # The list: every limiter with its limits and its queue; the nav entry next to Schedules.
    await page.goto(f"{ui}/runs")
    await page.click("#nav-limiters")
    rows = page.locator("#limiters tr")
    await expect(rows).to_have_count(3)
    pay = (await rows.nth(1).inner_text()).split("\t")
    assert [c.strip() for c in pay] == ["payments-api", "2", "-", "2", "2", "3", "2", pay[7].strip()], pay
    reports = (await rows.nth(2).inner_text()).split("\t")
    assert reports[0] == "reports" and reports[2].startswith("600/min burst 5"), reports
    await shot(page, "limiters")

    # The limiter's page: spec, in use / waiting, the queue by priority and fairness key, keys, counters.
    await page.click("#limiters a >> text=payments-api")
    await expect(page.locator("#limiter-name")).to_have_text("payments-api")
    await expect(page.locator("#in-use")).to_have_text("2 of 2")
    await expect(page.locator("#waiting")).to_have_text("3")
    assert (await text(page, "#by-priority")).splitlines()[1:] == ["3\t2", "5\t1"]
    assert sorted((await text(page, "#by-fairness")).splitlines()[1:]) == ["tenant-a\t1", "tenant-b\t2"]
    assert (await text(page, "#by-key")).splitlines()[1:] == ["cust-a\t2"]
    assert "UTC" in await text(page, "#oldest-waiting")
    await expect(page.locator("#created")).to_contain_text(f"by {client.identity}")
    await expect(page.locator("#granted")).to_have_text("2")
    await shot(page, "limiter")

    # A waiting run's page: which limiter, its place in line, key, fairness, priority.
    await page.goto(f"{ui}/run?id=pay-4")
    waiting = page.locator("#permit-waiting")
    await expect(waiting).to_contain_text("waiting for payments-api, 3rd in line, since")
    await expect(waiting).to_contain_text("key cust-b; fairness tenant-b; priority 5")
    await expect(page.locator("#priority")).to_contain_text("3 (1 first")  # the run's own; the request's is 5
    await shot(page, "run-waiting-for-a-permit")
    await page.goto(f"{ui}/run?id=pay-2")
    await expect(page.locator("#permit-waiting")).to_contain_text("1st in line")
    await page.goto(f"{ui}/run?id=pay-0")
    await expect(page.locator("#permits-held")).to_contain_text("payments-api since")
    await expect(page.locator("#permit-waiting")).to_have_count(0)
    await page.click("#permits-held a")
    await expect(page.locator("#limiter-name")).to_have_text("payments-api")

    # Bad input: a clear page, the form kept, nothing changed.
    for field, value, message in [
        ("concurrency", "0", "concurrency must be a whole number from 1"),
        ("concurrency", "two", "concurrency must be a whole number from 1"),
        ("rate", "fast", "rate must look like '50/s'"),
        ("burst", "5", "burst sizes a rate's bucket: set a rate too"),
    ]:
        await page.goto(f"{ui}/limiter?name=payments-api")
        await page.fill(f"#limit-form input[name={field}]", value)
        async with page.expect_response(lambda r: "/limiter/confirm" in r.url) as info:
            await page.click("#limit-form button")
        assert (await info.value).status == 400
        await expect(page.locator("#problem")).to_contain_text(f"Nothing was changed: {message}")
        await expect(page.locator(f"#limit-form input[name={field}]")).to_have_value(value)
    await page.goto(f"{ui}/limiter?name=payments-api")
    await page.fill("#limit-form input[name=per_key]", "")
    await page.fill("#limit-form input[name=concurrency]", "")
    await page.click("#limit-form button")
    await expect(page.locator("#problem")).to_contain_text("needs a concurrency, a rate or a per-key limit")
    # The same bad number posted with the form's token (past the confirm page) is refused too.
    await page.goto(f"{ui}/limiter/confirm?name=payments-api&concurrency=3&per_key=2")
    csrf = await page.locator("#confirm input[name=csrf]").get_attribute("value")
    r = await page.request.post(f"{ui}/limiter/action", form={"csrf": csrf or "", "name": "payments-api",
                                                               "concurrency": "-1"}, headers={"origin": ui})  # fmt: skip
    assert r.status == 400 and "Nothing was changed" in await r.text()
    # Without the CSRF token, or with a wrong one: 403, nothing changed.
    for form in (
        {"name": "payments-api", "concurrency": "9"},
        {"name": "payments-api", "concurrency": "9", "csrf": "x"},
    ):
        r = await page.request.post(f"{ui}/limiter/action", form=form, headers={"origin": ui})
        assert r.status == 403 and "CSRF token" in await r.text()
    # An unknown limiter is a 404, and the UI does not create one.
    response = await page.goto(f"{ui}/limiter?name=nope")
    assert response is not None and response.status == 404
    await expect(page.locator("#problem")).to_contain_text("No limiter named 'nope'")
    r = await page.request.post(f"{ui}/limiter/action", form={"csrf": csrf or "", "name": "nope", "concurrency": "3"},
                                headers={"origin": ui})  # fmt: skip
    assert r.status == 404
    assert [d.name for d in await client.list_limiters()] == ["payments-api", "reports"]
    d = await client.describe_limiter("payments-api")
    assert (d.spec.concurrency, d.spec.per_key, d.in_use, d.waiting) == (2, 2, 2, 3)

    # The change, confirmed: concurrency 4 lets two of the waiting runs in.
    await page.goto(f"{ui}/limiter?name=payments-api")
    await page.fill("#limit-form input[name=concurrency]", "4")
    await page.click("#limit-form button")
    await expect(page.locator("#was")).to_have_text("concurrency 2, 2 per key")
    await expect(page.locator("#becomes")).to_have_text("concurrency 4, 2 per key")
    await shot(page, "limiter-confirm")
    await page.click("#confirm-yes")
    await expect(page.locator("#notice")).to_contain_text("payments-api now allows concurrency 4, 2 per key")
    d = await client.describe_limiter("payments-api")
    assert (d.spec.concurrency, d.spec.per_key, d.updated_by) == (4, 2, client.identity)
    # Per key 2: cust-a holds two, so only cust-b's first two waiting runs get in.
    await until_limiter(client, "payments-api", 4, 1)
    await page.goto(f"{ui}/limiter?name=payments-api")
    await expect(page.locator("#in-use")).to_have_text("4 of 4")
    await expect(page.locator("#updated-by")).to_have_text(client.identity)

    for h in handles:
        gate(h.run_info.wf_id).set()
    assert [await h.result(timeout=60) for h in handles] == ["done"] * 5
    await until_limiter(client, "payments-api", 0, 0)
    await page.close()
    for name in ("limiters", "limiter", "run-waiting-for-a-permit", "limiter-confirm"):
        assert (OUTPUT / f"{name}.png").stat().st_size > 10_000


async def test_ui_limiter_change_is_refused_read_only_and_recorded_as_the_signed_in_user(
    workers: Any, client: Client, serve: Serve, browser: Browser
) -> None:
    await workers.start([limited])
    await client.set_limiter("payments-api", concurrency=2, rate="50/s", weights={"tenant-a": 3})

    # Read-only: the page shows the limiter and no form; the confirm page and the POST are refused.
    ro = await serve(auth=UiAuth.none(read_only=True))
    page = await browser.new_page()
    await page.goto(f"{ro}/limiter?name=payments-api")
    await expect(page.locator("#in-use")).to_have_text("0 of 2")
    await expect(page.locator("#limit-form")).to_have_count(0)
    response = await page.goto(f"{ro}/limiter/confirm?name=payments-api&concurrency=9")
    assert response is not None and response.status == 403
    await expect(page.locator("#problem")).to_contain_text("read-only")
    r = await page.request.post(f"{ro}/limiter/action", form={"name": "payments-api", "concurrency": "9"})
    assert r.status == 403
    await page.close()
    assert (await client.describe_limiter("payments-api")).spec.concurrency == 2

    # Signed in with the UI's token: the change records the user; the fairness weights stay.
    token = "s3cret-token-for-the-limiter-test"
    ui = await serve(auth=UiAuth.from_token(token))
    page = await browser.new_page()
    await page.goto(f"{ui}/login")
    await page.fill("#login-form input[name=token]", token)
    await page.click("#login")
    await page.goto(f"{ui}/limiter?name=payments-api")
    await expect(page.locator("#limit-form input[name=rate]")).to_have_value("50/s")
    await page.fill("#limit-form input[name=rate]", "10/s")
    await page.fill("#limit-form input[name=burst]", "20")
    await page.click("#limit-form button")
    await page.click("#confirm-yes")
    await expect(page.locator("#notice")).to_contain_text("concurrency 2, 10/s (burst 20), weights tenant-a=3")
    d = await client.describe_limiter("payments-api")
    assert (d.spec.concurrency, d.rate, d.spec.burst, d.spec.weights) == (2, "10/s", 20, {"tenant-a": 3})
    assert d.updated_by == "token (grctl ui)"
    assert d.created_by == client.identity
    await page.close()
