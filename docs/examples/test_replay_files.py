"""Replay in CI: histories of real runs, kept as files, against the code under review."""

# --8<-- [start:all]
from pathlib import Path

from grctl.testing import assert_replays

from versions import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"  # `grctl workflow history ID --json > histories/ID.jsonl`


def test_new_code_replays_recorded_runs():
    assert_replays(WORKFLOWS, HISTORIES)


# --8<-- [end:all]
