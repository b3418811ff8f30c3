"""The dead-letter record of an input record that cannot be applied: the reason and where the original is."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka import Message

__all__ = ["dead_letter_record"]


def dead_letter_record(
    msg: Message, reason: str, partition: int, max_bytes: int
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of the dead-letter record of input `msg` (its value cut to `max_bytes` minus the key).

    The headers say why (grctl.reason) and where the original is (grctl.topic, .partition,
    .offset); a cut value is marked with grctl.truncated (its full length).
    """
    key, value = msg.key() or b"", msg.value() or b""
    headers = [
        ("grctl.reason", reason.encode()[:4000]),
        ("grctl.topic", (msg.topic() or "").encode()),
        ("grctl.partition", str(partition).encode()),
        ("grctl.offset", str(msg.offset()).encode()),
    ]
    room = max_bytes - len(key)
    if len(value) > room:  # the original stays readable in its own topic at the offset above
        headers.append(("grctl.truncated", str(len(value)).encode()))
        value = value[: max(0, room)]
    return key, value, headers
