"""What every ``grctl`` command shares: global options, the connection, errors, output.

Global options live on the root callback (``grctl --namespace orders workflow list``) and are
kept in `Globals` on the Click context. Commands run their work through `run_command` (sync) or
`run_async` (coroutines), which turn every expected failure into one ``error: ...`` line and the
documented exit code:

* 0: success;
* 1: the operation failed (the run failed, was not found, the broker is unreachable, ...);
* 2: bad usage (unknown option, invalid JSON, invalid duration, ...): Click's usage errors.

``--debug`` prints the traceback instead of swallowing it, and lets librdkafka log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import logging
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from grctl.display import fmt_duration_ms, fmt_ms, fmt_time, json_text, to_jsonable
from grctl.errors import (
    GrctlError,
    KafkaSetupError,
    WorkflowAlreadyRunningError,
    WorkflowError,
    WorkflowNotFoundError,
    WorkflowTypeNotRegisteredError,
)
from grctl.kafka.connection import Connection, servers_from_env
from grctl.kafka.logs import LIBRDKAFKA_LOGGER
from grctl.settings import EngineSettings

T = TypeVar("T")

#: The display helpers live in `grctl.display` (the web UI uses them too); re-exported here.
__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "STATUS_STYLES",
    "UI_INSTALL",
    "UI_PACKAGES",
    "CommandFailed",
    "Globals",
    "connect",
    "connect_sync",
    "err",
    "fmt_duration_ms",
    "fmt_ms",
    "fmt_time",
    "globals_of",
    "handle_errors",
    "json_text",
    "missing_ui_packages",
    "out",
    "parse_duration",
    "parse_json",
    "parse_kafka_option",
    "print_json",
    "progress",
    "read_kafka_config_file",
    "require_ui_extra",
    "run_async",
    "set_globals",
    "setup_cli_logging",
    "styled_status",
    "to_jsonable",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: stdout is for results (tables, JSON); progress, warnings and errors go to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class CommandFailed(GrctlError):
    """An operation failed: print `message` as one line and exit with code 1."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Globals:
    """The root options, shared by every command through the Click context."""

    servers: str | None = None
    namespace: str | None = None
    kafka_options: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0
    debug: bool = False
    #: The root options as given (without secrets read from files), for child processes.
    argv: list[str] = field(default_factory=list)
    #: Who the operator actions are recorded as (--identity / GRCTL_IDENTITY; None: user@host/pid).
    identity: str | None = None

    @property
    def resolved_servers(self) -> str:
        """Bootstrap servers: --servers, else GRCTL_KAFKA_SERVERS, else 127.0.0.1:9092."""
        return servers_from_env(self.servers)

    @property
    def resolved_namespace(self) -> str:
        """The namespace: --namespace, else GRCTL_NAMESPACE, else "default"."""
        return self.namespace or EngineSettings.from_env().namespace

    def kafka_config(self, *, quiet: bool = True) -> dict[str, Any]:
        """librdkafka options for every client: the pass-through options, quiet unless --debug.

        librdkafka prints connection failures to stderr on its own, while the CLI reports one
        line: `quiet` silences it, otherwise (workers) it keeps warnings and errors.
        """
        cfg: dict[str, Any] = {"logger": LIBRDKAFKA_LOGGER}  # its lines go through Python logging
        if not self.debug:
            cfg["log_level"] = 0 if quiet else 4
        cfg.update(self.kafka_options)
        return cfg


_current = Globals()


def set_globals(g: Globals) -> None:
    """Set the root options of this invocation (the root callback does)."""
    global _current
    _current = g


def globals_of() -> Globals:
    """The root options of the current invocation."""
    return _current


def _is_cli_control(exc: BaseException) -> bool:
    """Typer's/Click's own exits and usage errors: let them through."""
    return isinstance(exc, typer.Exit | typer.Abort | typer.BadParameter) or (
        hasattr(exc, "exit_code") and hasattr(exc, "format_message")
    )


# --------------------------------------------------------------------------------------------
# The ui extra

#: What `pip install 'grctl[ui]'` brings, by package: the import names that provide it (any one).
UI_PACKAGES: dict[str, tuple[str, ...]] = {
    "starlette": ("starlette",),
    "uvicorn": ("uvicorn",),
    "jinja2": ("jinja2",),
    "python-multipart": ("python_multipart", "multipart"),
    "textual": ("textual",),
}
UI_INSTALL = "pip install 'grctl[ui]'"


def missing_ui_packages(packages: tuple[str, ...]) -> list[str]:
    """Which of `packages` (keys of `UI_PACKAGES`) are not installed, without importing them."""
    return [p for p in packages if not any(importlib.util.find_spec(name) for name in UI_PACKAGES[p])]


def require_ui_extra(what: str, packages: tuple[str, ...]) -> None:
    """Fail with one line naming the extra if any of `packages` is not installed.

    Raises:
        CommandFailed: a package of the ``ui`` extra is missing.
    """
    missing = missing_ui_packages(packages)
    if missing:
        raise CommandFailed(
            f"{what} needs the ui extra, which is not installed (missing: {', '.join(missing)}): {UI_INSTALL}"
        )


# --------------------------------------------------------------------------------------------
# Kafka options


