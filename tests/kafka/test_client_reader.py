"""The client's reader (grctl.client._io) against a real broker: bad records, listener bugs, fatal errors."""

from __future__ import annotations

import asyncio
import logging

import pytest
from confluent_kafka import Producer

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.client._io import ClientIO
from grctl.engine.records import DescribeCmd, directive_decoder, encoder
from grctl.errors import InternalError, KafkaSetupError
from grctl.kafka.partitioner import partition_for
from tests.support.topics import read_committed
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

echo = Workflow(workflow_type="ReaderEcho")


@echo.start()
async def echo_start(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(n)


waiting = Workflow(workflow_type="ReaderWaiting")


@waiting.start()
async def waiting_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@waiting.event()
async def finish(ctx: Context, result: str = "done") -> Directive:
    return ctx.next.complete(result)


def client_io(client: Client) -> ClientIO:
    io = client._io  # the reader under test; made by the client's first call
    assert io is not None
    return io


async def test_undecodable_records_are_skipped_and_the_reader_goes_on(
    workers, client: Client, connection: Connection, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    await workers.start([echo])
    assert await client.run_workflow("ReaderEcho", "reader-1", {"n": 1}) == 1
    n = connection.num_partitions
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    targets = [(connection.topics.replies, partition_for(client.id, n))]  # all the client reads
    for topic, part in targets:
        producer.produce(topic, b"\xc1 not msgpack", b"junk", partition=part)
        producer.produce(topic, encoder.encode({"not": "a record"}), b"junk", partition=part)
    assert producer.flush(10) == 0

    with caplog.at_level(logging.WARNING, logger="grctl.client"):
        assert await client.run_workflow("ReaderEcho", "reader-2", {"n": 2}) == 2
        info = await client.describe("reader-2")  # a reply read after the junk on the reply partition
    assert info.result == 2
    skipped = [r.getMessage() for r in caplog.records if "cannot be decoded" in r.getMessage()]
    for topic, part in targets:
        assert sum(f"{topic}[{part}]@" in m for m in skipped) == 2, skipped


async def test_a_listener_that_raises_is_logged_and_fails_alone(
    workers, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await workers.start([waiting])
    handle = await client.start_workflow("ReaderWaiting", "reader-bug")
    run_id = handle.run_info.id
    failures: list[BaseException] = []
    calls = 0

    def buggy(*_args: object) -> None:
        nonlocal calls
        calls += 1
        raise ZeroDivisionError("listener bug")

    client_io(client).listen(handle._watch_id, buggy, failures.append)  # the handle's own watch
    with caplog.at_level(logging.ERROR, logger="grctl.client"):
        await handle.send("finish", {"result": "fine"})
        assert await handle.result(timeout=30) == "fine"  # the handle's own listener is unaffected
    assert calls == 1, "a listener that raised is dropped"
    assert len(failures) == 1 and isinstance(failures[0], InternalError)
    assert run_id in str(failures[0]) and "ZeroDivisionError: listener bug" in str(failures[0])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and run_id in r.getMessage()]
    assert errors and errors[0].exc_info is not None and "bug in grctl" in errors[0].getMessage()
    assert not any("cannot decode" in r.getMessage() for r in caplog.records)


async def test_a_fatal_reader_error_fails_every_waiter_and_later_call(workers, client: Client) -> None:
    await workers.start([waiting])
    handle = await client.start_workflow("ReaderWaiting", "reader-fatal")
    io = client_io(client)
    await workers.stop_all()  # nobody answers now: a request stays pending
    pending = asyncio.create_task(client.describe("reader-fatal"))
    part = partition_for("reader-fatal", client.connection.num_partitions)

    async def describe_sent() -> bool:
        # The request is in flight once its record is on `directives` (the broker acknowledged it).
        records = await asyncio.to_thread(
            read_committed, client.connection.servers, client.connection.topics.directives, [part], 30
        )
        return any(isinstance(directive_decoder.decode(m.value()), DescribeCmd) for m in records)

    await wait_until_async("the describe request is on the directives topic", describe_sent, 30)
    assert not pending.done(), "no worker runs: nothing can have answered the describe"
    cause = KafkaSetupError("the broker fenced this reader")
    io.fail(cause)  # what the reader thread does on a fatal consumer error

    with pytest.raises(KafkaSetupError, match="fenced"):
        await pending
    with pytest.raises(KafkaSetupError, match="fenced"):
        await handle.result(timeout=5)
    with pytest.raises(KafkaSetupError, match="fenced"):
        await client.describe("reader-fatal")
    with pytest.raises(KafkaSetupError, match="fenced"):
        await client.start_workflow("ReaderWaiting", "reader-fatal-2")
