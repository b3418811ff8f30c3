"""A worker process serving the demo's workflows until SIGTERM or SIGINT.

What ``deploy/`` and ``docker-compose.yml`` run (until ``grctl worker`` exists)::

    GRCTL_KAFKA_SERVERS=127.0.0.1:9092 GRCTL_NAMESPACE=demo python -m examples.demo_worker

Environment:
    GRCTL_KAFKA_SERVERS: bootstrap servers (default 127.0.0.1:9092).
    GRCTL_NAMESPACE: the grctl namespace (default "default"); created if missing, with
        GRCTL_PARTITIONS partitions (default 12).
    GRCTL_STATE_DIR: root of the local RocksDB state (default ~/.cache/grctl/state). Keep it on
        a persistent volume: a restarted worker then restores only what changed.
    GRCTL_SHUTDOWN_TIMEOUT: seconds running steps get to finish after SIGTERM (default 20);
        keep it below the orchestrator's grace period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from examples.workflows import WORKFLOWS
from grctl import Connection, Worker
from grctl.kafka.topics import DEFAULT_PARTITIONS
from grctl.logging_setup import setup_logging

logger = logging.getLogger("examples.demo_worker")


async def main() -> None:
    """Connect, serve until a signal arrives, then stop gracefully."""
    shutdown_timeout = float(os.environ.get("GRCTL_SHUTDOWN_TIMEOUT", "20"))
    conn = await Connection.connect(partitions=int(os.environ.get("GRCTL_PARTITIONS", DEFAULT_PARTITIONS)))
    worker = Worker(WORKFLOWS, conn)
    stopping: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        logger.info("%s: stopping (running steps get %.0f s to finish)", sig.name, shutdown_timeout)
        stopping.append(asyncio.create_task(worker.stop(shutdown_timeout=shutdown_timeout)))

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    types = [wf.workflow_type for wf in WORKFLOWS]
    logger.info("serving %s on namespace %r at %s", types, conn.namespace, conn.servers)
    await worker.run()
    await asyncio.gather(*stopping)


if __name__ == "__main__":
    setup_logging()
    asyncio.run(main())
