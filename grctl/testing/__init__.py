"""Testing workflows: replay recorded runs against code (`Replayer`), and check saved histories in a test suite.

```python
# tests/test_histories.py: keep histories of real runs (`grctl workflow history ID --json > f.jsonl`)
from grctl.testing import assert_replays
from myapp.workflows import WORKFLOWS

def test_new_code_replays_the_saved_histories():
    assert_replays(WORKFLOWS, "tests/histories/")
```
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from grctl.testing.replayer import Divergence, Replayer, ReplayResult, load_history
from grctl.workflow.workflow import Workflow

__all__ = ["Divergence", "ReplayResult", "Replayer", "assert_replays", "load_history"]


def assert_replays(workflows: Iterable[Workflow], *paths: str | Path) -> list[ReplayResult]:
    """Replay every run of the history files given (files, or folders of ``*.jsonl``); raise on a divergence.

    Args:
        workflows: the code to check.
        paths: `grctl workflow history ID --json` outputs, or folders of them.

    Returns:
        The results, one per run.

    Raises:
        AssertionError: a run diverged (the message names the file, the step, the position, the
            recorded and the called, and the code's line), or no history was found.
    """
    replayer = Replayer(workflows)
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files:
        raise AssertionError(f"no history files in {[str(p) for p in paths]}")
    results = []
    for f in files:
        for run in load_history(f):
            result = replayer.replay(run)
            if result.divergence is not None:
                raise AssertionError(f"{f}: run {result.run_id} of {result.wf_id!r}: {result.divergence.message}")
            results.append(result)
    return results
