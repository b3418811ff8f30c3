"""Two versions of workflow code for the rolling-deploy test (issue 26), served by ``grctl worker --app``.

`Deal` (pinned): v1 starts by the input's `kind` into one of four paths (wait for the event
`confirm`, a durable sleep, a chain of sleeping links, an awaited child) that all end in
`settle`. v2 renames `settle` to `close` (which calls a new task, `audit`) and removes the event
handler `remark`. A run ends with `{"version": N, ...}` of the code it started on.

`Memo` (`upgrade="auto"`): waits for `note`; v2's `note` handler takes the patch `memo-stamp`.
A v1 run noted after the deploy moves to v2 at that step and ends with `filed_on: 2` and the
stamp.

The `--app` attributes: `V1` (the old code), `V1V2` (both, the deploy), `V2` (the new code only).
"""

from __future__ import annotations

from datetime import timedelta

from grctl import Context, Directive, Workflow, task

#: The durable sleep of the `sleep` path and of each chain link, and a child's.
NAP = timedelta(seconds=20)
LINK = timedelta(seconds=2)
LINKS = 5
CHILD_NAP = timedelta(seconds=4)
WAIT = timedelta(minutes=15)
#: A decorated step times out after 10 s by default; a journaled sleep inside one lasts longer.
STEP_TIMEOUT = timedelta(minutes=2)


@task
async def audit(wf_id: str) -> str:
    return f"audited:{wf_id}"


def deal(version: int) -> Workflow:
    wf = Workflow(workflow_type="Deal", version=version)

    def last() -> object:
        return settle if version == 1 else close  # the step every path ends in

    async def trail(ctx: Context, mark: str) -> list[str]:
        marks = [*(await ctx.store.get("trail") or []), mark]
        ctx.store.put("trail", marks)
        return marks

    @wf.start()
    async def start(ctx: Context, kind: str) -> Directive:
        await trail(ctx, f"start@v{version}")
        if kind == "event":
            return ctx.next.wait(WAIT)
        if kind == "sleep":
            return ctx.next.step(nap)
        if kind == "chain":
            ctx.store.put("left", LINKS)
            return ctx.next.step(link)
        return ctx.next.step(spawn)

    @wf.event()
    async def confirm(ctx: Context, by: str) -> Directive:
        await trail(ctx, f"confirm:{by}")
        return ctx.next.step(last())

    @wf.step(timeout=STEP_TIMEOUT)
    async def nap(ctx: Context) -> Directive:
        await ctx.sleep(NAP)
        await trail(ctx, "nap")
        return ctx.next.step(last())

    @wf.step(timeout=STEP_TIMEOUT)
    async def link(ctx: Context) -> Directive:
        left = await ctx.store.get("left")
        await ctx.sleep(LINK)
        await trail(ctx, f"link{left}")
        if left > 1:
            ctx.store.put("left", left - 1)
            return ctx.next.step(link)
        return ctx.next.step(last())

    @wf.step()
    async def spawn(ctx: Context) -> Directive:
        child = await ctx.start_child("DealChild", f"{ctx.run.wf_id}-child", {"n": 21})
        await trail(ctx, f"child:{await child.future}")
        return ctx.next.step(last())

    if version == 1:

        @wf.event()
        async def remark(ctx: Context, text: str) -> Directive:
            await trail(ctx, f"remark:{text}")
            return ctx.next.wait(WAIT)

        @wf.step()
        async def settle(ctx: Context) -> Directive:
            return ctx.next.complete({"version": 1, "trail": await trail(ctx, "settle")})

    else:

        @wf.step()
        async def close(ctx: Context) -> Directive:
            checked = await audit(ctx.run.wf_id)
            return ctx.next.complete({"version": 2, "trail": await trail(ctx, "close"), "audit": checked})

    return wf


def memo(version: int) -> Workflow:
    wf = Workflow(workflow_type="Memo", version=version, upgrade="auto")

    @wf.start()
    async def start(ctx: Context) -> Directive:
        ctx.store.put("trail", [f"start@v{version}"])
        return ctx.next.wait(WAIT)

    @wf.event()
    async def note(ctx: Context, text: str) -> Directive:
        marks = [*await ctx.store.get("trail"), text]
        if version >= 2 and ctx.patched("memo-stamp"):
            marks.append("stamp")
        ctx.store.put("trail", marks)
        return ctx.next.step(file)

    @wf.step()
    async def file(ctx: Context) -> Directive:
        return ctx.next.complete({"trail": await ctx.store.get("trail"), "filed_on": version})

    return wf


child = Workflow(workflow_type="DealChild")


@child.start()
async def child_start(ctx: Context, n: int) -> Directive:
    await ctx.sleep(CHILD_NAP)
    return ctx.next.complete(n * 2)


V1 = [deal(1), memo(1), child]
V1V2 = [deal(1), deal(2), memo(1), memo(2), child]
V2 = [deal(2), memo(2), child]
