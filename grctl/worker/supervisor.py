"""Several worker processes under one supervisor: `grctl worker --processes N` and `run_workers`.

A worker process runs on one core (its interpreter lock), so a host with N cores runs N of
them. The supervisor starts each as `python -m grctl ... worker ...` (a new interpreter: spawned,
never forked), all in the namespace's worker group, and:

- gives each its own state folder slot (`<state dir>/p<i>`; without a state dir each child takes
  a free slot under the state root, as a lone worker does), so a restarted child restores from
  its own checkpoint;
- restarts a child that exits while the supervisor is not stopping, after a back-off (1 s,
  doubling to 30 s, back to 1 s once a child has run for `HEALTHY_S`), and logs why it ended;
- forwards SIGTERM and SIGINT to every child (a second signal too: the children stop at once),
  then waits for them `shutdown_timeout` plus `STOP_GRACE_S` before it SIGKILLs what is left;
- serves one endpoint for all of them on `metrics_port`: `/metrics` merges the children's
  metrics (each sample labelled `process="<i>"`, scraped from the child's own endpoint on
  loopback) with the supervisor's own (`grctl_worker_processes`,
  `grctl_worker_process_restarts_total`); `/ready` is ready when every child is; `/live` while
  the supervisor runs.

A child learns that its supervisor died (SIGKILL) from `GRCTL_SUPERVISOR_PID`: it stops itself
gracefully when its parent process is no longer that pid (`watch_supervisor`).

May import (of grctl): errors, settings, worker._observe.http.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from grctl import settings
from grctl.errors import InvalidArgumentError

__all__ = ["Supervisor", "resolve_processes", "run_workers", "usable_cores", "watch_supervisor"]

logger = logging.getLogger("grctl.worker.supervisor")

#: `grctl worker --processes` from the environment (not passed on to the children).
PROCESSES_ENV = "GRCTL_WORKER_PROCESSES"
#: The environment variable a supervised child finds its supervisor's pid in.
SUPERVISOR_PID_ENV = "GRCTL_SUPERVISOR_PID"
#: First and longest wait before a child that ended is started again.
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
#: A child that ran this long before it ended is restarted after the first delay again.
HEALTHY_S = 60.0
#: After the children's shutdown timeout: how long they may take to exit before SIGKILL.
STOP_GRACE_S = 15.0
#: How long a scrape of a child's endpoint may take.
SCRAPE_TIMEOUT_S = 2.0
#: How often a supervised child checks that its supervisor lives.
WATCH_INTERVAL_S = 1.0


def resolve_processes(value: str | int) -> int:
    """`--processes`: a number of processes (1 or more), or `auto` (the cores this process may use).

    Raises:
        InvalidArgumentError: neither a positive number nor `auto`.
    """
    if isinstance(value, int) or value.strip().isdigit():
        n = int(value)
        if n < 1:
            raise InvalidArgumentError(f"--processes must be 1 or more, got {n}", argument="processes")
        return n
    if value.strip().lower() == "auto":
        return usable_cores()
    raise InvalidArgumentError(
        f"--processes takes a number of worker processes or 'auto' (one per usable core), got {value!r}",
        argument="processes",
    )


def usable_cores(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) <= 0:
        return cores
    return max(1, min(cores, -(-int(quota) // int(period))))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at the moment (the child binds it right after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class _Child:
    index: int
    port: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay_s: float = RESTART_DELAY_S
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """Runs `processes` worker children of the command `child_argv(i, port)` builds (see the module docstring).

    Args:
        processes: how many children.
        child_argv: the command line of child `i`, whose metrics endpoint must listen on
            127.0.0.1:`port`.
        metrics_port: the supervisor's endpoint (None: none).
        metrics_host: its interface.
        shutdown_timeout: the children's own graceful-stop budget (seconds).
        env: the children's environment (default: this process's).
    """

    def __init__(
        self,
        processes: int,
        child_argv: Callable[[int, int], list[str]],
        *,
        metrics_port: int | None = None,
        metrics_host: str = "0.0.0.0",
        shutdown_timeout: float = 20.0,
        env: dict[str, str] | None = None,
    ) -> None:
        if processes < 1:
            raise InvalidArgumentError(f"processes must be 1 or more, got {processes}", argument="processes")
        self._argv = child_argv
        self._children = [_Child(index=i, port=free_port()) for i in range(processes)]
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._shutdown_timeout = shutdown_timeout
        self._env = dict(os.environ if env is None else env)
        self._env[SUPERVISOR_PID_ENV] = str(os.getpid())
        self._env.pop(PROCESSES_ENV, None)  # a child is one worker, never a supervisor of its own
        self._stop_signals: list[int] = []
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._server: Any = None

    # ------------------------------------------------------------------ running

    @property
    def pids(self) -> list[int | None]:
        """The children's pids (None: not running now)."""
        with self._lock:
            return [c.proc.pid if c.proc is not None and c.proc.poll() is None else None for c in self._children]

    @property
    def restarts(self) -> int:
        """Children restarted so far."""
        return sum(c.restarts for c in self._children)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Ask every child to stop (graceful on the first call; a second call stops them at once)."""
        self._stop_signals.append(sig)
        self._wake.set()

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Start the children and keep them running until `stop` (or SIGTERM/SIGINT); returns an exit code.

        0 when every child stopped cleanly after the stop, 1 otherwise.
        """
        previous: dict[int, Any] = {}
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[int(sig)] = signal.signal(sig, lambda s, _f: self.stop(s))
        self._serve_metrics()
        try:
            for child in self._children:
                self._start(child)
            logger.info("supervising %d worker processes: pids %s", len(self._children), self.pids)
            while not self._stop_signals:
                self._wake.wait(0.5)
                self._wake.clear()
                if not self._stop_signals:
                    self._reap_and_restart()
            return self._stop_children()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()

    def _start(self, child: _Child) -> None:
        if child.restarts:
            child.port = free_port()  # the dead child's port may have been taken meanwhile
        argv = self._argv(child.index, child.port)
        # Its own process group: a Ctrl-C in the terminal reaches the supervisor only, which
        # forwards it once (else each child would see it twice and stop at once).
        proc = subprocess.Popen(argv, env=self._env, process_group=0)
        with self._lock:
            child.proc = proc
            child.started_at = time.monotonic()
            child.restart_at = None

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for child in self._children:
            proc = child.proc
            if proc is not None and (code := proc.poll()) is not None:
                ran = now - child.started_at
                if ran >= HEALTHY_S:
                    child.delay_s = RESTART_DELAY_S
                child.exits.append(code)
                logger.error(
                    "worker process %d (pid %d) %s after %.0f s; restarting it in %.0f s",
                    child.index, proc.pid, _describe_exit(code), ran, child.delay_s,
                )  # fmt: skip
                with self._lock:
                    child.proc = None
                child.restart_at = now + child.delay_s
                child.delay_s = min(RESTART_DELAY_MAX_S, child.delay_s * 2)
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)
                logger.info("worker process %d restarted: pid %s", child.index, self.pids[child.index])

    def _stop_children(self) -> int:
        sent = 0
        deadline = time.monotonic() + self._shutdown_timeout + STOP_GRACE_S
        clean = True
        while True:
            # Forward each stop signal once (a second one: the children stop at once).
            for sig in self._stop_signals[sent:]:
                logger.info("%s: stopping %d worker processes", signal.Signals(sig).name, len(self._children))
                for child in self._children:
                    if child.proc is not None and child.proc.poll() is None:
                        child.proc.send_signal(sig)
            sent = len(self._stop_signals)
            running = [c for c in self._children if c.proc is not None and c.proc.poll() is None]
            if not running:
                break
            if time.monotonic() >= deadline:
                for child in running:
                    assert child.proc is not None
                    logger.error("worker process %d (pid %d) did not stop: SIGKILL", child.index, child.proc.pid)
                    child.proc.kill()
                    child.proc.wait()
                clean = False
                break
            self._wake.wait(0.1)
            self._wake.clear()
        for child in self._children:
            if child.proc is not None and child.proc.returncode not in (0, None):
                clean = False
                logger.warning("worker process %d %s", child.index, _describe_exit(child.proc.returncode))
        return 0 if clean else 1

    # ------------------------------------------------------------------ the endpoint

    def _serve_metrics(self) -> None:
        if self._metrics_port is None:
            return
        from wsgiref.simple_server import make_server

        from grctl.errors import MetricsPortInUseError
        from grctl.worker._observe.http import QuietHandler, ThreadingServer

        try:
            self._server = make_server(
                self._metrics_host, self._metrics_port, self._app, server_class=ThreadingServer,
                handler_class=QuietHandler,
            )  # fmt: skip
        except OSError as exc:
            raise MetricsPortInUseError(
                self._metrics_port, host=self._metrics_host, reason=exc.strerror or str(exc)
            ) from None
        threading.Thread(target=self._server.serve_forever, name="grctl-supervisor-metrics", daemon=True).start()
        logger.info("metrics of all worker processes on http://%s:%d/metrics", self._metrics_host, self._metrics_port)

    def _fetch(self, child: _Child, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{child.port}{path}", timeout=SCRAPE_TIMEOUT_S) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (OSError, ValueError) as exc:
            return 0, f"unreachable: {exc}"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if path == "/metrics":
            texts = {c.index: self._fetch(c, "/metrics") for c in self._children}
            body = merge_metrics({i: t for i, (code, t) in texts.items() if code == 200}, self._own_metrics())
            start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])
            return [body]
        if path == "/ready":
            answers = [(c.index, *self._fetch(c, "/ready")) for c in self._children]
            waiting = [f"process {i}: {text.strip()}" for i, code, text in answers if code != 200]
            if waiting:
                start_response("503 Service Unavailable", headers)
                return [("not ready: " + "; ".join(waiting) + "\n").encode()]
            start_response("200 OK", headers)
            return [b"ready\n"]
        if path == "/live":
            start_response("200 OK", headers)
            return [b"live\n"]
        start_response("404 Not Found", headers)
        return [b"not found: try /metrics, /ready or /live\n"]

    def _own_metrics(self) -> list[Metric]:
        procs = Metric("grctl_worker_processes", "Worker processes this supervisor runs.", "gauge")
        procs.add_sample("grctl_worker_processes", {}, len(self._children))
        restarts = Metric("grctl_worker_process_restarts", "Worker processes restarted by the supervisor.", "counter")
        for c in self._children:
            restarts.add_sample("grctl_worker_process_restarts_total", {"process": str(c.index)}, c.restarts)
        return [procs, restarts]


