"""Settings from the environment (`GRCTL_*`): the one place that reads it, when asked.

Nothing reads the environment at import time. `EngineSettings.from_env()` reads it anew on
every call (what `Connection`, `Worker`, `Client` and the CLI use); `get_settings()` is the
original SDK's cached accessor.

| variable | default | used by |
|---|---|---|
| GRCTL_KAFKA_SERVERS (alias GRCTL_KAFKA_BOOTSTRAP) | 127.0.0.1:9092 | Connection, CLI, tests |
| GRCTL_NAMESPACE | default | Connection, CLI |
| GRCTL_STATE_DIR | ~/.cache/grctl/state (XDG_CACHE_HOME) | Worker |
| GRCTL_REQUEST_TIMEOUT | 15 (seconds) | Client request/reply calls |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from grctl import defaults
from grctl.errors import InvalidArgumentError

__all__ = ["EngineSettings", "get_settings"]


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
