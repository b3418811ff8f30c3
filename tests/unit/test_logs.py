"""Logs: librdkafka's lines arrive as Python log records; JSON lines carry the step's ids.

The Kafka clients here are real librdkafka clients pointed at a closed local port (nothing
listens on it, so no broker is needed): librdkafka's "Connection refused" line must arrive as
a WARNING record of `grctl.librdkafka`, and nothing of librdkafka may reach stderr.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import time

import pytest

from grctl.client._io import ClientIO
from grctl.kafka.connection import Connection
from grctl.kafka.logs import LibrdkafkaLogger
from grctl.logging_setup import JsonFormatter, formatter_for, setup_logging
from grctl.worker._session.clients import make_consumer, make_producer
from grctl.worker.runtime import StepRuntime

REFUSED = "Connection refused"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens


def poll_until_refused(poll, caplog: pytest.LogCaptureFixture, timeout: float = 10.0) -> list[logging.LogRecord]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        poll(0.1)  # librdkafka hands its log lines over when the client is polled
        hits = [r for r in caplog.records if r.name == "grctl.librdkafka" and REFUSED in r.getMessage()]
        if hits:
            return hits
    raise AssertionError(f"no {REFUSED!r} record in {timeout:g} s; records: {[r.getMessage() for r in caplog.records]}")


def test_worker_clients_log_connection_refused_as_warning_records(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="grctl.librdkafka")
    conn = Connection(f"127.0.0.1:{closed_port()}", "logs")
    producer = make_producer(conn, instance_id="i1", worker_id="w1")
    hits = poll_until_refused(producer.poll, caplog)
    assert {r.levelno for r in hits} == {logging.WARNING}
    assert hits[0].kafka_client.startswith("w1-producer")  # type: ignore[attr-defined]
    assert hits[0].kafka_facility == "FAIL"  # type: ignore[attr-defined]
    caplog.clear()
    consumer = make_consumer(conn, instance_id="i1", worker_id="w1")
    try:
        consumer.subscribe([conn.topics.directives])
        hits = poll_until_refused(consumer.poll, caplog)
        assert {r.levelno for r in hits} == {logging.WARNING}
    finally:
        consumer.close()
    assert "|FAIL|" not in capfd.readouterr().err


async def test_client_producer_and_reader_log_through_python_logging(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="grctl.librdkafka")
    conn = Connection(f"127.0.0.1:{closed_port()}", "logs")
    conn.num_partitions = 1
    client_io = ClientIO(conn, "c_test", 0)
    loop = asyncio.get_running_loop()
    hits = await loop.run_in_executor(None, poll_until_refused, client_io.producer.poll, caplog)
    assert {r.levelno for r in hits} == {logging.WARNING}
    assert hits[0].kafka_client.startswith("c_test-producer")  # type: ignore[attr-defined]
    client_io.close()
    assert "|FAIL|" not in capfd.readouterr().err


def test_repeated_lines_are_logged_once_per_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="test.rd")
    log = LibrdkafkaLogger("test.rd")
    for ms in range(5):
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "p-1", f"Connect failed (after {ms}ms in state CONNECT)")
    log.log(logging.INFO, "%s [%s] %s", "BGQUEUE", "p-1", "Purging 1 unserved events")
    log.log(logging.CRITICAL, "%s [%s] %s", "FATAL", "p-1", "fenced")
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        (logging.WARNING, "p-1 FAIL: Connect failed (after 0ms in state CONNECT)"),
        (logging.DEBUG, "p-1 BGQUEUE: Purging 1 unserved events"),
        (logging.ERROR, "p-1 FATAL: fenced"),
    ]


class _NoSink:
    """A step runtime's sink that nothing calls here (the test only logs)."""


def test_json_lines_carry_the_running_steps_ids_for_any_logger() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json.user")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("outside %s", "any step")
        rt = StepRuntime(
            wf_id="order-7", run_id="01RUN", wf_type="Order", step_name="charge", seq=3, recorded=[],
            sink=_NoSink(),  # type: ignore[arg-type]
        )  # fmt: skip
        token = rt.activate()
        try:
            logger.info("charging %d", 42)
            try:
                raise ValueError("card declined")
            except ValueError:
                logger.exception("failed")
        finally:
            StepRuntime.deactivate(token)
    finally:
        logger.removeHandler(handler)
    outside, inside, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert outside["message"] == "outside any step" and "wf_id" not in outside
    assert outside["level"] == "INFO" and outside["logger"] == "test.json.user" and outside["ts"].endswith("Z")
    assert {k: inside[k] for k in ("wf_id", "run_id", "step", "wf_type", "message")} == {
        "wf_id": "order-7",
        "run_id": "01RUN",
        "step": "charge",
        "wf_type": "Order",
        "message": "charging 42",
    }
    assert failed["level"] == "ERROR" and "ValueError: card declined" in failed["exc"]


def test_record_attributes_become_fields_and_bad_formats_are_refused() -> None:
    record = logging.LogRecord("grctl.worker", logging.WARNING, __file__, 1, "partition %d", (3,), None)
    record.partition = 3
    assert json.loads(JsonFormatter().format(record))["partition"] == 3
    with pytest.raises(ValueError, match="use 'text' or 'json'"):
        formatter_for("yaml")
    with pytest.raises(ValueError):
        setup_logging(logging.INFO, "xml")
