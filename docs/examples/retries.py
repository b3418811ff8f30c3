"""Tasks and retries: a payment service that is busy at first (`python docs/examples/retries.py`)."""

import asyncio

from grctl import Client, Connection, Worker

# --8<-- [start:workflow]
from grctl import Context, Directive, RetryPolicy, Workflow, task

ATTEMPTS: dict[str, int] = {}  # stands in for a payment service that is busy twice


@task(retry_policy=RetryPolicy(max_attempts=5, initial_delay_ms=200, backoff_multiplier=2.0))
async def charge(order_id: str, amount: float) -> str:
    ATTEMPTS[order_id] = ATTEMPTS.get(order_id, 0) + 1
    if ATTEMPTS[order_id] < 3:
        raise ConnectionError(f"payment service busy for {order_id}")
    return f"receipt-{order_id}"


@task(retry_policy=RetryPolicy(max_attempts=3, non_retryable_errors=["ValueError"]))
async def reserve(item: str) -> int:
    if item == "unicorn":
        raise ValueError(f"{item} is not sold here")  # not retried: the step fails at once
    return 1


checkout = Workflow(workflow_type="Checkout")


@checkout.start()
async def start(ctx: Context, order_id: str, items: list[str]) -> Directive:
    reserved = [await reserve(item) for item in items]  # each result is journaled
    receipt = await charge(order_id, 9.5 * sum(reserved))  # a re-execution never charges twice
    return ctx.next.complete({"receipt": receipt, "items": len(reserved)})


# --8<-- [end:workflow]


async def main() -> None:
    conn = await Connection.connect()
    worker = Worker([checkout], conn)
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(30)
    # --8<-- [start:client]
    async with Client(conn) as client:
        print(await client.run_workflow("Checkout", "order-1", {"order_id": "A-1", "items": ["book", "pen"]}))
        attempts = [e for e in await client.get_history("order-1") if e.kind == "task.attempt_failed"]
        print(f"{len(attempts)} failed attempts before the receipt")  # 2 failed attempts ...
        try:
            await client.run_workflow("Checkout", "order-2", {"order_id": "A-2", "items": ["unicorn"]})
        except Exception as exc:
            print(type(exc).__name__, "-", exc)  # WorkflowError - ValueError: unicorn is not sold here
    # --8<-- [end:client]
    await worker.stop()
    await running


if __name__ == "__main__":
    asyncio.run(main())
