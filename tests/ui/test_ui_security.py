"""The web UI's guards, in a real headless Chromium: CSRF, same-origin, sign-in modes, read-only, headers.

Each test serves the real app (uvicorn on a free loopback port) over a namespace on the real
broker, with a run waiting for an event to act on. The "other site" is a second server on
another origin (``localhost`` vs ``127.0.0.1`` and another port) whose page holds a form that
posts to the UI, as a hostile page an operator visits would. Every refusal is checked twice:
the answer (403/401 and its message) and the run (still running: nothing was done).
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.models.history import HistoryKind
from grctl.ui.app import create_app
from grctl.ui.auth import UiAuth, hash_password
from grctl.ui.data import RunActions, TopicsReader
from tests.support.wait import wait_until_async
from tests.ui.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.kafka

guarded = Workflow(workflow_type="UiGuarded")


@guarded.start()
async def guarded_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@guarded.event()
async def poke(ctx: Context) -> Directive:
    return ctx.next.wait()


Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve(connection: Connection, client: Client) -> AsyncIterator[Serve]:
    """`await serve(auth=..., app=...)` → the base URL of the UI (or of `app`) on a free loopback port."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(auth: UiAuth | None = None, app: Starlette | None = None) -> str:
        app = app or create_app(TopicsReader(connection), RunActions(client), auth=auth)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve())
        servers.append((server, task))

        async def started() -> bool:
            return bool(server.started)

        await wait_until_async("the server listens", started, 15)
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


def hostile_site(target: str, wf_id: str, csrf: str = "") -> Starlette:
    """A page of another origin with a form that terminates `wf_id` through the UI at `target`."""

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f"""<!doctype html><title>cute cats</title>
            <form method="post" action="{target}/run/action" id="evil">
              <input type="hidden" name="id" value="{wf_id}"><input type="hidden" name="action" value="terminate">
              <input type="hidden" name="reason" value="pwned"><input type="hidden" name="csrf" value="{csrf}">
              <button type="submit" id="go">See the cats</button>
            </form>"""
        )

    return Starlette(routes=[Route("/", index)])


async def running(client: Client, wf_id: str) -> bool:
    return str((await client.describe(wf_id)).status) == "running"


async def waiting_run(client: Client, wf_id: str) -> None:
    await client.start_workflow("UiGuarded", wf_id)

    async def waits() -> bool:
        return (await client.describe(wf_id)).waiting_for_event

    await wait_until_async(f"{wf_id} waits for its event", waits, 30)


async def post_status(page: Page, url: str, click: str) -> int:
    """Click `click` on `page` and return the status of the POST to `url` it makes."""
    async with page.expect_response(lambda r: r.url == url and r.request.method == "POST") as info:
        await page.click(click)
    return (await info.value).status


