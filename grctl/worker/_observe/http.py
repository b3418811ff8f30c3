"""The worker's HTTP endpoint: `/metrics` (prometheus_client's WSGI app), and the probes `/ready` and `/live`.

Readiness (`/ready`): the current session has received its partitions and restored all of
them, and no rebalance is under way. Liveness (`/live`): the worker's event loop answers within
`LOOP_ANSWER_TIMEOUT_S` and `Worker.run` has not ended. Served by the standard library's WSGI
server, one thread per request, in a daemon thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from grctl.errors import MetricsPortInUseError
from grctl.worker._observe.metrics import WorkerMetrics

__all__ = ["MetricsServer", "QuietHandler", "ThreadingServer"]

logger = logging.getLogger("grctl.worker")

_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_STATUS = {200: "200 OK", 404: "404 Not Found", 503: "503 Service Unavailable"}


class ThreadingServer(ThreadingMixIn, WSGIServer):
    """The standard library's WSGI server, a thread per request (daemon threads)."""

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log, not stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics http: %s", format % args)


def _probes(metrics: WorkerMetrics, is_running: Callable[[], bool]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: `/ready` and `/live` here, `/metrics` from prometheus_client."""
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return exposition(environ, start_response)  # type: ignore[no-any-return]  # untyped WSGI app
        if path == "/ready":
            if metrics.ready and is_running():
                code, body = 200, "ready\n"
            else:
                restoring = sorted(metrics.restoring)
                why = f"restoring partitions {restoring}" if restoring else "waiting for its partitions"
                code, body = 503, f"not ready: {why}\n"
        elif path == "/live":
            try:
                metrics.read_session()
                alive, why = is_running(), "the worker stopped"
            except TimeoutError as exc:
                alive, why = False, str(exc)
            code, body = (200, "live\n") if alive else (503, f"not live: {why}\n")
        else:
            code, body = 404, "not found: try /metrics, /ready or /live\n"
        start_response(_STATUS[code], [_TEXT])  # a new list: the server adds its headers to it
        return [body.encode()]

    return app


class MetricsServer:
    """`/metrics`, `/ready` and `/live` over HTTP, in a daemon thread.

    Args:
        metrics: what to serve.
        port: the port (0: any free port; see `address`).
        host: the interface ("0.0.0.0": every interface, as probes from outside the pod need).
        is_running: whether `Worker.run` is still running (for `/live`).
    """

    def __init__(self, metrics: WorkerMetrics, port: int, host: str, is_running: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._port = port
        self._host = host
        self._is_running = is_running
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        if self._server is None:
            return self._host, self._port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind and serve.

        Raises:
            MetricsPortInUseError: the port is taken (or cannot be bound).
        """
        app = _probes(self._metrics, self._is_running)
        try:
            self._server = make_server(
                self._host, self._port, app, server_class=ThreadingServer, handler_class=QuietHandler
            )
        except OSError as exc:
            raise MetricsPortInUseError(self._port, host=self._host, reason=exc.strerror or str(exc)) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="grctl-metrics", daemon=True)
        self._thread.start()
        logger.info("metrics on http://%s:%d/metrics (probes: /ready, /live)", *self.address)

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
