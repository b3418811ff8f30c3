"""Deploying a new version: old runs finish on old code (`python docs/examples/versions.py`)."""

import asyncio

from grctl import Client, Connection, Worker

# --8<-- [start:versions]
from grctl import Context, Directive, Workflow

invoice_v1 = Workflow(workflow_type="Invoice")  # version=1 by default


@invoice_v1.start()
async def start_v1(ctx: Context, customer: str) -> Directive:
    ctx.store.put("customer", customer)
    return ctx.next.wait()


@invoice_v1.event()
async def approve(ctx: Context) -> Directive:
    return ctx.next.step(send)


@invoice_v1.step()
async def send(ctx: Context) -> Directive:
    return ctx.next.complete(f"emailed to {await ctx.store.get('customer')}")


invoice_v2 = Workflow(workflow_type="Invoice", version=2)  # renames 'send' to 'deliver'


@invoice_v2.start()
async def start_v2(ctx: Context, customer: str) -> Directive:
    ctx.store.put("customer", customer)
    return ctx.next.wait()


@invoice_v2.event(name="approve")
async def approve_v2(ctx: Context) -> Directive:
    return ctx.next.step(deliver)


@invoice_v2.step()
async def deliver(ctx: Context) -> Directive:
    return ctx.next.complete(f"uploaded to the portal of {await ctx.store.get('customer')}")


WORKFLOWS = [invoice_v1, invoice_v2]  # serve both until `grctl workflow versions` says v1 has 0 runs open
# --8<-- [end:versions]

# --8<-- [start:patch]
receipt = Workflow(workflow_type="Receipt", upgrade="auto")  # runs move to the newest served version


@receipt.start()
async def start_receipt(ctx: Context, phone: str, email: str) -> Directive:
    if ctx.patched("sms-receipt"):  # True for a run reaching here on the new code
        channel = f"sms to {phone}"
    else:  # a run that already passed here before the change
        channel = f"mail to {email}"
    return ctx.next.complete(channel)


# --8<-- [end:patch]


async def main() -> None:
    conn = await Connection.connect()
    worker = Worker([*WORKFLOWS, receipt], conn)
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(30)
    # --8<-- [start:client]
    async with Client(conn) as client:
        old = await client.start_workflow("Invoice", "inv-1", {"customer": "ada"}, version=1)
        new = await client.start_workflow("Invoice", "inv-2", {"customer": "bob"})  # the newest: v2
        for handle in (old, new):
            await handle.send("approve")
            print(handle.run_info.version, await handle.result())
        # 1 emailed to ada
        # 2 uploaded to the portal of bob
        print(await client.run_workflow("Receipt", "r-1", {"phone": "+1 555", "email": "c@example.com"}))
    # --8<-- [end:client]
    await worker.stop()
    await running


if __name__ == "__main__":
    asyncio.run(main())
