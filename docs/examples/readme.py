import asyncio

from grctl import Client, Connection, Context, Directive, Worker, Workflow

greeter = Workflow(workflow_type="Greeter")


@greeter.start()
async def start(ctx: Context, name: str) -> Directive:
    return ctx.next.complete(f"Hello, {name}!")


async def main() -> None:
    conn = await Connection.connect()  # GRCTL_KAFKA_SERVERS, default 127.0.0.1:9092
    worker = Worker([greeter], conn)
    running = asyncio.create_task(worker.run())
    await worker.wait_until_ready(30)
    async with Client(conn) as client:
        print(await client.run_workflow("Greeter", "greeting-1", {"name": "World"}))
    await worker.stop()
    await running


asyncio.run(main())
