"""The remote task a suspended step waits for: the run record's part of it (docs/remote-tasks.md).

A model rather than an engine record because a step builds it (`Context.remote_task`) and the
authoring package may import models, not the engine.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["RemoteTask"]


class RemoteTask(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The remote task a suspended step waits for (`RunRecord.remote`): one at a time per run.

    `task_id` names the call inside the run (`<seq>.<position>`: the step's number and the
    call's journal position); `attempt` is the attempt the run accepts an answer for (fencing).
    Times are epoch ms; `due_ms` is the armed durable timer (a timeout of the attempt, or the end
    of a retry back-off when `backoff` is set).
    """

    task_id: str
    name: str
    queue: str
    position: int
    attempt: int = 1
    payload: Any = None
    retry: dict[str, Any] | None = None
    schedule_to_start_ms: int | None = None
    start_to_close_ms: int | None = None
    heartbeat_ms: int | None = None
    scheduled_ms: int = 0
    started_ms: int | None = None
    heartbeat_at_ms: int | None = None
    details: Any = None
    due_ms: int | None = None
    backoff: bool = False
    worker: str = ""
