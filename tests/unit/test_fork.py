"""`grctl._fork`: the pid guard, and what a forked child keeps (the broker test is tests/kafka/test_fork_safety.py)."""

from __future__ import annotations

import gc
import os
import warnings

import pytest

from grctl._fork import ForkGuard, keep_in_forked_children
from grctl.errors import ForkedProcessError, GrctlError


def test_the_guard_passes_in_its_process_and_names_both_processes_otherwise() -> None:
    guard = ForkGuard("Client")
    guard.check()
    guard.created_pid = os.getpid() + 1  # as if made in a parent process
    with pytest.raises(ForkedProcessError, match=r"create the Client after the fork") as info:
        guard.check()
    exc = info.value
    assert (exc.what, exc.created_pid, exc.used_pid) == ("Client", os.getpid() + 1, os.getpid())
    assert isinstance(exc, GrctlError) and isinstance(exc, RuntimeError)


class Handle:
    """Stands for a librdkafka handle: what matters is whether the child ever destroys it."""

    destroyed_in: list[int] = []

    def __del__(self) -> None:
        Handle.destroyed_in.append(os.getpid())


class Owner:
    pass


def test_a_forked_child_never_destroys_registered_handles() -> None:
    owner = Owner()
    handles = [Handle(), Handle()]
    keep_in_forked_children(owner, *handles)
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a multi-threaded process
        pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            del owner
            handles.clear()
            gc.collect()
            os.write(write, str(len(Handle.destroyed_in)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        destroyed_in_child = pipe.read()
    os.waitpid(pid, 0)
    assert destroyed_in_child == "0"
    del owner  # in this (the parent) process the registration goes with its owner
    handles.clear()
    assert Handle.destroyed_in == [os.getpid(), os.getpid()]