def merge_metrics(texts: dict[int, str], extra: Sequence[Metric] = ()) -> bytes:
    """The exposition of several processes' metrics as one: each sample labelled with its process.

    Families of the same name are merged into one (a scrape must not repeat a family).
    """
    families: dict[str, Metric] = {}
    for index, text in sorted(texts.items()):
        for fam in text_string_to_metric_families(text):
            merged = families.get(fam.name)
            if merged is None:
                merged = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                merged.samples.append(
                    Sample(s.name, {**s.labels, "process": str(index)}, s.value, s.timestamp, s.exemplar)
                )
    for metric in extra:
        families[metric.name] = metric

    class _Collected:
        def collect(self) -> Iterator[Metric]:
            yield from families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collected())  # type: ignore[arg-type]  # a collector is anything with collect()
    return generate_latest(registry)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def watch_supervisor() -> Callable[[], None] | None:
    """In a supervised child: a daemon thread that SIGTERMs this process when its supervisor is gone.

    Returns a function that stops the watch, or None if this process is not supervised.
    """
    supervisor = settings.supervisor_pid()
    if supervisor is None:
        return None
    done = threading.Event()

    def watch() -> None:
        while not done.wait(WATCH_INTERVAL_S):
            if os.getppid() != supervisor:
                logger.error("the supervisor (pid %d) is gone: stopping this worker process", supervisor)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="grctl-supervisor-watch", daemon=True).start()
    return done.set


