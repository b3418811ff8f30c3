"""Workflow code for the version tests (issue 26): one order flow and its mutations.

`order_code(mutation)` builds the `VerOrder` flow (with its child type) as it was recorded
(`mutation=""`) or changed in one way. The CLI tests load them as `--app
tests.scenarios.versions_code:<NAME>` (the module-level lists at the end).

The recorded flow: start (ctx.now, store) -> pack (task charge, ctx.sleep, ctx.random) ->
ship (a child VerLabel, awaited) -> wait for event approve -> complete.
"""

from __future__ import annotations

from datetime import timedelta

from grctl import Context, Directive, Workflow
from grctl.worker import task

#: Mutations the replayer must report (each changes what a recorded execution did).
UNSAFE = (
    "insert_step",
    "delete_step",
    "reorder_steps",
    "rename_task",
    "task_args",
    "now_before",
    "random_before",
    "sleep_before",
    "rename_event",
    "child_type",
)
#: Changes that are safe without a version (no finding on any recorded run).
SAFE = ("", "logging", "result_changed")
#: Changes safe for runs waiting for the event, not for runs that already passed there.
SAFE_AHEAD = ("step_after_event",)

SLEEP = timedelta(milliseconds=50)


@task
async def charge(amount: int) -> int:
    return amount * 2


@task
async def charge_card(amount: int) -> int:
    return amount * 2


def order_code(mutation: str = "") -> list[Workflow]:
    """The order flow (and its child type) with one mutation ("" for the recorded code)."""
    m = mutation
    wf = Workflow(workflow_type="VerOrder")
    label_type = "VerTag" if m == "child_type" else "VerLabel"
    label = Workflow(workflow_type=label_type)

    @label.start()
    async def label_start(ctx: Context, order: str) -> Directive:
        return ctx.next.complete(f"label-{order}")

    @wf.start()
    async def start(ctx: Context, amount: int) -> Directive:
        now = await ctx.now()
        ctx.store.put("amount", amount)
        ctx.store.put("t", now.isoformat())
        if m == "logging":
            ctx.logger.info("order %s started", ctx.run.wf_id)
        first = {"insert_step": audit, "delete_step": ship, "reorder_steps": ship}.get(m, pack)
        return ctx.next.step(first)

    @wf.step()
    async def audit(ctx: Context) -> Directive:
        return ctx.next.step(pack)

    @wf.step()
    async def pack(ctx: Context) -> Directive:
        amount = await ctx.store.get("amount")
        if m == "now_before":
            await ctx.now()
        if m == "random_before":
            await ctx.random()
        if m == "sleep_before":
            await ctx.sleep(SLEEP)
        if m == "rename_task":
            charged = await charge_card(amount)
        elif m == "task_args":
            charged = await charge(amount + 1)
        else:
            charged = await charge(amount)
        await ctx.sleep(SLEEP)
        ctx.store.put("charged", charged)
        ctx.store.put("luck", await ctx.random())
        return ctx.next.wait(timedelta(minutes=5)) if m == "reorder_steps" else ctx.next.step(ship)

    @wf.step()
    async def ship(ctx: Context) -> Directive:
        child = await ctx.start_child(label_type, f"{ctx.run.wf_id}-label", {"order": ctx.run.wf_id})
        ctx.store.put("label", await child.future)
        if m == "reorder_steps":
            return ctx.next.step(pack)
        return ctx.next.wait(timedelta(minutes=5))

    async def approve(ctx: Context, by: str) -> Directive:
        if m == "step_after_event":
            ctx.store.put("by", by)
            return ctx.next.step(gift)
        charged = await ctx.store.get("charged")
        result = {"by": by, "charged": charged, "label": await ctx.store.get("label")}
        if m == "result_changed":
            result["note"] = "thanks"
        return ctx.next.complete(result)

    approve.__name__ = "accept" if m == "rename_event" else "approve"
    wf.event()(approve)

    @wf.step()
    async def gift(ctx: Context) -> Directive:
        return ctx.next.complete({"by": await ctx.store.get("by"), "gift": True})

    return [wf, label]


RECORDED = order_code()
RENAMED_EVENT = order_code("rename_event")
NOW_BEFORE = order_code("now_before")
