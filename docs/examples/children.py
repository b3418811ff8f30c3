"""Child workflows: an order ships each parcel as a run of its own (`python docs/examples/children.py`)."""

import asyncio

from grctl import Client, Connection, Worker

# --8<-- [start:workflow]
from grctl import ChildOutcome, Context, Directive, Workflow

parcel = Workflow(workflow_type="Parcel")


@parcel.start()
async def ship(ctx: Context, order: str, item: str) -> Directive:
    await ctx.send_to_parent("shipped", {"item": item})  # an event for the parent run
    return ctx.next.complete(f"{item}: tracking {order}-{item}")


order = Workflow(workflow_type="Order")


@order.start()
async def start(ctx: Context, order_id: str, items: list[str]) -> Directive:
    # One child, awaited inside the step (its outcome is kept: a re-execution does not start it again):
    label = await ctx.run_child("Parcel", f"{order_id}-label", {"order": order_id, "item": "label"})
    ctx.store.put("label", label)
    # Several children at once; each outcome comes back to a step of its own:
    for item in items:
        await ctx.start_child("Parcel", f"{order_id}-{item}", {"order": order_id, "item": item},
                              on_completed_step=parcel_done)  # fmt: skip
    ctx.store.put("open", len(items))
    return ctx.next.wait()


@order.event()
async def shipped(ctx: Context, item: str) -> Directive:
    return ctx.next.wait()  # the children's events; their outcomes follow


@order.step()
async def parcel_done(ctx: Context, outcome: ChildOutcome[str]) -> Directive:
    done = [*(await ctx.store.get("done") or []), outcome.result]  # a missing key reads as None
    ctx.store.put("done", done)
    if len(done) < await ctx.store.get("open", int):
        return ctx.next.wait()
    return ctx.next.complete({"label": await ctx.store.get("label"), "parcels": sorted(done)})


# --8<-- [end:workflow]


async def main() -> None:
    conn = await Connection.connect()
    worker = Worker([order, parcel], conn)
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(30)
    # --8<-- [start:client]
    async with Client(conn) as client:
        print(await client.run_workflow("Order", "order-9", {"order_id": "A-9", "items": ["book", "pen"]}))
        # {'label': 'label: tracking A-9-label', 'parcels': ['book: tracking A-9-book', 'pen: tracking A-9-pen']}
    # --8<-- [end:client]
    await worker.stop()
    await running


if __name__ == "__main__":
    asyncio.run(main())