def run_workers(
    app: str,
    processes: int | str = "auto",
    *,
    worker_args: Sequence[str] = (),
    global_args: Sequence[str] = (),
    state_dir: str | Path | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "0.0.0.0",
    shutdown_timeout: float = 20.0,
) -> int:
    """Run `processes` worker processes for the workflows of `app` (`module:attribute`) until SIGTERM/SIGINT.

    The Python face of `grctl worker --processes N`; blocks, and returns the exit code.

    Args:
        app: where the workflows are, as `grctl worker --app` takes it.
        processes: a number, or "auto" (one per usable core).
        worker_args: more options of `grctl worker` for every child (e.g. ["--max-concurrent-steps", "200"]).
        global_args: options of `grctl` itself (e.g. ["--servers", "k1:9092", "-n", "orders"]).
        state_dir: the state folder; child `i` uses `<state_dir>/p<i>` (None: free slots).
        metrics_port: one endpoint for all the children (None: none).
        metrics_host: its interface.
        shutdown_timeout: seconds running steps get to finish on SIGTERM.
    """
    n = resolve_processes(processes)
    argv = child_command(
        list(global_args), ["--app", app, *worker_args], Path(state_dir) if state_dir else None, shutdown_timeout
    )
    return Supervisor(
        n, argv, metrics_port=metrics_port, metrics_host=metrics_host, shutdown_timeout=shutdown_timeout
    ).run()


def child_command(
    global_args: list[str], worker_args: list[str], state_dir: Path | None, shutdown_timeout: float
) -> Callable[[int, int], list[str]]:
    """The command line of child `i` (`python -m grctl <global> worker <worker args> <its slot and port>`)."""

    def argv(index: int, port: int) -> list[str]:
        slot = ["--state-dir", str(state_dir / f"p{index}")] if state_dir is not None else []
        return [
            sys.executable, "-m", "grctl", *global_args, "worker", *worker_args, *slot,
            "--shutdown-timeout", str(shutdown_timeout), "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
        ]  # fmt: skip

    return argv
