"""Fork safety (grctl._fork): a Client or Worker used in a forked child raises ForkedProcessError,
the child's garbage collection never destroys the parent's librdkafka handles, and the parent's
client keeps working."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import warnings
from pathlib import Path

import pytest
from ulid import ULID

from grctl import Client, Connection, Context, Directive, Worker, Workflow
from grctl.errors import ForkedProcessError

pytestmark = pytest.mark.kafka

CHILD_TIMEOUT_S = 30.0

echo = Workflow(workflow_type="ForkEcho")


@echo.start()
async def echo_start(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(n)


# Exit codes of the child: what went wrong there.
CHILD_OK = 0
CHILD_CLIENT_DID_NOT_RAISE = 10
CHILD_WORKER_DID_NOT_RAISE = 11
CHILD_WRONG_PIDS = 12
CHILD_CRASHED = 13


def in_child(client_box: list[Client], worker: Worker, parent_pid: int) -> int:
    """Runs in the forked child; returns its exit code."""
    loop = asyncio.new_event_loop()  # the parent's loop belongs to the parent
    try:
        try:
            loop.run_until_complete(client_box[0].get_history("fork-1", str(ULID())))
        except ForkedProcessError as exc:
            if (exc.what, exc.created_pid, exc.used_pid) != ("Client", parent_pid, os.getpid()):
                return CHILD_WRONG_PIDS
        else:
            return CHILD_CLIENT_DID_NOT_RAISE
        try:
            loop.run_until_complete(worker.run())
        except ForkedProcessError:
            pass
        else:
            return CHILD_WORKER_DID_NOT_RAISE
        client_box.clear()  # the child's last reference to the client and its Kafka handles
        gc.collect()
        return CHILD_OK
    except BaseException:
        return CHILD_CRASHED
    finally:
        loop.close()


async def wait_child(pid: int) -> int:
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        await asyncio.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child did not exit within {CHILD_TIMEOUT_S}s")


async def test_a_forked_child_cannot_use_the_parents_client(workers, connection: Connection, tmp_path: Path) -> None:
    client_box = [Client(connection)]
    client = client_box[0]
    try:
        assert await client.get_history("fork-0", str(ULID())) == []  # the client's Kafka handles exist
        worker = Worker([echo], connection, state_dir=tmp_path / "forked")
        parent_pid = os.getpid()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a multi-threaded process
            pid = os.fork()
        if pid == 0:
            os._exit(in_child(client_box, worker, parent_pid))  # never return into pytest in the child
        status = await wait_child(pid)
        assert os.WIFEXITED(status), f"the child was killed by signal {os.WTERMSIG(status)}"
        assert os.WEXITSTATUS(status) == CHILD_OK

        await workers.start([echo])
        assert await client.run_workflow("ForkEcho", "fork-parent", {"n": 5}) == 5
    finally:
        await client.close()
