"""Small workflows for the CLI tests (served by `grctl worker --app tests.cli.flows:WORKFLOWS`)."""

from __future__ import annotations

from datetime import timedelta

from grctl import Context, Directive, Workflow
from grctl.worker.context import QueryContext

echo = Workflow(workflow_type="CliEcho")


@echo.start()
async def echo_start(ctx: Context, value: object = None) -> Directive:
    return ctx.next.complete({"echo": value})


failing = Workflow(workflow_type="CliFail")


@failing.start()
async def failing_start(ctx: Context, reason: str = "boom") -> Directive:
    return ctx.next.fail(reason)


waiter = Workflow(workflow_type="CliWait")


@waiter.start()
async def waiter_start(ctx: Context, label: str = "waiter") -> Directive:
    ctx.store.put("label", label)
    return ctx.next.wait(timeout=timedelta(minutes=5))


@waiter.query()
async def label(ctx: QueryContext, suffix: str = "") -> str:
    return await ctx.store.get("label", str) + suffix


@waiter.event()
async def go(ctx: Context, value: object = None) -> Directive:
    return ctx.next.complete({"got": value})


WORKFLOWS = [echo, failing, waiter]
