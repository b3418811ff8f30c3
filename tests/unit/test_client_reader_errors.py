"""Which consumer errors stop the client's reader (grctl.client._io) and which it retries."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from grctl.client._io import _is_fatal


@pytest.mark.parametrize(
    ("err", "fatal"),
    [
        (KafkaError(KafkaError._TRANSPORT), False),
        (KafkaError(KafkaError._ALL_BROKERS_DOWN), False),
        (KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION), False),
        (KafkaError(KafkaError._AUTHENTICATION), False),
        (KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), True),
        (KafkaError(KafkaError._FATAL, fatal=True), True),
    ],
)
def test_fatal_or_retried(err: KafkaError, fatal: bool) -> None:
    assert _is_fatal(err) is fatal
