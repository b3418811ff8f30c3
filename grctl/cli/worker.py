"""``grctl worker --app module:attribute``: run a worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from grctl import tracing
from grctl.cli.common import CommandFailed, connect, globals_of, handle_errors
from grctl.errors import InvalidArgumentError
from grctl.kafka.topics import DEFAULT_PARTITIONS
from grctl.logging_setup import LOG_FORMATS, formatter_for
from grctl.state.partition_store import DEFAULT_STATE_MEMORY_MB
from grctl.worker import event_loop
from grctl.worker.supervisor import Supervisor, child_command, resolve_processes, watch_supervisor
from grctl.worker.worker import DEFAULT_METRICS_HOST, Worker
from grctl.workflow.workflow import Workflow

logger = logging.getLogger("grctl.cli.worker")

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"


def load_workflows(spec: str) -> list[Workflow]:
    """The workflows named by ``module:attribute`` (or every module-level `Workflow` of ``module``).

    The attribute may be a `Workflow`, a list/tuple/set of them, a dict whose values are
    workflows, or a function returning one of those. The current folder is importable, as with
    ``python -m``.

    Raises:
        typer.BadParameter: the module or attribute does not exist, or holds no workflows.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or (":" in spec and not attr):
        raise typer.BadParameter(
            f"{spec!r} is not module:attribute (e.g. myapp.workflows:WORKFLOWS)", param_hint="--app"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise typer.BadParameter(
                f"cannot import module {module_name!r} (not found from {cwd}; run from your project's folder "
                f"or install it)",
                param_hint="--app",
            ) from None
        raise CommandFailed(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # any error in the user's module: one line
        raise CommandFailed(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    if not attr:
        found = [v for v in vars(module).values() if isinstance(v, Workflow)]
        if not found:
            raise typer.BadParameter(f"module {module_name!r} defines no Workflow at module level", param_hint="--app")
        return _unique(found)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise typer.BadParameter(f"module {module_name!r} has no attribute {attr!r}", param_hint="--app") from None
    if callable(obj) and not isinstance(obj, Workflow):
        obj = obj()
    items: Iterable[Any]
    if isinstance(obj, Workflow):
        items = [obj]
    elif isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        items = list(obj)
    else:
        raise typer.BadParameter(
            f"{spec} is a {type(obj).__name__}; expected a Workflow, a list or dict of them", param_hint="--app"
        )
    workflows = list(items)
    bad = [w for w in workflows if not isinstance(w, Workflow)]
    if bad or not workflows:
        what = f"{bad[0]!r} is not a Workflow" if bad else "it is empty"
        raise typer.BadParameter(f"{spec}: {what}", param_hint="--app")
    return _unique(workflows)


def _unique(workflows: list[Workflow]) -> list[Workflow]:
    seen: dict[int, Workflow] = {}
    for w in workflows:
        seen.setdefault(id(w), w)
    return list(seen.values())


def setup_worker_logging(level: str, log_format: str = "text") -> None:
    """Worker logs (partition assigned/revoked/restored, step logs) to stderr, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format, LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    lvl = logging.getLevelName(level.upper())
    for name in ("grctl", "grctl.cli"):
        logging.getLogger(name).setLevel(lvl)


async def serve(
    workflows: list[Workflow],
    *,
    partitions: int,
    state_dir: Path | None,
    max_concurrent_steps: int,
    shutdown_timeout: float,
    ready_message: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_METRICS_HOST,
    state_memory_mb: int = DEFAULT_STATE_MEMORY_MB,
) -> None:
    """Connect, run a worker until SIGINT/SIGTERM, stop it gracefully (a second signal: at once)."""
    g = globals_of()
    conn = await connect(g, create=True, partitions=partitions, quiet=False)
    worker = Worker(
        workflows, conn, state_dir=state_dir, max_concurrent_steps=max_concurrent_steps, metrics_port=metrics_port,
        metrics_host=metrics_host, state_memory_mb=state_memory_mb,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stopping:
            logger.info("%s: stopping gracefully (running steps get %.0f s to finish)", sig.name, shutdown_timeout)
            stopping.append(asyncio.create_task(worker.stop(shutdown_timeout=shutdown_timeout)))
        else:
            logger.warning("%s again: stopping now (running steps re-execute on the next owner)", sig.name)
            stopping.append(asyncio.create_task(worker.stop(shutdown_timeout=0)))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    types = sorted(w.workflow_type for w in workflows)
    logger.info(
        "serving %s on namespace %r (%d partitions) at %s", types, conn.namespace, conn.num_partitions, conn.servers
    )
    task = asyncio.create_task(worker.run(), name="grctl-worker")
    try:
        try:
            await worker.wait_until_ready(120)
        except TimeoutError:
            logger.warning("not ready after 120 s; still trying to join the group")
        else:
            logger.info("worker %s ready", worker.worker_id)
            if ready_message:
                print(ready_message, file=sys.stderr, flush=True)
        await task
        if stopping:
            await asyncio.gather(*stopping)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if not task.done():
            await worker.stop(shutdown_timeout=0)
            await task


def worker_cmd(
    app_spec: Annotated[
        str,
        typer.Option(
            "--app",
            "-a",
            metavar="MODULE[:ATTRIBUTE]",
            help="Where the workflows are: a list, dict or Workflow attribute, or every Workflow of MODULE.",
            show_default=False,
        ),
    ],
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, help="Partitions if the namespace has to be created.")
    ] = DEFAULT_PARTITIONS,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            file_okay=False,
            help="Local RocksDB state folder, one per worker process [default: a free slot under "
            "$GRCTL_STATE_DIR or ~/.cache/grctl/state].",
            show_default=False,
        ),
    ] = None,
    max_concurrent_steps: Annotated[
        int, typer.Option("--max-concurrent-steps", min=1, help="Steps executing at once in this worker.")
    ] = 1000,
    state_memory_mb: Annotated[
        int,
        typer.Option(
            "--state-memory-mb", min=16, help="RocksDB memory of this worker, all its partitions together (MiB)."
        ),
    ] = DEFAULT_STATE_MEMORY_MB,
    shutdown_timeout: Annotated[
        float, typer.Option("--shutdown-timeout", min=0, help="Seconds running steps get to finish on SIGTERM.")
    ] = 20.0,
    log_level: Annotated[
        str, typer.Option("--log-level", "-l", help="debug, info, warning or error (grctl's loggers).")
    ] = "info",
    log_format: Annotated[
        str, typer.Option("--log-format", help="text, or json: one JSON object per line (wf_id, run_id, step...).")
    ] = "text",
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            "--otlp-endpoint",
            envvar="GRCTL_OTLP_ENDPOINT",
            metavar="URL",
            help="Export OpenTelemetry traces of runs by OTLP/HTTP to URL (e.g. http://collector:4318/v1/traces; "
            "needs pip install 'grctl[otel]').",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="GRCTL_METRICS_PORT",
            min=0,
            max=65535,
            help="Serve Prometheus metrics on http://HOST:PORT/metrics, with the probes /ready and /live.",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="The interface of the metrics endpoint (0.0.0.0: every one).")
    ] = DEFAULT_METRICS_HOST,
    processes: Annotated[
        str | None,
        typer.Option(
            "--processes",
            "-p",
            envvar="GRCTL_WORKER_PROCESSES",
            metavar="N|auto",
            help="Run N worker processes (auto: one per usable core; 1: this process) under a supervisor "
            "that restarts them, forwards SIGTERM/SIGINT and serves one --metrics-port for all; each gets "
            "<state-dir>/p<i> (auto counts a container's CPU quota).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a worker for the workflows of an application until SIGINT or SIGTERM.

    Joins the namespace's worker group (creating the namespace if it is missing), restores
    the state of its partitions, and logs a line per partition assigned (with what it restored)
    and revoked. SIGINT/SIGTERM stop it gracefully; a second signal stops it at once.
    GRCTL_EVENT_LOOP=uvloop runs it on uvloop (pip install 'grctl[uvloop]'; default: asyncio's loop).

    **Examples**

      grctl worker --app examples.demo:WORKFLOWS

      grctl -n orders worker --app myapp.workflows --state-dir /var/lib/grctl/w1 --shutdown-timeout 30

      grctl worker --app myapp.workflows --metrics-port 9464 --log-format json

      grctl worker --app myapp.workflows --processes auto --state-dir /var/lib/grctl --metrics-port 9464
    """
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter(f"{log_level!r}: use debug, info, warning or error", param_hint="--log-level")
    if log_format not in LOG_FORMATS:
        raise typer.BadParameter(f"{log_format!r}: use text or json", param_hint="--log-format")
    try:
        n = resolve_processes(processes) if processes is not None else 1
    except InvalidArgumentError as exc:
        raise typer.BadParameter(str(exc), param_hint="--processes") from None
    workflows = handle_errors(lambda: load_workflows(app_spec))
    # GRCTL_EVENT_LOOP: a loop that is not installed fails here, once, not in every child.
    handle_errors(event_loop.check_requested)
    setup_worker_logging(log_level, log_format)
    if n > 1:  # 1: this process is the worker, no supervisor
        worker_args = ["--app", app_spec, "--partitions", str(partitions),
                       "--max-concurrent-steps", str(max_concurrent_steps), "--state-memory-mb", str(state_memory_mb),
                       "--log-level", log_level, "--log-format", log_format,
                       *(["--otlp-endpoint", otlp_endpoint] if otlp_endpoint else [])]  # fmt: skip
        argv = child_command(globals_of().argv, worker_args, state_dir, shutdown_timeout)
        supervisor = Supervisor(
            n, argv, metrics_port=metrics_port, metrics_host=metrics_host, shutdown_timeout=shutdown_timeout
        )
        code = handle_errors(supervisor.run)
        raise typer.Exit(code)
    stop_watch = watch_supervisor()
    provider = handle_errors(lambda: tracing.enable_otlp(otlp_endpoint)) if otlp_endpoint else None

    async def main() -> None:
        await serve(
            workflows,
            partitions=partitions,
            state_dir=state_dir,
            max_concurrent_steps=max_concurrent_steps,
            shutdown_timeout=shutdown_timeout,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            state_memory_mb=state_memory_mb,
        )

    try:
        handle_errors(lambda: event_loop.run(main()))
    finally:
        if stop_watch is not None:
            stop_watch()
        if provider is not None:
            provider.shutdown()  # exports the spans still buffered
