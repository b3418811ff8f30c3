"""`KafkaWorkflowEnvironment`: the same tests on a real broker, a real `Worker` and a real `Client`.

It has the test-facing surface of `WorkflowEnvironment` (`client`, `history`, `sleep`, `now`,
`async with`), so a test written against the `grctl_env` fixture runs on a
broker by taking `grctl_kafka_env` instead. Time is real here: `sleep` sleeps, and nothing
skips ahead, so keep the durations such tests use short. `crash_next_step` is the in-process
environment's alone (on a broker, crash a worker process: `tests/crash/` does).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ulid import ULID

from grctl.client.client import Client
from grctl.errors import InvalidArgumentError
from grctl.kafka.connection import Connection
from grctl.kafka.topics import admin_client, delete_namespace
from grctl.models.history import HistoryEvent
from grctl.worker.worker import Worker
from grctl.workflow.workflow import Workflow

__all__ = ["KafkaWorkflowEnvironment"]

#: How long `start` waits for the worker to own its partitions.
READY_TIMEOUT_S = 60.0


class KafkaWorkflowEnvironment:
    """A namespace of its own on a broker, one worker serving `workflows`, and a client.

    Args:
        workflows: the workflow definitions the worker serves.
        servers: the Kafka bootstrap servers (default: `GRCTL_KAFKA_SERVERS`).
        namespace: the namespace to use (default: a new unique one, deleted at `stop`).
        partitions: partitions of a namespace it creates.
        worker_options: more keyword arguments for `Worker`.
    """

    def __init__(
        self,
        workflows: Iterable[Workflow],
        *,
        servers: str | None = None,
        namespace: str | None = None,
        partitions: int = 1,
        **worker_options: Any,
    ) -> None:
        self._workflows = list(workflows)
        self._servers = servers
        self._own_namespace = namespace is None
        self.namespace = namespace or f"t{str(ULID()).lower()}"
        self._partitions = partitions
        self._worker_options = worker_options
        self._running: asyncio.Task[None] | None = None
        self._dir: Path | None = None

    async def __aenter__(self) -> KafkaWorkflowEnvironment:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create the namespace, start the worker and wait until it owns its partitions."""
        self.connection = await Connection.connect(self._servers, self.namespace, partitions=self._partitions)
        self._dir = Path(tempfile.mkdtemp(prefix="grctl-kafkaenv-"))
        self.worker = Worker(self._workflows, self.connection, state_dir=self._dir, **self._worker_options)
        self._running = asyncio.create_task(self.worker.run(), name="grctl-kafkaenv-worker")
        await self.worker.wait_until_ready(READY_TIMEOUT_S)
        self.client = Client(self.connection)

    async def stop(self) -> None:
        """Stop the client and the worker; delete the namespace if this environment made it."""
        if self._running is not None:
            await self.client.close()
            await self.worker.stop(shutdown_timeout=5.0)
            await self._running
            self._running = None
        if hasattr(self, "connection"):
            conn = self.connection
            await conn.close()
            if self._own_namespace:  # keep the broker small: one namespace per test adds up
                admin = admin_client(conn.client_config())
                await asyncio.get_running_loop().run_in_executor(None, delete_namespace, admin, conn.topics)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def now(self) -> datetime:
        """The real time."""
        return datetime.now(UTC)

    async def sleep(self, duration: timedelta | float) -> None:
        """Sleep for real (a broker's time does not skip)."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        if seconds < 0:
            raise InvalidArgumentError(f"env.sleep() takes a duration >= 0, got {duration!r}", argument="duration")
        await asyncio.sleep(seconds)

    async def history(self, wf_id: str, run_id: str | None = None) -> list[HistoryEvent]:
        """The history of the latest run of `wf_id` (or of `run_id`)."""
        return await self.client.get_history(wf_id, run_id)

    def crash_next_step(self) -> None:
        """Not on a broker: crash a worker process instead."""
        raise NotImplementedError(
            "crash_next_step() is the in-process environment's (grctl_env): on a broker, kill a worker "
            "process and start another one on the same state folder"
        )
