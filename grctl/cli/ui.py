"""``grctl ui``: serve the web UI (`grctl.ui.app`) on localhost until Ctrl-C."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from typing import Annotated

import typer

from grctl.cli.common import CommandFailed, connect, globals_of, handle_errors, require_ui_extra, run_async
from grctl.client.client import Client

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


async def serve_ui(host: str, port: int, *, ready_message: bool = True) -> None:
    """Connect to the namespace and serve the UI until cancelled or Ctrl-C."""
    import uvicorn

    from grctl.ui.app import create_app
    from grctl.ui.data import RunActions, TopicsReader

    conn = await connect(globals_of())
    client = Client(conn)
    app = create_app(TopicsReader(conn), RunActions(client), on_shutdown=client.close)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    if ready_message:
        print(f"grctl ui: namespace {conn.namespace!r} at http://{host}:{port}/ (Ctrl-C stops)", file=sys.stderr)
    await server.serve()


def ui_cmd(
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to serve on.")] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on (default: this machine only).")
    ] = "127.0.0.1",
) -> None:
    """Serve a web UI of the namespace: workers, partitions, lag, dead letters, runs and their histories.

    Pages: the namespace (partitions, owners, lag, dead-letter records with their reasons),
    runs with filters and paging, a run (status, input, result or error, store, pending
    events, children, a history timeline), and actions on a run (send an event, cancel,
    terminate), each confirmed first. Reads straight from the namespace's topics, like
    `grctl workflow list`; actions need a running worker. Needs the ui extra
    (`pip install 'grctl[ui]'`).

    **Examples**

      grctl ui                       # http://127.0.0.1:8233/

      grctl -n orders ui --port 9000
    """
    handle_errors(lambda: require_ui_extra("`grctl ui`", WEB_PACKAGES))
    handle_errors(lambda: _check_free(host, port))

    async def main() -> None:
        try:
            await serve_ui(host, port)
        except asyncio.CancelledError:
            pass

    run_async(main)
