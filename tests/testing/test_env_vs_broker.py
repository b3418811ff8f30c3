"""The in-process environment and a real broker agree: the same scenarios, the same histories.

Each scenario of `tests/testing/comparison.py` (events, timers, tasks with retries, children,
queries, cancel) runs once in `grctl_env` and once in `grctl_kafka_env` (a worker and a
client on the session's broker); what the client saw and every run's history, event by event,
must be equal, timestamps, durations and ids aside.
"""

from __future__ import annotations

from typing import Any

import pytest

from grctl.testing import KafkaWorkflowEnvironment, WorkflowEnvironment
from grctl.workflow.workflow import Workflow
from tests.testing import comparison

pytestmark = pytest.mark.kafka


@pytest.fixture
def grctl_workflows() -> list[Workflow]:
    return comparison.WORKFLOWS


async def _run(env: Any, name: str) -> tuple[dict[str, Any], dict[str, list[tuple[str, Any]]]]:
    comparison.CALLS.clear()
    seen = await comparison.SCENARIOS[name](env, f"cmp-{name}")
    histories = {wf_id: comparison.normalized(await env.history(wf_id)) for wf_id in seen.pop("ids")}
    return seen, histories


async def test_every_scenario_has_the_same_history_in_process_and_on_a_broker(
    grctl_env: WorkflowEnvironment, grctl_kafka_env: KafkaWorkflowEnvironment
) -> None:
    for name in sorted(comparison.SCENARIOS):
        local_seen, local = await _run(grctl_env, name)
        broker_seen, broker = await _run(grctl_kafka_env, name)
        assert local_seen == broker_seen, f"{name}: the client saw {local_seen} in process, {broker_seen} on a broker"
        for wf_id, events in broker.items():
            assert local[wf_id] == events, f"{name}: history of {wf_id} differs:\n{local[wf_id]}\n{events}"
            assert events, f"{name}: {wf_id} has no history"
