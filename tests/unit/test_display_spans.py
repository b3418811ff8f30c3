"""Configured durations read as people write them (`grctl namespace create` said "7 days, 0:00:00")."""

from __future__ import annotations

import pytest

from grctl.display import fmt_span_ms
from grctl.kafka.settings_topic import parse_duration

DAY = 86_400_000


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (7 * DAY, "7 days"),
        (DAY, "1 day"),
        (12 * 3_600_000, "12h"),
        (36 * 3_600_000, "1d 12h"),
        (90 * 60_000, "1h 30m"),
        (30_000, "30s"),
        (1_500, "1s 500ms"),
        (0, "0ms"),
    ],
)
def test_a_span_reads_as_people_write_it(ms: int, text: str) -> None:
    assert fmt_span_ms(ms) == text


@pytest.mark.parametrize("typed", ["7d", "12h", "36h", "90m", "30s", "2w"])
def test_what_is_printed_can_be_typed_back(typed: str) -> None:
    ms = int(parse_duration(typed).total_seconds() * 1000)
    tokens = fmt_span_ms(ms).replace(" days", "d").replace(" day", "d").split()
    assert sum(int(parse_duration(t).total_seconds() * 1000) for t in tokens) == ms