def parse_kafka_option(text: str) -> tuple[str, str]:
    """``key=value`` → (key, value); raises `typer.BadParameter` otherwise."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not key=value (e.g. -X security.protocol=SASL_SSL)", param_hint="-X")
    return key, value.strip()


def read_kafka_config_file(path: Path) -> dict[str, str]:
    """A Java-style properties file (``key=value`` lines, ``#`` comments) as librdkafka options."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--kafka-config") from None
    cfg: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{path}:{n}: expected key=value, got {line!r}", param_hint="--kafka-config")
        cfg[key.strip()] = value.strip()
    return cfg


# --------------------------------------------------------------------------------------------
# Connections


async def connect(
    g: Globals | None = None,
    *,
    create: bool = False,
    partitions: int | None = None,
    namespace: str | None = None,
    quiet: bool = True,
) -> Connection:
    """Connect to the cluster and check the namespace (created only with `create`)."""
    g = g or globals_of()
    kwargs: dict[str, Any] = {}
    if partitions is not None:
        kwargs["partitions"] = partitions
    try:
        return await Connection.connect(
            g.resolved_servers,
            namespace or g.resolved_namespace,
            kafka_config=g.kafka_config(quiet=quiet),
            create_namespace=create,
            timeout=g.connect_timeout,
            **kwargs,
        )
    except ValueError as exc:  # an invalid namespace name
        raise CommandFailed(str(exc), EXIT_USAGE) from None


def connect_sync(g: Globals | None = None, **kwargs: Any) -> Connection:
    """`connect` for synchronous commands."""
    return asyncio.run(connect(g, **kwargs))


# --------------------------------------------------------------------------------------------
# Running commands


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    # The message is text, not markup: "grctl[ui]" or a topic's "[3]" must print as written.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


def _message_for(exc: BaseException, g: Globals) -> tuple[str, int]:
    ns = g.resolved_namespace
    if isinstance(exc, CommandFailed):
        return exc.message, exc.code
    if isinstance(exc, WorkflowNotFoundError):
        wf = f" {exc.wf_id!r}" if exc.wf_id else ""
        return (
            f"workflow id{wf} not found in namespace {ns!r}; list the runs with `grctl workflow list`",
            EXIT_FAILED,
        )
    if isinstance(exc, WorkflowAlreadyRunningError):
        run = f" (run {exc.run_id})" if exc.run_id else ""
        return (
            f"workflow id {exc.wf_id!r} already has an active run{run} in namespace {ns!r}; "
            f"pick another id or cancel it with `grctl workflow cancel {exc.wf_id}`",
            EXIT_FAILED,
        )
    if isinstance(exc, WorkflowTypeNotRegisteredError):
        return (
            f"workflow type {exc.wf_type!r} is not served by the workers of namespace {ns!r}; "
            f"check the type name, or start a worker that serves it (grctl worker --app module:attribute)",
            EXIT_FAILED,
        )
    if isinstance(exc, KafkaSetupError | WorkflowError | GrctlError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out", EXIT_FAILED
    if isinstance(exc, NotImplementedError):
        return str(exc) or "not supported yet", EXIT_FAILED
    return f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)", EXIT_FAILED


def handle_errors(fn: Callable[[], T]) -> T:
    """Call `fn`; map expected failures to one error line and an exit code (see the module doc)."""
    g = globals_of()
    try:
        return fn()
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # the CLI turns any failure into one line
        if _is_cli_control(exc):
            raise
        if g.debug:
            traceback.print_exc()
        message, code = _message_for(exc, g)
        _fail(message, code)


def run_async(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine function with `handle_errors`."""

    async def main() -> T:
        return await coro_fn()

    return handle_errors(lambda: asyncio.run(main()))


def setup_cli_logging(debug: bool) -> None:
    """Log warnings of grctl to stderr (everything with --debug)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    if not debug:
        logging.getLogger("grctl.client").setLevel(logging.CRITICAL)


# --------------------------------------------------------------------------------------------
# Parsing


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, param_hint: str = "--timeout") -> dt.timedelta:
    """``90``, ``30s``, ``5m``, ``1h30m``, ``250ms``, ``2d`` → timedelta (positive)."""
    s = text.strip().lower().replace(" ", "")
    try:
        seconds = float(s)
    except ValueError:
        pos = 0
        seconds = 0.0
        for m in _DURATION_PART.finditer(s):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise typer.BadParameter(
                f"{text!r} is not a duration (examples: 30s, 5m, 1h30m, 250ms, 2d)", param_hint=param_hint
            ) from None
    if seconds <= 0:
        raise typer.BadParameter(f"{text!r}: the duration must be positive", param_hint=param_hint)
    return dt.timedelta(seconds=seconds)


def parse_json(text: str, param_hint: str) -> Any:
    """Parse a JSON value given on the command line; invalid JSON is a usage error (exit 2)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): {_clip(text)}", param_hint=param_hint
        ) from None


def _clip(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 1] + "…")


# --------------------------------------------------------------------------------------------
# Output


def print_json(value: Any, *, indent: int | None = 2) -> None:
    """Write `value` as JSON to stdout (one line with indent=None: JSONL)."""
    sys.stdout.write(json.dumps(to_jsonable(value), indent=indent, ensure_ascii=False) + "\n")
    sys.stdout.flush()


STATUS_STYLES = {
    "pending": "yellow",
    "scheduled": "yellow",
    "running": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timed_out": "red",
    "terminated": "magenta",
}


def styled_status(status: str) -> str:
    """Rich markup for a run status."""
    style = STATUS_STYLES.get(status, "white")
    return f"[{style}]{status}[/]"


@contextlib.contextmanager
def progress(message: str, *, enabled: bool = True) -> Iterator[None]:
    """A spinner on stderr while something may take more than a second (terminals only)."""
    if not enabled or not err.is_terminal:
        yield
        return
    with err.status(message, spinner="dots"):
        yield
