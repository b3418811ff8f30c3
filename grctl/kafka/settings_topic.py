"""A namespace's settings, kept in its compacted `config` topic (one partition).

Today one setting: how long the state of an ended run is kept (the run retention), for the
namespace and optionally per workflow type. The topic holds one record, key `namespace`, whose
last value wins; `grctl namespace create --retention` and `grctl namespace set --retention`
write it (or `write_settings`), every worker reads it when a session starts and again every
`SETTINGS_REFRESH_S`, and applies it to the runs that end afterwards.

The history topic must keep events at least as long as runs are kept (a run whose history is
gone while it can still be described would be a run without a past): writing settings checks
it and refuses a longer run retention with an error that says how to raise the history's.

May import: `grctl.errors`, `grctl.defaults`, `grctl.kafka`, confluent-kafka.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import msgspec
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]  # untyped re-export

from grctl import defaults
from grctl.display import fmt_span_ms
from grctl.errors import InvalidArgumentError, KafkaSetupError
from grctl.kafka.reading import read_partitions
from grctl.kafka.retry import is_transient, retry_while_leaderless

if TYPE_CHECKING:
    from grctl.kafka.connection import Connection

SETTINGS_KEY: Final = b"namespace"
#: Workers read the settings again this often (a change applies to runs ending afterwards).
SETTINGS_REFRESH_S: Final = 30.0
#: The shortest run retention accepted (a timer per ended run; shorter is a mistake).
MIN_RETENTION: Final = timedelta(seconds=1)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class NamespaceSettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the `config` topic holds.

    Attributes:
        run_retention_ms: how long an ended run's state is kept, in ms.
        type_retention_ms: per workflow type, a retention that overrides the namespace's.
    """

    run_retention_ms: int = int(defaults.RUN_RETENTION.total_seconds() * 1000)
    type_retention_ms: dict[str, int] = msgspec.field(default_factory=dict)
    v: int = 1

    def retention_ms(self, wf_type: str) -> int:
        """The retention of a run of `wf_type`."""
        return self.type_retention_ms.get(wf_type, self.run_retention_ms)

    def longest_ms(self) -> int:
        """The longest retention any run may get."""
        return max([self.run_retention_ms, *self.type_retention_ms.values()])


_decoder = msgspec.msgpack.Decoder(NamespaceSettings)
_encoder = msgspec.msgpack.Encoder()


def parse_duration(text: str | timedelta, what: str = "retention") -> timedelta:
    """`7d`, `36h`, `90m`, `30s`, `500ms`, `2w` (or a timedelta) as a positive timedelta.

    Raises:
        InvalidArgumentError: not a duration, or not at least `MIN_RETENTION`.
    """
    if isinstance(text, timedelta):
        value = text
    else:
        m = _DURATION.match(str(text))
        if m is None:
            raise InvalidArgumentError(
                f"{what} {text!r} is not a duration: use a number with a unit, e.g. 7d, 36h, 90m, 30s or 500ms",
                argument=what,
            )
        value = timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2) or "s"])
    if value < MIN_RETENTION:
        raise InvalidArgumentError(f"{what} must be at least {MIN_RETENTION}, got {value}", argument=what)
    return value


def read_settings(conn: Connection, timeout: float = 10.0) -> NamespaceSettings:
    """The namespace's settings: the last record of its `config` topic, or the defaults (blocking).

    Raises:
        KafkaSetupError: the topic cannot be read.
    """
    topic = conn.topics.config
    consumer = Consumer(
        conn.client_config(
            **{"group.id": f"grctl.{conn.namespace}.settings", "enable.auto.commit": False, "fetch.wait.max.ms": 10}
        )
    )
    settings = NamespaceSettings()
    deadline = time.monotonic() + timeout
    try:
        tp = TopicPartition(topic, 0)
        # A topic just created answers NOT_LEADER / UNKNOWN_TOPIC for a moment.
        low, high = retry_while_leaderless(
            lambda: consumer.get_watermark_offsets(tp, timeout=timeout, cached=False),
            timeout=timeout,
            retry_on=is_transient,
        )
        left = max(0.0, deadline - time.monotonic())
        records = read_partitions(consumer, topic, {0: (low, high)}, timeout=left, skip_errors=True, wait=0.2)
        for msg in records:
            if msg.key() == SETTINGS_KEY and msg.value():
                try:
                    settings = _decoder.decode(msg.value() or b"")
                except (msgspec.DecodeError, RecursionError):
                    pass  # a record of a newer version we cannot read: keep the last we can
        return settings
    except TimeoutError:
        raise KafkaSetupError(
            f"cannot read the settings of namespace {conn.namespace!r} from {topic} within {timeout:.0f}s"
        ) from None
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot read the settings of namespace {conn.namespace!r} from {topic}: {exc}") from exc
    finally:
        consumer.close()


def history_retention_ms(conn: Connection, timeout: float = 10.0) -> int | None:
    """The history topic's `retention.ms` (None: kept forever)."""
    from grctl.kafka.topics import admin_client

    admin = admin_client(conn.client_config())
    res = ConfigResource("topic", conn.topics.history)
    try:
        entries = admin.describe_configs([res], request_timeout=timeout)[res].result(timeout)
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot read the configs of {conn.topics.history}: {exc}") from exc
    entry = entries.get("retention.ms")
    value = int(entry.value) if entry is not None and entry.value else -1
    return None if value < 0 else value


def check_history_keeps(settings: NamespaceSettings, history_ms: int | None, namespace: str) -> None:
    """Refuse a run retention longer than the history's.

    Raises:
        InvalidArgumentError: the history topic deletes events sooner than runs are kept.
    """
    if history_ms is not None and settings.longest_ms() > history_ms:
        raise InvalidArgumentError(
            f"a run retention of {fmt_span_ms(settings.longest_ms())} is longer than the history "
            f"topic's retention of {fmt_span_ms(history_ms)} (grctl.{namespace}.history retention.ms): "
            f"a run would outlive its history. Shorten the run retention, or raise the history's with "
            f"`kafka-configs --alter --entity-type topics --entity-name grctl.{namespace}.history "
            f"--add-config retention.ms={settings.longest_ms()}`",
            argument="retention",
        )


def write_settings(conn: Connection, settings: NamespaceSettings, timeout: float = 10.0) -> None:
    """Write the namespace's settings, after checking them against the history's retention.

    Raises:
        InvalidArgumentError: the run retention is longer than the history topic keeps events.
        KafkaSetupError: the write was not acknowledged.
    """
    check_history_keeps(settings, history_retention_ms(conn, timeout), conn.namespace)
    producer = Producer(conn.client_config(**{"enable.idempotence": True, "acks": "all"}))
    errors: list[Any] = []
    producer.produce(
        conn.topics.config, _encoder.encode(settings), SETTINGS_KEY, 0, on_delivery=lambda e, _m: errors.append(e)
    )
    if producer.flush(timeout) != 0 or any(e is not None for e in errors):
        raise KafkaSetupError(f"the settings of namespace {conn.namespace!r} were not written: {errors or 'timed out'}")


def with_retention(
    settings: NamespaceSettings, retention: timedelta | None, per_type: Mapping[str, timedelta] | None = None
) -> NamespaceSettings:
    """`settings` with a new namespace retention and/or per-type retentions."""
    ms = settings.run_retention_ms if retention is None else int(retention.total_seconds() * 1000)
    types = dict(settings.type_retention_ms)
    for wf_type, value in (per_type or {}).items():
        types[wf_type] = int(value.total_seconds() * 1000)
    return NamespaceSettings(run_retention_ms=ms, type_retention_ms=types)
