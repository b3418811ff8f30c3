"""Fork safety: librdkafka clients do not survive `fork()`.

A forked child has a copy of every librdkafka handle of its parent, but none of the threads
behind them. Two things follow:

1. Using a `Client` (or running a `Worker`) made before the fork cannot work in the child:
   `ForkGuard.check` raises `ForkedProcessError` instead of hanging or corrupting the
   parent's connections.
2. Destroying a copied handle in the child (when its Python object is garbage collected, or
   at the child's exit) runs librdkafka's teardown against threads and sockets that are not
   the child's; processes have crashed there. So the handles of live clients are registered
   here (`keep_in_forked_children`), and a child keeps a reference to each of them that it
   never releases: they are never destroyed in the child.

Imports nothing of grctl but `grctl.errors`.
"""

from __future__ import annotations

import os
import threading
import weakref

from grctl.errors import ForkedProcessError

__all__ = ["ForkGuard", "keep_in_forked_children"]


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


_live: weakref.WeakKeyDictionary[object, tuple[object, ...]] = weakref.WeakKeyDictionary()
_live_lock = threading.Lock()


def keep_in_forked_children(owner: object, *handles: object) -> None:
    """Register librdkafka handles (Producer, Consumer, AdminClient) of a live object.

    While `owner` lives, a process forked from this one never destroys `handles`. The entry
    goes away with `owner`.

    Args:
        owner: the object holding the handles (weakly referenced).
        handles: the handles.
    """
    with _live_lock:
        _live[owner] = handles


def _after_fork_in_child() -> None:
    # The child has one thread (this one), so the lock may have been copied held: replace it.
    global _live_lock
    _live_lock = threading.Lock()
    handles = [handle for owned in _live.values() for handle in owned]
    _live.clear()
    if handles:
        import ctypes  # only here: 5 ms of import that most processes never need

        for handle in handles:
            # One reference the child never gives back: neither the garbage collector nor
            # the module teardown at interpreter exit can bring the count to zero.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(handle))


os.register_at_fork(after_in_child=_after_fork_in_child)
