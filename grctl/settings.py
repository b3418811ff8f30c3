"""Settings from the environment (`GRCTL_*`), read when asked, never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class EngineSettings:
    """Where the cluster is and which namespace to use.

    Attributes:
        kafka_servers: GRCTL_KAFKA_SERVERS (alias GRCTL_KAFKA_BOOTSTRAP), default 127.0.0.1:9092.
        namespace: GRCTL_NAMESPACE, default "default".
        state_dir: GRCTL_STATE_DIR, the workers' local state root (default under ~/.cache/grctl).
        request_timeout: GRCTL_REQUEST_TIMEOUT seconds for client requests (default 15).
    """

    kafka_servers: str = "127.0.0.1:9092"
    namespace: str = "default"
    state_dir: str | None = None
    request_timeout: float = 15.0

    @classmethod
    def from_env(cls) -> EngineSettings:
        """Read the GRCTL_* variables."""
        env = os.environ
        return cls(
            kafka_servers=env.get("GRCTL_KAFKA_SERVERS") or env.get("GRCTL_KAFKA_BOOTSTRAP") or cls.kafka_servers,
            namespace=env.get("GRCTL_NAMESPACE") or cls.namespace,
            state_dir=env.get("GRCTL_STATE_DIR"),
            request_timeout=float(env.get("GRCTL_REQUEST_TIMEOUT", cls.request_timeout)),
        )


@lru_cache(maxsize=1)
def get_settings() -> EngineSettings:
    """The settings, read once from the environment."""
    return EngineSettings.from_env()
