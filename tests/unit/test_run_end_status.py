"""The one table of the history kinds that end a run and the status each leaves (`RUN_END_STATUS`)."""

from __future__ import annotations

from grctl.models.history import RUN_END_STATUS, TERMINAL_KINDS, HistoryKind
from grctl.models.run_info import TERMINAL_STATUSES, RunStatus


def test_every_terminal_status_has_exactly_one_ending_kind() -> None:
    assert sorted(RUN_END_STATUS.values()) == sorted(TERMINAL_STATUSES)
    assert set(RUN_END_STATUS) == TERMINAL_KINDS
    assert all(kind.value.startswith("run.") for kind in RUN_END_STATUS)


def test_the_wire_strings_look_up_the_status() -> None:
    assert RUN_END_STATUS.get("run.timeout") == "timed_out"  # type: ignore[call-overload]  # a wire string
    assert RUN_END_STATUS[HistoryKind.run_completed] is RunStatus.completed
    assert RUN_END_STATUS.get(HistoryKind.run_started) is None
