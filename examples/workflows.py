"""The demo's workflows, in a module that only defines them (no worker, no client, no Kafka).

`examples.demo` runs them with a worker and a client in one process; `examples.demo_worker`
serves them from a worker process of its own; a web app that starts them, a test or the
replayer can import this module without loading the engine (`tests/unit/test_layering.py`
checks that it loads neither the worker, RocksDB nor the Kafka client).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from grctl import ChildOutcome, Context, Directive, RetryPolicy, Workflow, task

# --------------------------------------------------------------------------------------------
# Order: three steps that hand typed data to each other through the run's store.

order = Workflow(workflow_type="Order")


@dataclass
class Order:
    """What the first step stores; the later steps read it back as an Order."""

    order_id: str
    items: list[str]
    unit_price: float
    received_at: datetime


@order.start()
async def receive(ctx: Context, order_id: str, items: list[str], unit_price: float) -> Directive:
    # ctx.now() is recorded in the run's journal: a re-executed step gets the same time back.
    ctx.store.put("order", Order(order_id, items, unit_price, received_at=await ctx.now()))
    ctx.logger.info("order %s received: %d item(s)", order_id, len(items))
    return ctx.next.step(price)


_quote_attempts: dict[str, int] = {}


@task(retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=50, backoff_multiplier=2.0))
async def quote(order_id: str, items: int, unit_price: float) -> float:
    """A side effect with retries: the pricing service fails the first call of every order."""
    _quote_attempts[order_id] = _quote_attempts.get(order_id, 0) + 1
    if _quote_attempts[order_id] == 1:
        raise ConnectionError(f"pricing service busy for {order_id}")
    return round(items * unit_price, 2)


@order.step()
async def price(ctx: Context) -> Directive:
    received = await ctx.store.get("order", Order)  # typed get: a dataclass again
    # The task's outcome is journaled: a re-executed step gets it back without calling again.
    total = await quote(received.order_id, len(received.items), received.unit_price)
    ctx.store.put("total", total)
    ctx.logger.info("order %s priced at %.2f", received.order_id, total)
    return ctx.next.step(ship)


@order.step()
async def ship(ctx: Context) -> Directive:
    received = await ctx.store.get("order", Order)
    total = await ctx.store.get("total", float)
    elapsed_ms = (await ctx.now() - received.received_at).total_seconds() * 1000
    ctx.logger.info("order %s shipped %.0f ms after it arrived", received.order_id, elapsed_ms)
    return ctx.next.complete({"order": received.order_id, "total": total, "status": "shipped"})


# --------------------------------------------------------------------------------------------
# Approval: waits durably for an event.

approval = Workflow(workflow_type="Approval")


@approval.start()
async def request(ctx: Context, document: str) -> Directive:
    ctx.store.put("document", document)
    ctx.logger.info("approval of %r requested", document)
    # A durable timer: without an `approve` event within 60 s the run fails with a timeout.
    return ctx.next.wait(timeout=timedelta(seconds=60))


@approval.event()
async def approve(ctx: Context, approver: str) -> Directive:
    document = await ctx.store.get("document", str)
    ctx.logger.info("%r approved by %s", document, approver)
    return ctx.next.complete(f"{document} approved by {approver}")


# --------------------------------------------------------------------------------------------
# Batch: a parent that fans out one child Order per line and collects their outcomes.

batch = Workflow(workflow_type="Batch")


@batch.start()
async def split(ctx: Context, lines: list[list[str]]) -> Directive:
    # Each child start is committed with this step's journal: a re-executed step starts none twice.
    for n, items in enumerate(lines, start=1):
        child_input = {"order_id": f"{ctx.run.wf_id}/{n}", "items": items, "unit_price": 2.0}
        await ctx.start_child("Order", f"{ctx.run.wf_id}-line-{n}", child_input, on_completed_step=collect)
    ctx.store.put("expected", len(lines))
    ctx.store.put("totals", [])
    ctx.logger.info("batch of %d orders started", len(lines))
    return ctx.next.wait()


@batch.step()
async def collect(ctx: Context, outcome: ChildOutcome) -> Directive:
    totals = await ctx.store.get("totals", list[float])
    totals.append(outcome.unwrap()["total"] if outcome.ok else 0.0)
    ctx.store.put("totals", totals)
    if len(totals) < await ctx.store.get("expected", int):
        return ctx.next.wait()  # more children to come
    ctx.logger.info("batch complete: %d orders, %.2f in all", len(totals), sum(totals))
    return ctx.next.complete({"orders": len(totals), "total": sum(totals)})


#: Every worker of a namespace serves the same types: `examples.demo_worker` imports this list.
WORKFLOWS = [order, approval, batch]
