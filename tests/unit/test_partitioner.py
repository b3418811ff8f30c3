"""Unit tests for grctl.kafka.partitioner (Kafka's murmur2 and default key partitioner)."""

from __future__ import annotations

import struct

import pytest

from grctl.kafka import partitioner
from grctl.kafka.partitioner import murmur2, partition_for

# From Kafka's own tests (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java,
# testMurmur2), checked against a javac-compiled copy of Utils.murmur2.
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]

# Further values computed with the same javac-compiled Utils.murmur2: the empty input, every tail
# length 0..3 after one and two whole words, bytes >= 0x80 (Java's signed bytes), UTF-8 text,
# and keys longer than the precompiled word readers (256 bytes).
JAVA_VECTORS = [
    (b"", 275646681),
    (b"a", -1563381124),
    (b"ab", 316155434),
    (b"abcd", -1323649548),
    (b"abcde", 461995741),
    (b"abcdef", 1870650108),
    (b"abcdefg", -346467175),
    (b"abcdefgh", -955427363),
    (b"\xff" * 7, -71293549),
    ("wf-\u00e9\u4e2d".encode(), -570193610),
    (bytes(range(256)) + b"xyz", 659685727),
]


def _java_reference(data: bytes) -> int:
    """Straight transcription of Utils.murmur2 with explicit 32-bit wrap-around, for cross-checks."""

    def i32(x: int) -> int:
        x &= 0xFFFFFFFF
        return x - (1 << 32) if x & 0x80000000 else x

    def ushr(x: int, n: int) -> int:
        return (x & 0xFFFFFFFF) >> n

    m = 0x5BD1E995
    length = len(data)
    h = i32(0x9747B28C ^ length)
    for i in range(length // 4):
        (k,) = struct.unpack_from("<i", data, i * 4)
        k = i32(k * m)
        k ^= ushr(k, 24)
        k = i32(k * m)
        h = i32(h * m)
        h = i32(h ^ k)
    rest = length % 4
    base = length & ~3
    if rest == 3:
        h = i32(h ^ (data[base + 2] << 16))
    if rest >= 2:
        h = i32(h ^ (data[base + 1] << 8))
    if rest >= 1:
        h = i32(h ^ data[base])
        h = i32(h * m)
    h = i32(h ^ ushr(h, 13))
    h = i32(h * m)
    return i32(h ^ ushr(h, 15))


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS + JAVA_VECTORS)
def test_murmur2_matches_java(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS + JAVA_VECTORS)
def test_reference_transcription_matches_java(data: bytes, expected: int) -> None:
    assert _java_reference(data) == expected


def test_murmur2_empty_input() -> None:
    assert murmur2(b"") == 275646681


@pytest.mark.parametrize("words", [0, 1, 2, 3, 10, 63, 64, 65, 100])
@pytest.mark.parametrize("tail", [0, 1, 2, 3])
def test_murmur2_every_tail_length(words: int, tail: int) -> None:
    data = bytes((i * 37 + 11) % 256 for i in range(words * 4 + tail))
    assert murmur2(data) == _java_reference(data)


def test_murmur2_is_signed_32_bit() -> None:
    values = [murmur2(bytes([i, 255 - i, i ^ 0x5A])) for i in range(256)]
    assert all(-(2**31) <= v < 2**31 for v in values)
    assert any(v < 0 for v in values)
    assert any(v > 0 for v in values)


def test_murmur2_accepts_any_buffer() -> None:
    assert murmur2(bytearray(b"foobar")) == -790332482
    assert murmur2(memoryview(b"foobar")) == -790332482


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS + JAVA_VECTORS)
@pytest.mark.parametrize("num_partitions", [1, 3, 12, 100])
def test_partition_for_is_to_positive_modulo(data: bytes, expected: int, num_partitions: int) -> None:
    assert partition_for(data, num_partitions) == (expected & 0x7FFFFFFF) % num_partitions


def test_partition_for_encodes_str_as_utf8() -> None:
    for key in ["21", "foobar", "wf-\u00e9\u4e2d", "", "order-\U0001f600"]:
        assert partition_for(key, 12) == partition_for(key.encode("utf-8"), 12)


def test_partition_for_known_values() -> None:
    # toPositive(-973932308) = 1173551340, % 12 = 0; toPositive(-790332482) = 1357151166, % 12 = 6
    assert partition_for("21", 12) == 1173551340 % 12
    assert partition_for("foobar", 12) == 1357151166 % 12
    assert partition_for("abc", 7) == 479470107 % 7


def test_partition_for_single_partition() -> None:
    assert {partition_for(f"wf-{i}", 1) for i in range(100)} == {0}


def test_partition_for_spreads_keys() -> None:
    counts = [0] * 12
    for i in range(12_000):
        counts[partition_for(f"wf-{i}", 12)] += 1
    assert min(counts) > 800


@pytest.mark.parametrize("bad", [0, -1, -12])
def test_partition_for_rejects_bad_partition_count(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"num_partitions must be at least 1, got {bad}"):
        partition_for("wf-1", bad)


def test_partition_for_cache_is_bounded_and_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitioner, "_CACHE_LIMIT", 8)
    monkeypatch.setattr(partitioner, "_positive_hashes", {})
    keys = [f"wf-{i}" for i in range(50)]
    first = [partition_for(k, 12) for k in keys]
    assert len(partitioner._positive_hashes) <= 8
    second = [partition_for(k, 12) for k in keys]
    assert first == second == [(murmur2(k.encode()) & 0x7FFFFFFF) % 12 for k in keys]
    # Same key, other partition counts: the cached hash is independent of the count.
    assert [partition_for(k, 7) for k in keys] == [(murmur2(k.encode()) & 0x7FFFFFFF) % 7 for k in keys]
