"""Fork safety: librdkafka clients do not survive `fork()`.

A forked child has a copy of every librdkafka handle of its parent, but none of the threads
behind them. Two things follow:

1. Using a `Client` (or running a `Worker`) made before the fork cannot work in the child:
   `ForkGuard.check` raises `ForkedProcessError` instead of hanging or corrupting the
   parent's connections.
2. Destroying a copied handle in the child runs librdkafka's teardown against threads that
   are not there: the child crashes (SIGSEGV), typically in a garbage collection that meets a
   stopped client or worker session still waiting in a reference cycle. So right after a
   fork, the child takes one reference it never gives back on every confluent-kafka handle
   of the process (live or garbage): neither its garbage collector nor its exit destroys
   them. Finding them costs one walk of the objects the collector tracks, in the child only.

Imports nothing of grctl but `grctl.errors`; the hook is installed when this module is first
imported (by `grctl.client` or `grctl.worker`).
"""

from __future__ import annotations

import gc
import os
import sys

from grctl.errors import ForkedProcessError

__all__ = ["ForkGuard"]

_HANDLE_TYPES = ("Producer", "Consumer", "_AdminClientImpl")
"""Classes of `confluent_kafka.cimpl` that own a librdkafka handle (AdminClient subclasses the last)."""


class ForkGuard:
    """Remembers the process an object was made in.

    Args:
        what: what the guarded object is, for the error message ("Client", "Worker").
    """

    __slots__ = ("created_pid", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.created_pid = os.getpid()

    def check(self) -> None:
        """Raise if the current process is not the one the object was made in.

        Raises:
            ForkedProcessError: the object was made before this process was forked.
        """
        pid = os.getpid()
        if pid != self.created_pid:
            raise ForkedProcessError(self.what, created_pid=self.created_pid, used_pid=pid)


def _after_fork_in_child() -> None:
    cimpl = sys.modules.get("confluent_kafka.cimpl")
    if cimpl is None:
        return
    kinds = tuple(k for k in (getattr(cimpl, name, None) for name in _HANDLE_TYPES) if isinstance(k, type))
    handles = [obj for obj in gc.get_objects() if isinstance(obj, kinds)]
    if handles:
        import ctypes  # only here: 5 ms of import that most processes never need

        for handle in handles:
            # A reference the child never gives back: neither the garbage collector nor the
            # module teardown at interpreter exit can bring the count to zero.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(handle))


os.register_at_fork(after_in_child=_after_fork_in_child)
