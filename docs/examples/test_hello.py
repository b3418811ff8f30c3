"""Testing the first workflow without Kafka (`pytest docs/examples/test_hello.py`)."""

# --8<-- [start:all]
import pytest

from hello import greeter


@pytest.fixture
def grctl_workflows():
    return [greeter]  # what the grctl_env fixture serves


async def test_greeter_greets(grctl_env):
    handle = await grctl_env.client.start_workflow("Greeter", "g-1", {"name": "Ada"})
    assert await handle.result() == "Hello, Ada!"
    steps = [e.msg.step_name for e in await grctl_env.history("g-1") if e.kind == "step.started"]
    assert steps == ["start", "greet"]


# --8<-- [end:all]
