"""The recovery time of the fault suites (tests/faults/harness.py), on made-up completion times."""

from __future__ import annotations

import pytest

from tests.faults.harness import recovery_times


def steady(start: float, end: float, per_s: int) -> list[float]:
    return [start + i / per_s for i in range(int((end - start) * per_s))]


def test_recovery_is_the_first_full_window_after_the_fault() -> None:
    done = steady(0.0, 5.0, 10) + steady(8.0, 12.0, 10)  # nothing completes from 5 s to 8 s
    (recovered,) = recovery_times(done, [5.0], 10.0)
    # 80 % of 10/s in a 1 s window = 8 completions: the 8th after the restart is at 8.7 s.
    assert recovered == pytest.approx(3.7)


def test_a_rate_that_never_comes_back_is_none_not_infinity() -> None:
    done = steady(0.0, 5.0, 10) + steady(6.0, 9.0, 5)  # back at half the rate only
    assert recovery_times(done, [5.0], 10.0) == [None]


def test_each_fault_is_measured_from_its_own_time() -> None:
    done = steady(0.0, 3.0, 10) + steady(4.0, 6.0, 10) + steady(8.0, 10.0, 10)
    first, second = recovery_times(done, [3.0, 6.0], 10.0)
    assert first == pytest.approx(1.7) and second == pytest.approx(2.7)


def test_a_stall_that_begins_after_the_fault_is_measured_from_the_fault_to_its_end() -> None:
    """CI: completions went on for 2 s after a broker kill, then stopped for 38 s."""
    done = steady(0.0, 7.0, 10) + steady(12.0, 15.0, 10)  # the stall: 7 s to 12 s
    (recovered,) = recovery_times(done, [5.0], 10.0)
    assert recovered == pytest.approx(7.7)  # the 8th completion after the stall, at 12.7 s


def test_a_fault_without_a_dip_recovers_at_once() -> None:
    done = steady(0.0, 10.0, 10)
    assert recovery_times(done, [5.0], 10.0) == [0.0]


def test_nothing_completing_after_the_fault_is_none() -> None:
    assert recovery_times(steady(0.0, 5.0, 10), [5.0], 10.0) == [None]


def test_the_rate_falling_when_the_load_ends_is_not_a_dip_of_the_fault() -> None:
    done = [*steady(0.0, 10.0, 10), 10.5, 11.5]  # no dip during the fault; then the load ends at 10 s
    assert recovery_times(done, [5.0], 10.0, load_end=10.0) == [0.0]
    assert recovery_times(done, [5.0], 10.0) == [None]  # without load_end the tail looks like a dip
