"""Compatibility module (BEHAVIOUR.md §1.1): `@task` is authoring (`grctl.workflow.task`)."""

from grctl.workflow.task import RetryPolicy, RetryRunner, TaskExecutor, task

__all__ = ["RetryPolicy", "RetryRunner", "TaskExecutor", "task"]
