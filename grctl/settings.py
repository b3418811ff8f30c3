"""Settings from the environment (`GRCTL_*`): the one place that reads it, when asked.

Nothing reads the environment at import time. `EngineSettings.from_env()` reads it anew on
every call (what `Connection`, `Worker`, `Client` and the CLI use); `get_settings()` is the
original SDK's cached accessor. The variables of one part each have an accessor of their own,
also read anew on every call: `commit_linger_s`, `schema_registry_url`, `event_loop` and `gc_mode` (the worker), and
`dev_home`, `dev_kafka_heap_opts`, `dev_maven_settings` (the local Kafka and schema registry of
`grctl.dev`), and `kafka_servers_set` (the servers only when a variable names them: the
`grctl_kafka_env` fixture of `grctl.testing`). Each takes an `env` mapping for tests (default `os.environ`).

| variable | default | read by | used by |
|---|---|---|---|
| GRCTL_KAFKA_SERVERS (alias GRCTL_KAFKA_BOOTSTRAP) | 127.0.0.1:9092 | `EngineSettings` | Connection, CLI, tests |
| GRCTL_NAMESPACE | default | `EngineSettings` | Connection, CLI |
| GRCTL_STATE_DIR | ~/.cache/grctl/state (XDG_CACHE_HOME) | `EngineSettings` | Worker |
| GRCTL_REQUEST_TIMEOUT | 15 (seconds) | `EngineSettings` | Client request/reply calls |
| GRCTL_COMMIT_LINGER_MS | 0 (ms, a number >= 0) | `commit_linger_s` | the worker's group commit (batch pacing) |
| GRCTL_SCHEMA_REGISTRY_URL | none | `schema_registry_url` | Worker (`SchemaRegistry.from_env`) |
| GRCTL_GROUP_PROTOCOL | classic | `group_protocol` | Worker: its group protocol (classic, consumer) |
| GRCTL_SUPERVISOR_PID | none | `supervisor_pid` | a child of `grctl worker --processes` |
| GRCTL_GC | tuned | `gc_mode` | Worker: its process's garbage collector (tuned, python) |
| GRCTL_EVENT_LOOP | asyncio | `event_loop` | `grctl worker`, `grctl.worker.event_loop.run`: asyncio or uvloop |
| GRCTL_DEV_HOME | $XDG_CACHE_HOME/grctl (~/.cache/grctl) | `dev_home` | `grctl.dev`: jars and local clusters |
| GRCTL_DEV_KAFKA_HEAP_OPTS | -Xms256m -Xmx512m | `dev_kafka_heap_opts` | `grctl.dev.kafka`: the broker JVM's heap |
| GRCTL_DEV_MAVEN_SETTINGS | a settings.xml mirroring Central | `dev_maven_settings` | `grctl.dev.registry`: its fetch |

The CLI's options that a variable may give (GRCTL_KAFKA_SERVERS, GRCTL_NAMESPACE,
GRCTL_KAFKA_CONFIG, GRCTL_OTLP_ENDPOINT, GRCTL_METRICS_PORT, GRCTL_WORKER_PROCESSES) are read by Click as the option's
default (`envvar=` in `grctl.cli`), so that ``--help`` shows them beside the option; they mean
the same as here. Variables of other programs stay where they are used: JAVA_HOME
(`grctl.dev.java`), XDG_CACHE_HOME, COLUMNS (the CLI's output width).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from grctl import defaults
from grctl.errors import InvalidArgumentError

__all__ = [
    "EngineSettings",
    "commit_linger_s",
    "dev_home",
    "dev_kafka_heap_opts",
    "dev_maven_settings",
    "event_loop",
    "get_settings",
    "schema_registry_url",
]


@dataclass(frozen=True)
class EngineSettings:
    """Where the cluster is and which namespace to use.

    Attributes:
        kafka_servers: GRCTL_KAFKA_SERVERS (alias GRCTL_KAFKA_BOOTSTRAP), default 127.0.0.1:9092.
        namespace: GRCTL_NAMESPACE, default "default".
        state_dir: GRCTL_STATE_DIR, the workers' local state root (None: under the user cache).
        request_timeout: GRCTL_REQUEST_TIMEOUT seconds for client requests (default 15).
    """

    kafka_servers: str = defaults.KAFKA_SERVERS
    namespace: str = defaults.NAMESPACE
    state_dir: str | None = None
    request_timeout: float = defaults.REQUEST_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EngineSettings:
        """Read the GRCTL_* variables (of `env`, default `os.environ`).

        Raises:
            InvalidArgumentError: GRCTL_REQUEST_TIMEOUT is not a positive number.
        """
        env = os.environ if env is None else env
        raw_timeout = env.get("GRCTL_REQUEST_TIMEOUT")
        timeout = cls.request_timeout
        if raw_timeout:
            try:
                timeout = float(raw_timeout)
            except ValueError:
                timeout = -1.0
            if not timeout > 0:
                raise InvalidArgumentError(
                    f"GRCTL_REQUEST_TIMEOUT must be a positive number of seconds, got {raw_timeout!r}",
                    argument="GRCTL_REQUEST_TIMEOUT",
                )
        return cls(
            kafka_servers=env.get("GRCTL_KAFKA_SERVERS") or env.get("GRCTL_KAFKA_BOOTSTRAP") or cls.kafka_servers,
            namespace=env.get("GRCTL_NAMESPACE") or cls.namespace,
            state_dir=env.get("GRCTL_STATE_DIR") or None,
            request_timeout=timeout,
        )

    def state_root(self, namespace: str, env: Mapping[str, str] | None = None) -> Path:
        """The folder under which workers of `namespace` keep their local state."""
        if self.state_dir:
            return Path(self.state_dir) / namespace
        env = os.environ if env is None else env
        cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(cache) / "grctl" / "state" / namespace


@lru_cache(maxsize=1)
def get_settings() -> EngineSettings:
    """The settings, read once from the environment (the original SDK's accessor)."""
    return EngineSettings.from_env()


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def commit_linger_s(env: Mapping[str, str] | None = None) -> float:
    """GRCTL_COMMIT_LINGER_MS in seconds: how long a loaded worker's commit waits for more (0 when unset).

    Raises:
        InvalidArgumentError: the value is not a number of milliseconds >= 0 (the message names it).
    """
    raw = _env(env).get("GRCTL_COMMIT_LINGER_MS", "0")
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not ms >= 0:  # also NaN
        raise InvalidArgumentError(
            f"GRCTL_COMMIT_LINGER_MS must be a number of milliseconds >= 0 (or unset), got {raw!r}",
            argument="GRCTL_COMMIT_LINGER_MS",
        )
    return ms / 1000


def kafka_servers_set(env: Mapping[str, str] | None = None) -> str | None:
    """GRCTL_KAFKA_SERVERS (or GRCTL_KAFKA_BOOTSTRAP) when set, else None (no default).

    For what needs a broker only when one is named: `grctl.testing`'s `grctl_kafka_env` fixture
    skips its test otherwise.
    """
    e = _env(env)
    return (e.get("GRCTL_KAFKA_SERVERS") or e.get("GRCTL_KAFKA_BOOTSTRAP") or "").strip() or None


def schema_registry_url(env: Mapping[str, str] | None = None) -> str | None:
    """GRCTL_SCHEMA_REGISTRY_URL, stripped (None: unset or blank). `SchemaRegistry` checks it is a URL."""
    return _env(env).get("GRCTL_SCHEMA_REGISTRY_URL", "").strip() or None


def group_protocol(env: Mapping[str, str] | None = None) -> str | None:
    """GRCTL_GROUP_PROTOCOL: the workers' group protocol, classic or consumer (None: unset or blank)."""
    return _env(env).get("GRCTL_GROUP_PROTOCOL", "").strip() or None


def supervisor_pid(env: Mapping[str, str] | None = None) -> int | None:
    """GRCTL_SUPERVISOR_PID: set by `grctl worker --processes` in its children (None: not supervised)."""
    raw = _env(env).get("GRCTL_SUPERVISOR_PID", "")
    return int(raw) if raw.isdigit() else None


def _choice(env: Mapping[str, str] | None, name: str, choices: tuple[str, ...]) -> str:
    """Variable `name`, one of `choices` (any case, spaces around ignored); unset or blank: the first.

    Raises:
        InvalidArgumentError: another value (the message names the variable, the value and the choices).
    """
    raw = _env(env).get(name, "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(choices)} (or unset), got {raw!r}", argument=name)
    return raw


#: The event loops a worker can run on (GRCTL_EVENT_LOOP), the default first.
EVENT_LOOPS = ("asyncio", "uvloop")


def event_loop(env: Mapping[str, str] | None = None) -> str:
    """GRCTL_EVENT_LOOP: the worker's event loop, "asyncio" (the default: unset or blank) or "uvloop".

    Raises:
        InvalidArgumentError: another value (the message names it and the choices).
    """
    return _choice(env, "GRCTL_EVENT_LOOP", EVENT_LOOPS)


#: What a running worker does with its process's garbage collector (GRCTL_GC), the default first.
GC_MODES = ("tuned", "python")


def gc_mode(env: Mapping[str, str] | None = None) -> str:
    """GRCTL_GC: "tuned" (the default: unset or blank), a running worker tunes its process's garbage
    collector (`grctl.worker.gc_tuning`); "python" leaves Python's settings as they are.

    Raises:
        InvalidArgumentError: another value (the message names it and the choices).
    """
    return _choice(env, "GRCTL_GC", GC_MODES)


def dev_home(env: Mapping[str, str] | None = None) -> str | None:
    """GRCTL_DEV_HOME: the folder of the local Kafka's jars and clusters (None: unset or empty)."""
    return _env(env).get("GRCTL_DEV_HOME") or None


def dev_kafka_heap_opts(env: Mapping[str, str] | None = None) -> str | None:
    """GRCTL_DEV_KAFKA_HEAP_OPTS: the local broker JVM's heap flags (None: unset or empty)."""
    return _env(env).get("GRCTL_DEV_KAFKA_HEAP_OPTS") or None


def dev_maven_settings(env: Mapping[str, str] | None = None) -> str | None:
    """GRCTL_DEV_MAVEN_SETTINGS: a Maven settings.xml for the schema registry's fetch (None: unset or empty)."""
    return _env(env).get("GRCTL_DEV_MAVEN_SETTINGS") or None


def ui_token(env: Mapping[str, str] | None = None) -> str | None:
    """GRCTL_UI_TOKEN: the bearer token of `grctl ui` (or its ``sha256:<hex>``), None if unset or blank."""
    return _env(env).get("GRCTL_UI_TOKEN", "").strip() or None
