"""The first workflow: a worker and a client in one program (`python docs/examples/hello.py`)."""

# --8<-- [start:all]
import asyncio

from grctl import Client, Connection, Context, Directive, Worker, Workflow

greeter = Workflow(workflow_type="Greeter")


@greeter.start()
async def start(ctx: Context, name: str) -> Directive:
    ctx.store.put("name", name)  # saved when this step's transition commits
    return ctx.next.step(greet)


@greeter.step()
async def greet(ctx: Context) -> Directive:
    name = await ctx.store.get("name", str)
    return ctx.next.complete(f"Hello, {name}!")


async def main() -> None:
    conn = await Connection.connect()  # GRCTL_KAFKA_SERVERS (default 127.0.0.1:9092), GRCTL_NAMESPACE
    worker = Worker([greeter], conn)
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(30)
    async with Client(conn) as client:
        handle = await client.start_workflow("Greeter", "greeting-1", {"name": "World"})
        print(await handle.result())  # Hello, World!
    await worker.stop()
    await running


if __name__ == "__main__":
    asyncio.run(main())
# --8<-- [end:all]
