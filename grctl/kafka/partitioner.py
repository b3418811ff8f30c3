"""Kafka's default key partitioner: murmur2 of the key bytes, modulo the partition count.

Every record about a workflow id is keyed by that id and must land on the same partition
whoever produces it: this module, librdkafka with ``partitioner="murmur2_random"``, or the Java
client (``org.apache.kafka.clients.producer.internals.BuiltInPartitioner``). This is a
bit-for-bit port of ``org.apache.kafka.common.utils.Utils.murmur2``, so all of them agree.

The hash runs on the hot path (once per record produced), so the code reads the key four bytes
at a time with one precompiled ``struct`` call and keeps every constant in a local variable, and
``partition_for`` remembers the hash of recently seen keys (a run's records share its key).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from grctl.errors import InvalidArgumentError

__all__ = ["murmur2", "partition_for"]

_SEED = 0x9747B28C
"""Seed of the Java client (``Utils.murmur2``)."""
_M = 0x5BD1E995
"""Multiplier of MurmurHash2."""
_MASK32 = 0xFFFFFFFF
_SIGN_BIT = 0x80000000
_POSITIVE_MASK = 0x7FFFFFFF
"""Java's ``Utils.toPositive``: clear the sign bit (not ``abs``, which overflows on MIN_VALUE)."""

_PRECOMPILED_WORDS = 64
"""Keys up to 256 bytes (workflow ids are ~30) get a precompiled unpacker; longer ones compile one."""

_CACHE_LIMIT = 16_384
"""Distinct keys whose hash is remembered; a workflow id is hashed for every record of its run.
When full the cache is emptied (~2 MB at most for 40-character ids)."""
_positive_hashes: dict[str | bytes, int] = {}

_BytesLike = bytes | bytearray | memoryview
_WordReader = Callable[[_BytesLike], tuple[int, ...]]
_word_readers: dict[int, _WordReader] = {
    n: struct.Struct(f"<{n}I").unpack_from for n in range(1, _PRECOMPILED_WORDS + 1)
}


def _word_reader(words: int) -> _WordReader:
    reader = _word_readers.get(words)
    if reader is None:
        reader = struct.Struct(f"<{words}I").unpack_from
        _word_readers[words] = reader
    return reader


def _murmur2_u32(data: _BytesLike) -> int:
    """Return the Java murmur2 of ``data`` as an unsigned 32-bit integer."""
    m = _M
    mask = _MASK32
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    if words:
        reader = _word_readers.get(words) or _word_reader(words)
        for k in reader(data):
            k = (k * m) & mask
            h = ((h * m) ^ ((k ^ (k >> 24)) * m)) & mask
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """Hash bytes exactly as the Kafka Java client's ``Utils.murmur2`` does.

    Args:
        data: The bytes to hash (a record key); any bytes-like object.

    Returns:
        The hash as a signed 32-bit integer, the value Java returns (for example
        ``murmur2(b"21") == -973932308``).
    """
    h = _murmur2_u32(data)
    return h - 0x100000000 if h & _SIGN_BIT else h


def partition_for(key: str | bytes, num_partitions: int) -> int:
    """Return the partition Kafka's default partitioner picks for a keyed record.

    This is ``toPositive(murmur2(key)) % num_partitions``, the rule of the Java client and of
    librdkafka's ``murmur2``/``murmur2_random`` partitioners.

    Args:
        key: The record key. A ``str`` is encoded as UTF-8, as the string serializers do.
            Pass ``bytes`` rather than a ``bytearray`` (the hash of recent keys is cached,
            so the key must be hashable).
        num_partitions: The topic's partition count.

    Returns:
        A partition number in ``range(num_partitions)``.

    Raises:
        ValueError: If ``num_partitions`` is less than 1.
    """
    if num_partitions < 1:
        raise InvalidArgumentError(
            f"num_partitions must be at least 1, got {num_partitions!r}; pass the topic's partition count"
        )
    cache = _positive_hashes
    positive = cache.get(key)
    if positive is None:
        positive = _murmur2_u32(key.encode() if isinstance(key, str) else key) & _POSITIVE_MASK
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = positive
    return positive % num_partitions
