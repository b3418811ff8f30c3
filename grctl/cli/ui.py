"""``grctl ui``: serve the web UI (`grctl.ui.app`) on localhost until Ctrl-C."""

from __future__ import annotations

import asyncio
import errno
import getpass
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from grctl.cli.common import CommandFailed, connect, globals_of, handle_errors, require_ui_extra, run_async
from grctl.client.client import Client
from grctl.errors import InvalidArgumentError

if TYPE_CHECKING:
    from grctl.ui.auth import UiAuth

logger = logging.getLogger("grctl.cli.ui")

DEFAULT_PORT = 8233
#: The packages of the ``ui`` extra the web UI runs on.
WEB_PACKAGES = ("starlette", "uvicorn", "jinja2", "python-multipart")


def _check_free(host: str, port: int) -> None:
    """Fail with one line if the port is taken, before connecting to Kafka."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "it is in use by another process" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise CommandFailed(f"cannot serve the UI on {host}:{port}: {why}; pick another with --port") from None


def ui_auth(
    host: str,
    *,
    token_file: Path | None,
    users_file: Path | None,
    proxy_user_header: str | None,
    trusted_proxies: list[str],
    read_only: bool,
) -> UiAuth:
    """The UI's authentication setting from the options; refuses a non-loopback bind without one.

    Raises:
        CommandFailed: two settings at once, a bad setting, or none on a non-loopback address.
    """
    from grctl.ui.auth import UiAuth, is_loopback, token_from_env_or_file

    try:
        token = token_from_env_or_file(token_file)
        chosen = [name for name, on in (("--token-file/GRCTL_UI_TOKEN", token), ("--users-file", users_file),
                                        ("--proxy-user-header", proxy_user_header)) if on]  # fmt: skip
        if len(chosen) > 1:
            raise CommandFailed(f"give one authentication setting, not {' and '.join(chosen)}")
        if token is not None:
            return UiAuth.from_token(token, read_only=read_only)
        if users_file is not None:
            return UiAuth.from_users_file(users_file, read_only=read_only)
        if proxy_user_header is not None:
            return UiAuth.from_proxy(proxy_user_header, trusted_proxies, read_only=read_only)
    except InvalidArgumentError as exc:
        raise CommandFailed(f"grctl ui: {exc}") from None
    if not is_loopback(host):
        raise CommandFailed(
            f"grctl ui will not serve {host} without authentication: anyone who reaches the port could "
            f"read every run and act on it. Give --token-file FILE (or GRCTL_UI_TOKEN), --users-file FILE "
            f"(lines from `grctl ui --hash-password USER`), or --proxy-user-header NAME --trusted-proxy ADDRESS "
            f"behind an authenticating proxy; or serve 127.0.0.1 (see docs/security.md)"
        )
    return UiAuth.none(read_only=read_only)


async def serve_ui(
    host: str, port: int, auth: UiAuth, *, allowed_hosts: list[str] | None = None, ready_message: bool = True
) -> None:
    """Connect to the namespace and serve the UI until cancelled or Ctrl-C."""
    import uvicorn

    from grctl.ui.app import create_app
    from grctl.ui.auth import LOOPBACK_NAMES, is_loopback
    from grctl.ui.data import RunActions, TopicsReader

    g = globals_of()
    conn = await connect(g)
    client = Client(conn, identity=g.identity)
    if not allowed_hosts:
        allowed_hosts = list(LOOPBACK_NAMES) if is_loopback(host) else ["*"]
    app = create_app(
        TopicsReader(conn), RunActions(client), auth=auth, allowed_hosts=allowed_hosts, on_shutdown=client.close
    )
    # Behind a proxy the peer address decides whom the user header is believed from: do not
    # let uvicorn replace it with X-Forwarded-For.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", proxy_headers=False, server_header=False
    )
    server = uvicorn.Server(config)
    if ready_message:
        print(f"grctl ui: namespace {conn.namespace!r} at http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr)
    await server.serve()


def ui_cmd(
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to serve on.")] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (default: this machine only).")
    ] = "127.0.0.1",
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="Sign-in with this bearer token (the file's content; or GRCTL_UI_TOKEN)."),
    ] = None,
    users_file: Annotated[
        Path | None,
        typer.Option("--users-file", help="Basic sign-in: lines 'user:scrypt$...' (see --hash-password)."),
    ] = None,
    proxy_user_header: Annotated[
        str | None,
        typer.Option("--proxy-user-header", help="Trust this header as the user, set by an authenticating proxy."),
    ] = None,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option("--trusted-proxy", help="Address or network of that proxy (repeatable)."),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", help="Host name the UI answers to (repeatable; default: loopback names)."),
    ] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Show no actions and refuse every one.")] = False,
    hash_password: Annotated[
        str | None,
        typer.Option("--hash-password", metavar="USER", help="Read a password on stdin, print a --users-file line."),
    ] = None,
) -> None:
    """Serve a web UI of the namespace: workers, partitions, lag, dead letters, runs and their histories.

    Pages: the namespace (partitions, owners, lag, dead-letter records with their reasons),
    runs with filters and paging, a run (status, input, result or error, store, pending
    events, children, a history timeline, the limiter permit it waits for and its place in
    line), the schedules, the limiters (queue by priority and fairness key, permits by key,
    counters), and actions (send an event, cancel, terminate a run; change a limiter's limits),
    each confirmed first. Reads straight from the namespace's topics, like
    `grctl workflow list`; actions need a running worker. Needs the ui extra
    (`pip install 'grctl[ui]'`).

    **Examples**

      grctl ui                       # http://127.0.0.1:8233/

      grctl -n orders ui --port 9000

      grctl ui --read-only

      grctl ui --host 0.0.0.0 --users-file ui-users   # basic sign-in, from the users file

      grctl --identity ops-bot ui                    # who the actions are recorded as (no sign-in)

    Bound to anything but loopback it needs an authentication setting (--token-file,
    --users-file or --proxy-user-header with --trusted-proxy): docs/security.md.
    """
    handle_errors(lambda: require_ui_extra("`grctl ui`", WEB_PACKAGES))
    if hash_password is not None:
        handle_errors(lambda: _print_user_line(hash_password))
        return
    auth = handle_errors(
        lambda: ui_auth(
            host, token_file=token_file, users_file=users_file, proxy_user_header=proxy_user_header,
            trusted_proxies=trusted_proxy or [], read_only=read_only,
        )
    )  # fmt: skip
    handle_errors(lambda: _check_free(host, port))

    async def main() -> None:
        try:
            await serve_ui(host, port, auth, allowed_hosts=allowed_host)
        except asyncio.CancelledError:
            pass

    run_async(main)


def _print_user_line(user: str) -> None:
    """Print ``user:scrypt$...`` for a users file, the password read from stdin (prompted on a terminal)."""
    from grctl.ui.auth import hash_password

    if not user or ":" in user:
        raise CommandFailed(f"--hash-password {user!r}: a user name must be non-empty and have no ':'")
    password = getpass.getpass(f"password for {user}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise CommandFailed("the password is shorter than 8 characters")
    print(f"{user}:{hash_password(password)}")
