"""The worker's internal control-flow error (not part of the public error tree)."""

from __future__ import annotations


class SessionRestart(Exception):
    """The session must be torn down and started again (transaction failure, lost partitions).

    Raised by the session's parts and caught by `Worker.run`, which starts a new session after
    a back-off; everything uncommitted is dropped, and the new session rebuilds from RocksDB
    (committed state only) and the changelog.
    """
