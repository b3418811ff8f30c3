"""Events and timers: an expense waits up to 3 days for a decision (`python docs/examples/approval.py`)."""

import asyncio

from grctl import Client, Connection, Worker

# --8<-- [start:workflow]
from datetime import timedelta

from grctl import Context, Directive, Workflow

expense = Workflow(workflow_type="Expense")


@expense.start()
async def submit(ctx: Context, amount: float, by: str) -> Directive:
    ctx.store.put("amount", amount)
    ctx.store.put("status", "waiting for a decision")
    # Durable: the run waits in Kafka, not in memory; after 3 days `escalate` runs instead.
    return ctx.next.wait(timeout=timedelta(days=3), on_timeout=escalate)


@expense.event()
async def approve(ctx: Context, approver: str) -> Directive:
    ctx.store.put("approver", approver)
    ctx.store.put("status", "approved, paying tomorrow")
    return ctx.next.step(pay)


@expense.event()
async def reject(ctx: Context, reason: str) -> Directive:
    return ctx.next.complete({"paid": False, "reason": reason})


@expense.step(timeout=timedelta(days=2))  # the step may take longer than its sleep
async def pay(ctx: Context) -> Directive:
    await ctx.sleep(timedelta(days=1))  # journaled: a restarted worker waits only what remains
    paid_at = await ctx.now()
    return ctx.next.complete({"paid": True, "approver": await ctx.store.get("approver"), "at": paid_at.isoformat()})


@expense.step()
async def escalate(ctx: Context) -> Directive:
    return ctx.next.complete({"paid": False, "reason": "no decision within 3 days"})


@expense.query()
async def status(ctx) -> str:
    return await ctx.store.get("status")


# --8<-- [end:workflow]


async def main() -> None:
    conn = await Connection.connect()
    worker = Worker([expense], conn)
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(30)
    # --8<-- [start:client]
    async with Client(conn) as client:
        handle = await client.start_workflow("Expense", "expense-7", {"amount": 42.0, "by": "ada"})
        print(await handle.query("status"))  # waiting for a decision
        await handle.send("reject", {"reason": "not a business expense"})
        print(await handle.result())  # {'paid': False, 'reason': 'not a business expense'}
    # --8<-- [end:client]
    await worker.stop()
    await running


if __name__ == "__main__":
    asyncio.run(main())
