"""The namespace's topic configs (grctl.kafka.topics.ROLE_CONFIGS)."""

from __future__ import annotations

from grctl.kafka.topics import PARTITIONED_ROLES, ROLE_CONFIGS


def test_partitioned_topics_spread_their_segment_rolls() -> None:
    # Issue 32: without a jitter, every partition of a topic created at once rolls its segment
    # in the same second and the log cleaner compacts them all back to back (the soak's p99
    # went from about 100 ms to 400-680 ms in those seconds).
    for role in PARTITIONED_ROLES:
        jitter = int(ROLE_CONFIGS[role].get("segment.jitter.ms", "0"))
        assert jitter > 0, role


def test_state_jitter_leaves_most_of_a_segment() -> None:
    # The broker subtracts a random jitter below min(segment.jitter.ms, segment.ms) from each
    # segment's roll time: a jitter of at most half keeps segments at least half as long.
    state = ROLE_CONFIGS["state"]
    assert 0 < int(state["segment.jitter.ms"]) <= int(state["segment.ms"]) // 2
