"""`grctl._fork`: the pid guard, and what a forked child keeps (the broker test is tests/kafka/test_fork_safety.py)."""

from __future__ import annotations

import gc
import os
import warnings

import pytest
from confluent_kafka import Producer

from grctl._fork import ForkGuard
from grctl.errors import ForkedProcessError, GrctlError

UNUSED_BROKER = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}
"""A handle that never needs a broker: it is made and destroyed, nothing is sent."""


def test_the_guard_passes_in_its_process_and_names_both_processes_otherwise() -> None:
    guard = ForkGuard("Client")
    guard.check()
    guard.created_pid = os.getpid() + 1  # as if made in a parent process
    with pytest.raises(ForkedProcessError, match=r"create the Client after the fork") as info:
        guard.check()
    exc = info.value
    assert (exc.what, exc.created_pid, exc.used_pid) == ("Client", os.getpid() + 1, os.getpid())
    assert isinstance(exc, GrctlError) and isinstance(exc, RuntimeError)


class TracedProducer(Producer):
    """A real librdkafka handle that tells which process destroyed it."""

    destroyed_in: list[int] = []

    def __del__(self) -> None:
        TracedProducer.destroyed_in.append(os.getpid())


class Cycle:
    """Holds a handle in a reference cycle, as a stopped client or worker session may."""

    def __init__(self) -> None:
        self.me = self
        self.producer = TracedProducer(UNUSED_BROKER)


def test_a_forked_child_never_destroys_the_parents_handles() -> None:
    live = TracedProducer(UNUSED_BROKER)
    gc.disable()  # keep the cycle uncollected until the fork
    try:
        Cycle()  # garbage now, collected only by a garbage collection
        read, write = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a multi-threaded process
            pid = os.fork()
    finally:
        gc.enable()
    if pid == 0:
        try:
            os.close(read)
            del live
            gc.collect()
            os.write(write, str(len(TracedProducer.destroyed_in)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        destroyed_in_child = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and destroyed_in_child == "0"
    del live
    gc.collect()
    assert TracedProducer.destroyed_in == [os.getpid(), os.getpid()]  # the parent releases them as usual
