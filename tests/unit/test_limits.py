"""Size limit arithmetic (`grctl.kafka.limits`) and what a refused record does to the next session."""

from __future__ import annotations

import socket

import pytest
from confluent_kafka.admin import AdminClient

from grctl.errors import InvalidArgumentError, KafkaSetupError
from grctl.kafka.limits import (
    ENVELOPE_RESERVE_BYTES,
    PRODUCER_DEFAULT_MAX_BYTES,
    RECORD_FRAMING_BYTES,
    RecordLimits,
    preview,
    producer_max_bytes,
    topic_max_bytes,
)
from grctl.worker._session.commit import RecordRefused
from grctl.worker._session.errors import SessionRestart
from grctl.worker.worker import Worker
from grctl.workflow import Workflow

TOPICS = {"a": 1_048_588, "b": 200_000}


def test_the_smallest_of_topic_and_producer_limits_bounds_every_record_and_the_value() -> None:
    limits = RecordLimits.compute(TOPICS)
    assert limits.producer_max_bytes == 200_000  # batches never exceed what the smallest topic takes
    assert limits.record_limit("a") == 200_000 - RECORD_FRAMING_BYTES
    assert limits.record_limit("b") == 200_000 - RECORD_FRAMING_BYTES
    assert limits.value_bytes == 200_000 - RECORD_FRAMING_BYTES - ENVELOPE_RESERVE_BYTES


def test_defaults_give_a_value_limit_just_under_the_producers_million_bytes() -> None:
    limits = RecordLimits.compute({"a": 1_048_588})
    assert limits.value_bytes == PRODUCER_DEFAULT_MAX_BYTES - RECORD_FRAMING_BYTES - ENVELOPE_RESERVE_BYTES


def test_the_value_limit_can_only_be_lowered() -> None:
    assert RecordLimits.compute(TOPICS, max_value_bytes=1000).value_bytes == 1000
    assert RecordLimits.compute(TOPICS, max_value_bytes=10**9).value_bytes == RecordLimits.compute(TOPICS).value_bytes
    with pytest.raises(InvalidArgumentError, match="max_value_bytes must be positive"):
        RecordLimits.compute(TOPICS, max_value_bytes=0)


def test_the_producer_setting_counts_last_one_wins() -> None:
    assert producer_max_bytes(None, {}) == PRODUCER_DEFAULT_MAX_BYTES
    assert producer_max_bytes({"message.max.bytes": 500_000}, {"message.max.bytes": "300000"}) == 300_000
    assert RecordLimits.compute(TOPICS, producer_max_bytes=100_000).producer_max_bytes == 100_000


def test_a_preview_keeps_the_size_and_a_bounded_repr() -> None:
    p = preview("x" * 10_000, 10_003)
    assert p["truncated"] is True and p["size"] == 10_003 and len(p["preview"]) == 1024


wf = Workflow(workflow_type="Q")


@wf.start()
async def start(ctx) -> None:  # type: ignore[no-untyped-def]
    raise AssertionError("never runs")


def test_a_session_ended_by_a_refused_record_quarantines_its_run() -> None:
    worker = Worker([wf])
    refused = RecordRefused("wf-7", "grctl.ns.state", 2_000_000, "Broker: Message size too large")
    try:
        raise SessionRestart("transaction failed") from refused
    except SessionRestart as exc:
        worker._quarantine_refused(exc)
    assert "wf-7" in worker._quarantine and "2,000,000 bytes" in worker._quarantine["wf-7"].message


def test_other_session_failures_quarantine_nothing() -> None:
    worker = Worker([wf])
    worker._quarantine_refused(SessionRestart("broker down"))
    assert worker._quarantine == {}


def test_a_broker_that_does_not_answer_is_a_setup_error_the_worker_retries() -> None:
    """A paused broker (SIGSTOP, a long GC pause) accepts connections and says nothing.

    Reading the topics' limits then timed out with a bare TimeoutError, which the worker's
    session loop did not expect: the worker process exited in the middle of a broker pause.
    """
    with socket.socket() as silent:  # accepts the connection, never answers: the hung broker
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{silent.getsockname()[1]}", "log_level": 0})
        with pytest.raises(KafkaSetupError, match=r"did not answer .* within 1s"):
            topic_max_bytes(admin, ["grctl.ns.history"], 1.0)
