"""Testing workflows: run them in process with time skipping, and replay recorded runs against code.

```python
# a test of your own: the real engine in process, 7 days pass in milliseconds
from grctl.testing import WorkflowEnvironment

async def test_approval_expires():
    async with WorkflowEnvironment([approval]) as env:
        handle = await env.client.start_workflow("Approval", "a-1", {"amount": 50})
        assert await handle.result() == "expired"
```

`WorkflowEnvironment` (`env.py`) runs workflows on the engine's own code paths with an
in-process transport and a `VirtualClock`; `KafkaWorkflowEnvironment` (`kafka_env.py`) the
same surface on a real broker; the pytest plugin (`pytest_plugin.py`) ships the fixtures
`grctl_env` and `grctl_kafka_env`. Importing this package loads none of them (nor the worker)
until a name is used.

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
from typing import TYPE_CHECKING, Any

from grctl import _lazy
from grctl.testing.replayer import Divergence, Replayer, ReplayResult, load_history
from grctl.workflow.workflow import Workflow

if TYPE_CHECKING:
    from grctl.testing.clock import VirtualClock
    from grctl.testing.env import WorkflowEnvironment
    from grctl.testing.kafka_env import KafkaWorkflowEnvironment

__all__ = [
    "Divergence",
    "KafkaWorkflowEnvironment",
    "ReplayResult",
    "Replayer",
    "VirtualClock",
    "WorkflowEnvironment",
    "assert_replays",
    "load_history",
]

_EXPORTS = {
    "WorkflowEnvironment": "grctl.testing.env",
    "KafkaWorkflowEnvironment": "grctl.testing.kafka_env",
    "VirtualClock": "grctl.testing.clock",
}


def __getattr__(name: str) -> Any:
    return _lazy.load(__name__, _EXPORTS, name)


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
