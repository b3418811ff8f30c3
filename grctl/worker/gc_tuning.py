"""A running worker's garbage collector (issue 32: a cheaper step, a flatter tail).

A step allocates a few dozen container objects (its task, context, store view, outcome,
transition, records) that reference counting frees when the step ends. With Python's default
thresholds (700, 10, 10) the cyclic collector still runs a young collection every few steps and
walks every object alive at that moment: the steps in flight, the processors' caches. Measured
on the in-process chain (`python -m benchmarks.step_cost`): 18 µs of collections per step, over
a quarter of the step, and full collections of tens of ms that show in the tail.

While at least one `Worker` runs, `tune()`:

1. freezes what the process holds when the first worker starts (modules, classes, functions,
   the workflow definitions: `gc.freeze()`): the collector never walks them again;
2. raises the thresholds to `THRESHOLDS`: a young collection per 50,000 net allocations, an
   older one per 20 of those, a full one per 100 of the older ones (and, as Python does, only
   when it would look at a quarter more objects than the last full one).

Cyclic garbage still goes, later (it is rare in the engine: its records are acyclic). The last
worker to stop puts the process's thresholds back and unfreezes. GRCTL_GC=python leaves the
collector alone (`grctl.settings.gc_mode`).
"""

from __future__ import annotations

import gc
import logging
import threading

from grctl import settings

logger = logging.getLogger(__name__)

#: (young, older, full) collection thresholds while a worker runs.
THRESHOLDS = (50_000, 20, 100)

_lock = threading.Lock()
_users = 0
_saved: tuple[int, int, int] | None = None


def tune() -> bool:
    """Tune the collector for a worker that starts (GRCTL_GC, default "tuned").

    Returns:
        True if this call took a share of the tuning: pass it back to `untune` when the worker stops.

    Raises:
        InvalidArgumentError: GRCTL_GC has a value that is neither "tuned" nor "python".
    """
    if settings.gc_mode() != "tuned":
        return False
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(*THRESHOLDS)
            logger.debug("garbage collector tuned: %d objects frozen, thresholds %s", gc.get_freeze_count(), THRESHOLDS)
        _users += 1
    return True


def untune(tuned: bool) -> None:
    """The worker that called `tune` stopped: the last one puts Python's settings back."""
    if not tuned:
        return
    global _users, _saved
    with _lock:
        _users -= 1
        if _users == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            gc.unfreeze()
            _saved = None
