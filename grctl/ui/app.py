"""The web UI of `grctl ui`: a Starlette app of server-rendered pages (Jinja2), no JavaScript build.

Pages:

| path | what |
|---|---|
| `/namespace` | partitions, owners and lag; the workers' group; the latest dead letters and why |
| `/runs?type=&status=&q=&since=&cursor=` | runs, newest first, filtered, 25 a page (the workers' run indexes) |
| `/run?id=WF_ID` | a run: status, input, result or error, store, pending events, children, history timeline |
| `/run/confirm?id=WF_ID&action=...` | confirm an action (send an event, cancel, terminate) |
| `POST /run/action` | do it, then back to the run with what happened |
| `/limiters` | every limiter: limits, permits in use, requests waiting, grants, mean wait |
| `/limiter?name=NAME` | a limiter: spec, queue by priority and fairness key, permits by key, counters; a form |
| `/limiter/confirm?name=NAME&concurrency=&rate=&burst=&per_key=` | confirm new limits (was, becomes) |
| `POST /limiter/action` | set them, then back to the limiter with what it allows now |
| `/login`, `POST /logout` | sign in with the UI's token (mode token), sign out |

Who may use it and what guards each request (sign-in, sessions, CSRF, same-origin, security
headers) is `grctl.ui.auth`: every POST passes `check_post` or gets a 403 page; a read-only
UI shows no action and answers 403 to any.

Every failure is a page with one clear message and the right status: an unknown run (404), a
bad filter or form (400), an action on an ended run (409), an unknown limiter (404), no worker to
answer for limiters (503), Kafka unreachable (503), anything
else (500, logged with its traceback on the server, never shown).

May import: `grctl.ui.data`, `grctl.client.reader`, `grctl.display` (formatting), models, errors (never the CLI).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from grctl.client.reader import ALL_STATUSES, TERMINAL_STATUSES
from grctl.display import fmt_duration_ms, fmt_ms, json_text
from grctl.engine.remote import describe as describe_remote
from grctl.errors import (
    GrctlError,
    InvalidArgumentError,
    KafkaSetupError,
    LimiterNotFoundError,
    NoWorkerAnsweredError,
    ScheduleNotFoundError,
    WorkflowError,
    WorkflowNotFoundError,
)
from grctl.models.history import HistoryEvent
from grctl.models.limits import parse_rate
from grctl.ui.auth import (
    LOOPBACK_NAMES,
    Refused,
    SecurityHeaders,
    Sessions,
    SessionStore,
    UiAuth,
    UiAuthBackend,
    check_post,
    session_of,
)
from grctl.ui.data import LIMIT_FIELDS, PAGE_SIZE, RunActions, RunsSource, parse_filter, parse_limit_form

logger = logging.getLogger("grctl.ui")

TEMPLATES = Path(__file__).parent / "templates"
ACTIONS = {"event": "Send event", "cancel": "Cancel", "terminate": "Terminate"}
#: What an operator does to a schedule from the Schedules page.
SCHEDULE_ACTIONS = ("pause", "resume", "trigger")
#: Characters of a value shown inline in the history table (the run page shows it whole).
DETAIL_CHARS = 160


def _pretty(value: Any) -> str:
    return json.dumps(msgspec.to_builtins(value, enc_hook=str, str_keys=True), indent=2, ensure_ascii=False)


def _event_detail(e: HistoryEvent) -> str:
    msg = msgspec.to_builtins(e.msg, enc_hook=str, str_keys=True) if e.msg is not None else None
    if isinstance(msg, dict):
        msg = {k: v for k, v in msg.items() if v not in (None, "", [], {}) and k != "step_name"}
    return json_text(msg, DETAIL_CHARS) if msg else ""


def _step_of(e: HistoryEvent) -> str:
    msg = e.msg
    name = getattr(msg, "step_name", None) if msg is not None and not isinstance(msg, dict) else None
    if name is None and isinstance(msg, dict):
        name = msg.get("step_name")
    return str(name or "")


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def timeline(events: list[HistoryEvent]) -> dict[str, Any]:
    """The history as table rows (offset from the first event, gap to the next) and step bars."""
    if not events:
        return {"rows": [], "bars": [], "total_ms": 0}
    t0 = events[0].timestamp.timestamp() * 1000 if events[0].timestamp else 0.0
    times = [(e.timestamp.timestamp() * 1000 if e.timestamp else t0) - t0 for e in events]
    total = max(times[-1], 1.0)
    rows = []
    for i, e in enumerate(events):
        gap = times[i + 1] - times[i] if i + 1 < len(events) else None
        rows.append(
            {
                "offset": f"+{times[i]:.0f} ms",
                "time": fmt_ms(int(times[i] + t0)),
                "kind": str(e.kind),
                "step": _step_of(e),
                "detail": _event_detail(e),
                "gap": fmt_duration_ms(gap) if gap is not None else "",
                "failed": str(e.kind).endswith(("failed", "timeout", "attempt_failed")),
            }
        )
    bars, open_steps = [], {}
    for i, e in enumerate(events):
        kind, step = str(e.kind), _step_of(e)
        if kind == "step.started":
            open_steps[step] = times[i]
        elif kind.startswith("step.") and step in open_steps:
            start = open_steps.pop(step)
            bars.append(
                {
                    "step": step,
                    "left": 100 * start / total,
                    "width": max(0.5, 100 * (times[i] - start) / total),
                    "duration": fmt_duration_ms(times[i] - start),
                    "outcome": kind.removeprefix("step."),
                }
            )
    return {"rows": rows, "bars": bars, "total_ms": fmt_duration_ms(total)}


def create_app(
    source: RunsSource,
    actions: RunActions | None,
    *,
    auth: UiAuth | None = None,
    allowed_hosts: list[str] | None = None,
    on_shutdown: Callable[[], Any] | None = None,
) -> Starlette:
    """The UI app over `source` (reads) and `actions` (None: read-only, no action buttons).

    Args:
        source: what the pages read (`TopicsReader`, or its replacement).
        actions: what the action forms do.
        auth: who may use it (default `UiAuth.none()`: no sign-in, for loopback); its
            `read_only` drops `actions`.
        allowed_hosts: the Host names served (default: the loopback names; ``["*"]`` for any).
        on_shutdown: awaited when the server stops (close the client).
    """
    auth = auth or UiAuth.none()
    if auth.read_only:
        actions = None
    store = SessionStore()
    backend = UiAuthBackend(auth)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.globals.update(
        fmt_ms=fmt_ms, fmt_duration_ms=fmt_duration_ms, ordinal=ordinal, namespace=source.conn.namespace
    )
    templates.env.filters["pretty"] = _pretty

    def page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        user = request.user.display_name if request.user.is_authenticated else None
        base = {"actions": ACTIONS if actions else {}, "csrf": session_of(request).csrf, "user": user,
                "auth_mode": auth.mode, "read_only": actions is None}  # fmt: skip
        return templates.TemplateResponse(request, name, {**base, **context}, status)

    def operator(request: Request) -> str | None:
        """Who acts: ``<user> (grctl ui)`` for a signed-in user; None (the client's identity) without sign-in."""
        return f"{request.user.display_name[:150]} (grctl ui)" if request.user.is_authenticated else None

    def problem(request: Request, status: int, title: str, message: str, **context: Any) -> Response:
        return page(request, "error.html", status, title=title, message=message, **context)

    async def home(request: Request) -> Response:
        return RedirectResponse("/runs", 302)

    async def namespace_page(request: Request) -> Response:
        info = await run_in_threadpool(source.namespace)
        dead = await run_in_threadpool(source.dead_letters)
        versions, versions_error = None, None
        try:
            counted = await run_in_threadpool(source.versions)
        except GrctlError as exc:
            versions_error = f"The drain counts need running workers: {exc}"
        else:
            versions = counted.versions or []
            if counted.unavailable_partitions:
                parts = ", ".join(map(str, counted.unavailable_partitions))
                versions_error = f"Partitions {parts} did not answer (moving between workers?): counts not shown."
        return page(request, "namespace.html", info=info, dead=dead, versions=versions, versions_error=versions_error)

    async def schedules_page(request: Request, *, error: str | None = None, error_status: int = 400) -> Response:
        try:
            found = await run_in_threadpool(source.schedules)
        except GrctlError as exc:
            return problem(request, 503, "Schedules unavailable", f"Listing schedules needs running workers: {exc}")
        return page(
            request, "schedules.html", error_status if error else 200, schedules=found, error=error,
            notice=request.query_params.get("notice"),
        )  # fmt: skip

    async def schedule_action(request: Request) -> Response:
        got = await action_form(request)
        if isinstance(got, Response):
            return got
        data, act = got
        schedule_id, action = str(data.get("id", "")).strip(), str(data.get("action", ""))
        note = str(data.get("note", "")).strip()
        if action not in SCHEDULE_ACTIONS:
            choices = ", ".join(SCHEDULE_ACTIONS)
            return problem(request, 400, "Unknown action", f"{action!r} is not a schedule action: use {choices}.")
        try:
            done = await act.schedule(schedule_id, action, note, operator(request))
        except ScheduleNotFoundError:
            return problem(
                request, 404, "Schedule not found",
                f"No schedule with id {schedule_id!r} in namespace {source.conn.namespace!r}: nothing was done.",
            )  # fmt: skip
        except InvalidArgumentError as exc:
            return await schedules_page(request, error=f"Nothing was done: {exc}")
        except NoWorkerAnsweredError as exc:
            return await schedules_page(request, error=f"Nothing was done: {exc}", error_status=503)
        return RedirectResponse("/schedules?" + urlencode({"notice": done}), 303)

    async def runs_page(request: Request) -> Response:
        q = request.query_params
        form = {k: q.get(k, "") for k in ("type", "status", "q", "since")}
        try:
            flt = parse_filter(q.get("type"), q.get("status"), q.get("q"), q.get("cursor"), q.get("since"))
        except InvalidArgumentError as exc:
            return problem(request, 400, "Bad filter", str(exc), form=form, statuses=ALL_STATUSES)
        result = await run_in_threadpool(source.runs, flt, PAGE_SIZE)
        next_url = None
        if result.next_cursor is not None:
            params = {k: v for k, v in form.items() if v}
            params["cursor"] = result.next_cursor
            next_url = "/runs?" + urlencode(params)
        return page(
            request, "runs.html", rows=result.rows, form=form, statuses=ALL_STATUSES, next_url=next_url,
            first_url="/runs?" + urlencode({k: v for k, v in form.items() if v}) if q.get("cursor") else None,
            unavailable=result.unavailable_partitions, elapsed=result.elapsed_s,
        )  # fmt: skip

    async def run_page(
        request: Request, *, notice: str | None = None, error: str | None = None, error_status: int = 409
    ) -> Response:
        wf_id = request.query_params.get("id", "").strip()
        if not wf_id:
            return problem(request, 400, "No run given", "The address needs ?id=<workflow id>, e.g. /run?id=order-1.")
        try:
            row = await run_in_threadpool(source.run, wf_id)
        except WorkflowNotFoundError:
            return problem(
                request, 404, "Run not found",
                f"No run with workflow id {wf_id!r} in namespace {source.conn.namespace!r}. "
                f"Check the id, or find the run in the list.",
            )  # fmt: skip
        rec = row.record
        events = await run_in_threadpool(source.history, wf_id, rec.run_id)
        state = await run_in_threadpool(source.state, wf_id, rec.run_id)
        started = next((e for e in events if str(e.kind) == "run.started"), None)
        children = [
            msgspec.to_builtins(e.msg, enc_hook=str, str_keys=True)
            for e in events
            if str(e.kind) == "child.started" and e.msg is not None
        ]
        status = error_status if error else 200
        info = row.info()
        permits, place_error = info.permits, None
        if permits and permits.get("waiting_for") and rec.status not in TERMINAL_STATUSES:
            # Its place in line is known to the limiter's partition only: ask the workers.
            try:
                live = await run_in_threadpool(source.permits, wf_id)
            except GrctlError as exc:
                place_error = f"place in line unknown: {exc}"
            else:
                permits = live
        return page(
            request, "run.html", status, row=row, rec=rec, info=info, state=state, children=children,
            permits=permits, place_error=place_error, remote_task=describe_remote(rec.remote),
            input=msgspec.to_builtins(started.msg, enc_hook=str, str_keys=True).get("input") if started else None,
            has_input=started is not None, timeline=timeline(events), ended=rec.status in TERMINAL_STATUSES,
            notice=notice or request.query_params.get("notice"), error=error,
        )  # fmt: skip

    async def posted_form(request: Request) -> FormData | Response:
        """The form of a POST, or the page refusing it: no valid CSRF token, or another origin (`check_post`)."""
        data = await request.form()
        try:
            check_post(request, data)
        except Refused as exc:
            return problem(request, 403, "Refused", exc.message)
        return data

    async def action_form(request: Request) -> tuple[FormData, RunActions] | Response:
        """The form of an action's POST (runs, schedules, limiters) and what acts, or the page refusing it
        (`posted_form`'s refusals, and a read-only UI's)."""
        data = await posted_form(request)
        if isinstance(data, Response):
            return data
        if actions is None:
            return read_only(request)
        return data, actions

    def read_only(request: Request) -> Response:
        return problem(request, 403, "Read-only", "This UI is read-only (grctl ui --read-only): nothing was done.")

    def no_limiter(request: Request, name: str, done: str = "") -> Response:
        return problem(
            request, 404, "Limiter not found",
            f"No limiter named {name!r} in namespace {source.conn.namespace!r}{done}. "
            f"Check the name, or find it in the list of limiters.",
        )  # fmt: skip

    async def limiters_page(request: Request) -> Response:
        try:
            found = await run_in_threadpool(source.limiters)
        except GrctlError as exc:
            return problem(request, 503, "Limiters unavailable", f"Listing limiters needs running workers: {exc}")
        return page(request, "limiters.html", limiters=found)

    async def limiter_page(
        request: Request, *, form: dict[str, str] | None = None, error: str | None = None, error_status: int = 400
    ) -> Response:
        name = request.query_params.get("name", "")
        if not name:
            return problem(
                request, 400, "No limiter given", "The address needs ?name=<limiter>, e.g. /limiter?name=payments-api."
            )
        try:
            d = await run_in_threadpool(source.limiter, name)
        except LimiterNotFoundError:
            return no_limiter(request, name)
        except NoWorkerAnsweredError as exc:
            return problem(request, 503, "Limiter unavailable", f"Describing a limiter needs running workers: {exc}")
        current = {
            "concurrency": str(d.spec.concurrency or ""), "rate": d.rate or "", "burst": str(d.spec.burst or ""),
            "per_key": str(d.spec.per_key or ""),
        }  # fmt: skip
        return page(
            request, "limiter.html", error_status if error else 200, d=d, form=form or current, error=error,
            notice=request.query_params.get("notice"),
        )  # fmt: skip

    def limit_form(q: Any) -> dict[str, str]:
        return {"name": str(q.get("name", "")), **{k: str(q.get(k, "")) for k in LIMIT_FIELDS}}

    async def limiter_confirm_page(request: Request) -> Response:
        if actions is None:
            return read_only(request)
        form = limit_form(request.query_params)
        try:
            limits = parse_limit_form(form)
        except InvalidArgumentError as exc:
            return await limiter_page(request, form=form, error=f"Nothing was changed: {exc}")
        try:
            d = await run_in_threadpool(source.limiter, form["name"])
        except LimiterNotFoundError:
            return no_limiter(request, form["name"])
        except NoWorkerAnsweredError as exc:
            return problem(request, 503, "Limiter unavailable", f"Changing a limiter needs running workers: {exc}")
        new = msgspec.structs.replace(d.spec, **_spec_fields(limits))
        return page(request, "limiter_confirm.html", form=form, d=d, new=new.describe(), unchanged=new == d.spec)

    async def limiter_action(request: Request) -> Response:
        got = await action_form(request)
        if isinstance(got, Response):
            return got
        data, act = got
        form = limit_form(data)
        request.scope["query_string"] = urlencode({"name": form["name"]}).encode()
        try:
            limits = parse_limit_form(form)
            d = await act.set_limits(form["name"], limits, operator(request))
        except InvalidArgumentError as exc:
            return await limiter_page(request, form=form, error=f"Nothing was changed: {exc}")
        except LimiterNotFoundError:
            return no_limiter(request, form["name"], ": nothing was changed")
        except NoWorkerAnsweredError as exc:
            return await limiter_page(request, form=form, error=f"Nothing was changed: {exc}", error_status=503)
        done = f"{d.name} now allows {d.spec.describe()}"
        return RedirectResponse("/limiter?" + urlencode({"name": d.name, "notice": done}), 303)

    async def confirm_page(request: Request) -> Response:
        q = request.query_params
        wf_id, action = q.get("id", "").strip(), q.get("action", "")
        if actions is None:
            return read_only(request)
        if action not in ACTIONS:
            return problem(request, 400, "Unknown action", f"{action!r} is not an action: use {', '.join(ACTIONS)}.")
        form = {"id": wf_id, "action": action, "event": q.get("event", ""), "payload": q.get("payload", ""),
                "reason": q.get("reason", "")}  # fmt: skip
        if action == "event":
            try:
                _event_args(form)
            except InvalidArgumentError as exc:
                return await run_page(request, error=str(exc), error_status=400)
        return page(request, "confirm.html", form=form, label=ACTIONS[action])

    async def action_post(request: Request) -> Response:
        got = await action_form(request)
        if isinstance(got, Response):
            return got
        data, act = got
        form = {k: str(data.get(k, "")) for k in ("id", "action", "event", "payload", "reason")}
        wf_id, action = form["id"].strip(), form["action"]
        if action not in ACTIONS:
            return problem(request, 400, "Unknown action", f"{action!r} is not an action: use {', '.join(ACTIONS)}.")
        reason = form["reason"].strip() or None
        request.scope["query_string"] = urlencode({"id": wf_id}).encode()
        try:
            if action == "event":
                name, payload = _event_args(form)
                await act.send_event(wf_id, name, payload, operator(request))
                done = f"event {name!r} delivered to {wf_id}"
            elif action == "cancel":
                await act.cancel(wf_id, reason, operator(request))
                done = f"cancel of {wf_id} accepted (a running step finishes first)"
            else:
                await act.terminate(wf_id, reason, operator(request))
                done = f"{wf_id} terminated"
        except InvalidArgumentError as exc:
            return await run_page(request, error=str(exc), error_status=400)
        except WorkflowNotFoundError:
            return problem(request, 404, "Run not found", f"No run with workflow id {wf_id!r}: nothing was done.")
        except NoWorkerAnsweredError as exc:
            return await run_page(request, error=f"Nothing was done: {exc}")
        except WorkflowError as exc:
            return await run_page(request, error=f"{ACTIONS[action]} refused: {exc}")
        return RedirectResponse("/run?" + urlencode({"id": wf_id, "notice": done}), 303)

    async def login_page(request: Request) -> Response:
        if auth.mode != "token":
            return RedirectResponse("/runs", 302)
        if request.method == "GET":
            return page(request, "login.html", 401 if request.query_params.get("failed") else 200,
                        failed=bool(request.query_params.get("failed")))  # fmt: skip
        data = await posted_form(request)
        if isinstance(data, Response):
            return data
        token = str(data.get("token", ""))
        if not token or not backend.token_matches(token):
            return page(request, "login.html", 401, failed=True)
        # A new session on sign-in: a session id known before it (fixation) signs no one in.
        store.drop(session_of(request).sid)
        request.scope["grctl.session"] = store.new(user="token")
        return RedirectResponse("/runs", 303)

    async def logout(request: Request) -> Response:
        data = await posted_form(request)
        if isinstance(data, Response):
            return data
        store.drop(session_of(request).sid)
        request.scope["grctl.session"] = store.new()
        return RedirectResponse("/login" if auth.mode == "token" else "/runs", 303)

    def on_auth_error(conn: HTTPConnection, exc: Exception) -> Response:
        request = Request(conn.scope)
        request.scope["user"], request.scope["auth"] = UnauthenticatedUser(), AuthCredentials()
        if auth.mode == "token" and request.method == "GET" and "authorization" not in request.headers:
            return RedirectResponse("/login", 303)
        if auth.mode == "proxy":
            return problem(request, 403, "Not signed in", f"{exc}: sign in through the proxy.")
        response = problem(request, 401, "Sign in", f"{exc}.")
        if auth.mode == "basic":
            response.headers["www-authenticate"] = 'Basic realm="grctl ui", charset="UTF-8"'
        return response

    async def on_kafka_error(request: Request, exc: Exception) -> Response:
        return problem(request, 503, "Kafka is not answering", f"{exc} Try again when the cluster is back.")

    async def on_grctl_error(request: Request, exc: Exception) -> Response:
        return problem(request, 400, "Cannot do that", str(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return problem(request, 404, "No such page", f"{request.url.path} is not a page of the grctl UI.")
        return problem(request, exc.status_code, "Bad request", str(exc.detail))

    async def on_error(request: Request, exc: Exception) -> Response:
        logger.error("UI request %s failed", request.url.path, exc_info=exc)
        return problem(
            request, 500, "Something went wrong",
            f"{type(exc).__name__}: {exc}. The details are in the log of the grctl ui process.",
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            await on_shutdown()

    return Starlette(
        routes=[
            Route("/", home),
            Route("/namespace", namespace_page),
            Route("/runs", runs_page),
            Route("/schedules", schedules_page),
            Route("/schedule/action", schedule_action, methods=["POST"]),
            Route("/run", run_page),
            Route("/run/confirm", confirm_page),
            Route("/run/action", action_post, methods=["POST"]),
            Route("/limiters", limiters_page),
            Route("/limiter", limiter_page),
            Route("/limiter/confirm", limiter_confirm_page),
            Route("/limiter/action", limiter_action, methods=["POST"]),
            Route("/login", login_page, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or list(LOOPBACK_NAMES)),
            Middleware(Sessions, store=store),
            Middleware(AuthenticationMiddleware, backend=backend, on_error=on_auth_error),
        ],
        exception_handlers={
            KafkaSetupError: on_kafka_error,
            GrctlError: on_grctl_error,
            HTTPException: on_http_error,
            Exception: on_error,
        },
        lifespan=lifespan,
    )


def _spec_fields(limits: dict[str, Any]) -> dict[str, Any]:
    """`parse_limit_form`'s arguments as `LimitSpec` fields (what the confirm page compares)."""
    rate_n, period = parse_rate(limits["rate"]) if limits["rate"] else (None, None)
    return {"concurrency": limits["concurrency"], "rate_n": rate_n, "rate_period_ms": period,
            "burst": limits["burst"], "per_key": limits["per_key"]}  # fmt: skip


def _event_args(form: dict[str, str]) -> tuple[str, Any]:
    """(event name, payload) of the event form.

    Raises:
        InvalidArgumentError: no event name, or a payload that is not JSON.
    """
    name = form.get("event", "").strip()
    if not name:
        raise InvalidArgumentError("give the event's name (the @wf.event handler)", argument="event")
    text = form.get("payload", "").strip()
    if not text:
        return name, None
    try:
        return name, json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"the payload is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", argument="payload"
        ) from None
