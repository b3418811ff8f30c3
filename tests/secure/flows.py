"""The workflow of the secured-cluster tests (also served by `grctl worker --app tests.secure.flows:WORKFLOWS`)."""

from __future__ import annotations

from grctl import Context, Directive, Workflow

greet = Workflow(workflow_type="SecureGreet")


@greet.start()
async def greet_start(ctx: Context, name: str) -> Directive:
    ctx.store.put("greeted", name)
    return ctx.next.wait()


@greet.event("approve")
async def greet_approve(ctx: Context, by: str) -> Directive:
    name = await ctx.store.get("greeted")
    return ctx.next.complete(f"hello {name}, approved by {by}")


WORKFLOWS = [greet]
