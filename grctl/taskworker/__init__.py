"""Task workers: run the remote tasks of workflows (`ctx.remote_task`) in processes of their own.

A `TaskWorker` consumes one queue's topic (`grctl.<namespace>.tasks.<queue>`) in a consumer
group of its own, runs each request by its handler, and writes the answer to the run's
partition of `directives`, where the owning engine worker applies it exactly once. The records
are JSON (docs/remote-tasks.md): a worker in any language can do the same.

May import: errors, defaults, settings, models, codec, kafka, logging_setup.
"""

from __future__ import annotations

from grctl.taskworker.worker import NonRetryableError, TaskContext, TaskWorker, TaskWorkerStats

__all__ = ["NonRetryableError", "TaskContext", "TaskWorker", "TaskWorkerStats"]
