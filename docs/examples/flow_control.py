"""Flow control: a payments API at 20 calls in flight and 50/s, fair across tenants.

Run: `python docs/examples/flow_control.py`.
"""

import asyncio

from grctl import Client, Connection, Worker

# --8<-- [start:workflow]
from grctl import Context, Directive, Limit, Limiter, Workflow, task

# The API allows 20 calls in flight and 50 per second; one customer at most 2 at once.
PAYMENTS_API = Limiter("payments-api", concurrency=20, rate="50/s", per_key=Limit(concurrency=2))

payments = Workflow(workflow_type="Payment")


@task
async def charge(customer: str, cents: int) -> str:
    return f"receipt-{customer}-{cents}"  # the call to the payments API


@payments.start()
async def start(ctx: Context, tenant: str, customer: str, cents: int) -> Directive:
    # Waits durably for a permit (tenants are served in turn), holds it while the section runs,
    # and gives it back with the step's outcome, whatever happens to the worker meanwhile.
    async with ctx.limit("payments-api", key=customer, fairness=tenant):
        receipt = await charge(customer, cents)
    return ctx.next.complete(receipt)


# --8<-- [end:workflow]


async def main() -> None:
    conn = await Connection.connect()
    # --8<-- [start:run]
    worker = Worker([payments], conn, limiters=[PAYMENTS_API])  # creates the limiter (or applies a changed one)
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(30)
    async with Client(conn) as client:
        orders = [("acme", "c-1", 500), ("acme", "c-2", 700), ("tiny-shop", "c-9", 300)]
        handles = [
            await client.start_workflow("Payment", f"pay-{customer}", {"tenant": t, "customer": customer, "cents": c})
            for t, customer, c in orders
        ]
        for h in handles:
            print(await h.result())
        api = await client.describe_limiter("payments-api")
        print(f"{api.name}: {api.spec.describe()}; granted {api.granted}, in use {api.in_use}")
    await worker.stop()
    await running
    # --8<-- [end:run]


if __name__ == "__main__":
    asyncio.run(main())
