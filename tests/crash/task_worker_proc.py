"""A task worker process for the remote-task crash test: answers queue "crash" until SIGTERM (or SIGKILL).

Every execution of a task appends `<idempotency key> <attempt>` to the file named by
`--executions` (one line per execution: the test counts them, executions are at least once).

Run: python -m tests.crash.task_worker_proc --servers HOST:PORT --namespace NS --executions FILE
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sys
from typing import Any

from grctl import Connection
from grctl.taskworker import TaskContext, TaskWorker


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--executions", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    log = open(args.executions, "a", buffering=1)  # noqa: SIM115  # one line per execution, flushed

    async def add(payload: dict[str, Any], task: TaskContext) -> int:
        log.write(f"{task.idempotency_key} {task.attempt}\n")
        await asyncio.sleep(random.uniform(0.0, 0.05))  # a task in flight when a SIGKILL comes
        return int(payload["value"]) + int(payload["add"])

    conn = await Connection.connect(args.servers, args.namespace)
    # A killed member's partitions move after its session times out: keep that short here.
    consumer = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
    worker = TaskWorker([add], conn, queue="crash", concurrency=32, kafka_config={"consumer": consumer})
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
