"""The replayer's bad input (issue 26): unreadable history files, histories it cannot replay whole, bad code.

Pure: no broker. What the replayer finds on real recorded runs is in tests/scenarios/test_versions.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grctl.errors import GrctlError
from grctl.testing import Replayer, assert_replays, load_history
from tests.scenarios import versions_code


def test_a_line_that_is_not_json_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "run.jsonl"
    f.write_text('{"kind": "run.started", "run_id": "r1", "msg": {}}\nnot json\n')
    with pytest.raises(GrctlError, match=r"run\.jsonl:2: not a JSON line"):
        load_history(f)


def test_a_line_without_kind_or_run_id_says_where_histories_come_from(tmp_path: Path) -> None:
    f = tmp_path / "run.jsonl"
    f.write_text(json.dumps({"wf_id": "x"}) + "\n")
    with pytest.raises(GrctlError, match="needs 'kind' and 'run_id'"):
        load_history(f)


def test_a_file_of_several_runs_is_grouped_by_run_in_order(tmp_path: Path) -> None:
    f = tmp_path / "runs.jsonl"
    lines = [{"kind": k, "run_id": r, "msg": {}} for r, k in (("a", "run.started"), ("b", "run.started"), ("a", "x"))]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert [[e["kind"] for e in run] for run in load_history(f)] == [["run.started", "x"], ["run.started"]]


def test_a_history_without_its_start_is_incomplete_not_diverged() -> None:
    replayer = Replayer(versions_code.RECORDED)
    empty = replayer.replay([])
    assert empty.ok and empty.incomplete == "no history events"
    cut = replayer.replay([{"kind": "step.started", "run_id": "r", "wf_id": "w", "msg": {"step_name": "pack"}}])
    assert cut.ok and cut.incomplete is not None and "run.started" in cut.incomplete


def test_a_history_of_a_type_not_given_is_incomplete() -> None:
    started = {"kind": "run.started", "run_id": "r", "wf_id": "w", "msg": {"wf_type": "Elsewhere", "version": 3}}
    result = Replayer(versions_code.RECORDED).replay([started, {**started, "kind": "step.started",
                                                              "msg": {"step_name": "start", "seq": 1}}])  # fmt: skip
    assert result.ok and result.incomplete == "no code for 'Elsewhere' v3 was given"


def test_two_definitions_of_one_type_and_version_are_refused() -> None:
    with pytest.raises(GrctlError, match="listed twice"):
        Replayer([*versions_code.order_code(), *versions_code.order_code()])


def test_assert_replays_without_files_says_so(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="no history files"):
        assert_replays(versions_code.RECORDED, tmp_path)