async def test_loopback_ui_refuses_other_origins_and_bad_tokens_and_records_who_acted(
    workers, client: Client, serve: Serve, browser: Browser
) -> None:
    await workers.start([guarded])
    await waiting_run(client, "guarded-1")
    ui = await serve()
    context = await browser.new_context()
    page = await context.new_page()

    # The UI's own pages carry the security headers and a session cookie (HttpOnly, SameSite=Strict).
    response = await page.goto(f"{ui}/run?id=guarded-1")
    assert response is not None and response.status == 200
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "form-action 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    cookie = next(c for c in await context.cookies() if c["name"] == "grctl_ui_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # A page on another origin posts a terminate form, even with this session's real token
    # copied in (the worst case): refused, and the run is untouched.
    await page.goto(f"{ui}/run/confirm?id=guarded-1&action=terminate")
    real_token = await page.locator("#confirm input[name=csrf]").get_attribute("value")
    assert real_token
    evil = (await serve(app=hostile_site(ui, "guarded-1", real_token))).replace("127.0.0.1", "localhost")
    await page.goto(evil)
    assert await post_status(page, f"{ui}/run/action", "#go") == 403
    await expect(page.locator("#problem")).to_contain_text("came from another site")
    assert await running(client, "guarded-1")

    # Same origin but no token, or a wrong one (a request made with the browser's cookies): refused.
    for form in ({"id": "guarded-1", "action": "terminate"}, {"id": "guarded-1", "action": "terminate", "csrf": "x"}):
        r = await page.request.post(f"{ui}/run/action", form=form, headers={"origin": ui})
        assert r.status == 403, await r.text()
        assert "CSRF token" in await r.text()
    assert await running(client, "guarded-1")

    # A request naming another Host (a DNS-rebinding page) gets nothing.
    def rebound() -> int:
        req = urllib.request.Request(f"{ui}/runs", headers={"Host": "attacker.example"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert await asyncio.to_thread(rebound) == 400

    # The UI's own form works, and the history records who acted (this client's identity).
    await page.goto(f"{ui}/run?id=guarded-1")
    await page.fill("#cancel-form input[name=reason]", "cleanup")
    await page.click("#cancel-form button[value=terminate]")
    assert await post_status(page, f"{ui}/run/action", "#confirm-yes") == 303
    await expect(page.locator("#notice")).to_contain_text("terminated")
    history = await client.get_history("guarded-1")
    ended = [e for e in history if e.kind == HistoryKind.run_terminated]
    assert len(ended) == 1 and ended[0].msg.reason == "cleanup"
    assert ended[0].msg.identity == client.identity
    await context.close()


async def test_read_only_ui_shows_and_accepts_no_action(
    workers, client: Client, serve: Serve, browser: Browser
) -> None:
    await workers.start([guarded])
    await waiting_run(client, "guarded-ro")
    ui = await serve(auth=UiAuth.none(read_only=True))
    page = await browser.new_page()
    await page.goto(f"{ui}/run?id=guarded-ro")
    await expect(page.locator("#run-status")).to_have_text("running")
    await expect(page.locator("#read-only")).to_be_visible()
    await expect(page.locator("#event-form")).to_have_count(0)
    await expect(page.locator("#cancel-form")).to_have_count(0)
    response = await page.goto(f"{ui}/run/confirm?id=guarded-ro&action=terminate")
    assert response is not None and response.status == 403
    await expect(page.locator("#problem")).to_contain_text("read-only")
    # Even a well-formed same-origin request with the session's token is refused.
    await page.goto(f"{ui}/login")  # not a token UI: back to the runs page, with the session
    cookies = await page.evaluate("() => document.cookie")  # HttpOnly: no script of the page reads it
    assert "grctl_ui_session" not in cookies
    r = await page.request.post(f"{ui}/run/action", form={"id": "guarded-ro", "action": "terminate"})
    assert r.status == 403
    assert await running(client, "guarded-ro")
    # Schedules: listed, with no action form; a pause is refused and the schedule stays active.
    await client.create_schedule("guarded-nightly", workflow_type="UiGuarded", cron="0 2 * * *")
    await page.goto(f"{ui}/schedules")
    await expect(page.locator("#schedules")).to_contain_text("guarded-nightly")
    await expect(page.locator("#pause-guarded-nightly")).to_have_count(0)
    r = await page.request.post(f"{ui}/schedule/action", form={"id": "guarded-nightly", "action": "pause"})
    assert r.status == 403
    assert not (await client.get_schedule_handle("guarded-nightly").describe()).paused


async def test_token_ui_needs_sign_in_and_records_the_user(
    workers, client: Client, serve: Serve, browser: Browser
) -> None:
    await workers.start([guarded])
    await waiting_run(client, "guarded-tok")
    token = "s3cret-token-for-the-ui-test-0123"
    ui = await serve(auth=UiAuth.from_token(token))
    page = await browser.new_page()

    # Not signed in: every page leads to the sign-in form; a wrong token is refused.
    await page.goto(f"{ui}/run?id=guarded-tok")
    assert page.url == f"{ui}/login"
    await page.fill("#login-form input[name=token]", "wrong-token-wrong-token")
    async with page.expect_response(f"{ui}/login") as info:
        await page.click("#login")
    assert (await info.value).status == 401
    await expect(page.locator("#problem")).to_contain_text("not this UI's token")
    r = await page.request.post(f"{ui}/run/action", form={"id": "guarded-tok", "action": "terminate"})
    assert r.status in (401, 403)
    # A script with a wrong bearer token is refused, one with the right token reads.
    r = await page.request.get(f"{ui}/runs", headers={"authorization": "Bearer nope"}, max_redirects=0)
    assert r.status == 401
    r = await page.request.get(f"{ui}/runs", headers={"authorization": f"Bearer {token}"}, max_redirects=0)
    assert r.status == 200

    # Signed in: the run page, an event sent, recorded as the token's user through the UI.
    await page.fill("#login-form input[name=token]", token)
    await page.click("#login")
    await expect(page.locator("#user")).to_have_text("token")
    await page.goto(f"{ui}/run?id=guarded-tok")
    await page.fill("#event-form input[name=event]", "poke")
    await page.click("#event-form button")
    await page.click("#confirm-yes")
    await expect(page.locator("#notice")).to_contain_text("delivered")
    history = await client.get_history("guarded-tok")
    events = [e for e in history if e.kind == HistoryKind.event_received]
    assert [e.msg.identity for e in events] == ["token (grctl ui)"]

    # Signed out: back to the sign-in form.
    await page.click("#logout")
    await page.goto(f"{ui}/runs")
    assert page.url == f"{ui}/login"
    assert await running(client, "guarded-tok")


async def test_basic_and_proxy_users_act_under_their_names(
    workers, client: Client, serve: Serve, browser: Browser, tmp_path: Path
) -> None:
    await workers.start([guarded])
    await waiting_run(client, "guarded-basic")
    await waiting_run(client, "guarded-proxy")
    users = tmp_path / "users"
    users.write_text(f"# the UI's users\nalice:{hash_password('correct horse')}\n")
    basic_ui = await serve(auth=UiAuth.from_users_file(users))

    # Wrong credentials: 401 with a Basic challenge; the right ones sign alice in.
    wrong = await browser.new_context(http_credentials={"username": "alice", "password": "nope"})
    response = await (await wrong.new_page()).goto(f"{basic_ui}/runs")
    assert response is not None and response.status == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    await wrong.close()
    alice = await browser.new_context(http_credentials={"username": "alice", "password": "correct horse"})
    page = await alice.new_page()
    await page.goto(f"{basic_ui}/run?id=guarded-basic")
    await expect(page.locator("#user")).to_have_text("alice")
    await page.click("#cancel-form button[value=cancel]")
    await page.click("#confirm-yes")
    await expect(page.locator("#notice")).to_contain_text("cancel of guarded-basic accepted")
    cancelled = [e for e in await client.get_history("guarded-basic") if e.kind == HistoryKind.run_cancelled]
    assert [e.msg.identity for e in cancelled] == ["alice (grctl ui)"]
    assert (await client.describe("guarded-basic")).cancel_by == "alice (grctl ui)"
    await page.goto(f"{basic_ui}/run?id=guarded-basic")
    await expect(page.locator("#started-by")).to_have_text(client.identity)
    await expect(page.locator("#cancel-by")).to_have_text("alice (grctl ui)")
    await expect(page.locator("#history")).to_contain_text("alice (grctl ui)")
    await alice.close()

    # Behind a proxy: its user header is believed from the trusted address only.
    proxy_ui = await serve(auth=UiAuth.from_proxy("X-Forwarded-User", ["127.0.0.1/32"]))
    bob = await browser.new_context(extra_http_headers={"X-Forwarded-User": "bob@example.com"})
    page = await bob.new_page()
    await page.goto(f"{proxy_ui}/run?id=guarded-proxy")
    await expect(page.locator("#user")).to_have_text("bob@example.com")
    await page.click("#cancel-form button[value=terminate]")
    await page.click("#confirm-yes")
    await expect(page.locator("#notice")).to_contain_text("terminated")
    ended = [e for e in await client.get_history("guarded-proxy") if e.kind == HistoryKind.run_terminated]
    assert [e.msg.identity for e in ended] == ["bob@example.com (grctl ui)"]
    await bob.close()
    nobody = await browser.new_page()
    response = await nobody.goto(f"{proxy_ui}/runs")
    assert response is not None and response.status == 403
    await expect(nobody.locator("#problem")).to_contain_text("X-Forwarded-User".lower())
    elsewhere_ui = await serve(auth=UiAuth.from_proxy("X-Forwarded-User", ["10.0.0.0/8"]))
    r = await nobody.request.get(f"{elsewhere_ui}/runs", headers={"X-Forwarded-User": "mallory"})
    assert r.status == 403
    assert "through the authenticating proxy" in await r.text()
