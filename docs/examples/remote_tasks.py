"""Remote tasks: a scoring service in a task worker of its own (`python docs/examples/remote_tasks.py`)."""

import asyncio
from datetime import timedelta

from grctl import Client, Connection, Worker

# --8<-- [start:workflow]
from grctl import Context, Directive, RetryPolicy, Workflow

loans = Workflow(workflow_type="Loan")


@loans.start()
async def start(ctx: Context, applicant: str, amount: int) -> Directive:
    # Runs on a task worker of queue "scoring" (any language); this step gives its worker back
    # while it runs, and re-executes with the answer: the request is never sent twice.
    risk = await ctx.remote_task(
        "score",
        {"applicant": applicant, "amount": amount},
        queue="scoring",
        timeout=timedelta(seconds=30),  # start-to-close, per attempt
        retry_policy=RetryPolicy(max_attempts=3, initial_delay_ms=200),
    )
    return ctx.next.complete({"applicant": applicant, "approved": risk["score"] < 50})


# --8<-- [end:workflow]

# --8<-- [start:taskworker]
from grctl import TaskContext, TaskWorker  # noqa: E402  # shown on the page as its own block


async def score(payload: dict, task: TaskContext) -> dict:
    task.heartbeat({"stage": "model loaded"})  # optional: moves a heartbeat deadline, shows in describe
    # task.idempotency_key ("<run_id>:<task_id>") is the same for every attempt of this call
    return {"score": payload["amount"] // 1000}


# --8<-- [end:taskworker]


async def main() -> None:
    conn = await Connection.connect()
    # --8<-- [start:run]
    async with TaskWorker([score], conn, queue="scoring", concurrency=32):
        worker = Worker([loans], conn)
        running = asyncio.create_task(worker.run())
        await worker.wait_until_ready(30)
        async with Client(conn) as client:
            print(await client.run_workflow("Loan", "loan-1", {"applicant": "ada", "amount": 20_000}))
            print(await client.run_workflow("Loan", "loan-2", {"applicant": "bob", "amount": 90_000}))
        await worker.stop()
        await running
    # --8<-- [end:run]


if __name__ == "__main__":
    asyncio.run(main())
