"""pytest fixtures for testing workflows (loaded by pytest through grctl's `pytest11` entry point).

Tell the fixtures which workflows to serve with a fixture of your own, then take `grctl_env`
(in process, time skipping) or `grctl_kafka_env` (a real broker at `GRCTL_KAFKA_SERVERS`; the
test is skipped when it is not set):

```python
# conftest.py
import pytest
from myapp.workflows import WORKFLOWS

@pytest.fixture
def grctl_workflows():
    return WORKFLOWS

# test_orders.py
async def test_order_ships(grctl_env):
    handle = await grctl_env.client.start_workflow("Order", "o-1", {"items": ["book"]})
    assert (await handle.result())["status"] == "shipped"
```

To run one test on both, parametrize over the fixture names and take `request.getfixturevalue(name)`.
The fixtures need pytest-asyncio (`pip install pytest-asyncio`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover  # the fixtures say what is missing when used
    pytest_asyncio = None  # type: ignore[assignment]  # checked where the fixtures are made

__all__ = ["grctl_env", "grctl_env_options", "grctl_kafka_env", "grctl_kafka_servers", "grctl_workflows"]


def _async_fixture(fn: Any) -> Any:
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(fn)

    @pytest.fixture
    def missing() -> None:
        pytest.fail("grctl's fixtures are async: install pytest-asyncio (pip install pytest-asyncio)")

    missing.__name__ = fn.__name__
    return missing


@pytest.fixture
def grctl_workflows() -> list[Any]:
    """The workflows `grctl_env` and `grctl_kafka_env` serve: override this fixture in your conftest.py."""
    pytest.fail(
        "define a fixture `grctl_workflows` (e.g. in conftest.py) that returns the workflows to serve: "
        "@pytest.fixture\ndef grctl_workflows():\n    return [order, approval]"
    )


@pytest.fixture
def grctl_env_options() -> dict[str, Any]:
    """More keyword arguments for `grctl_env`'s `WorkflowEnvironment` (e.g. `sources`, `start_time`): override it."""
    return {}


@pytest.fixture(scope="session")
def grctl_kafka_servers() -> str:
    """The broker of `grctl_kafka_env`: GRCTL_KAFKA_SERVERS (the test is skipped when it is not set)."""
    from grctl.settings import kafka_servers_set

    servers = kafka_servers_set()
    if servers is None:
        pytest.skip("grctl_kafka_env needs a broker: set GRCTL_KAFKA_SERVERS (e.g. `grctl dev kafka start`)")
    return servers


@_async_fixture
async def grctl_env(grctl_workflows: list[Any], grctl_env_options: dict[str, Any]) -> AsyncIterator[Any]:
    """A `grctl.testing.WorkflowEnvironment` serving `grctl_workflows`: in process, time skipping."""
    from grctl.testing.env import WorkflowEnvironment

    async with WorkflowEnvironment(grctl_workflows, **grctl_env_options) as env:
        yield env


@_async_fixture
async def grctl_kafka_env(grctl_workflows: list[Any], grctl_kafka_servers: str) -> AsyncIterator[Any]:
    """A `grctl.testing.KafkaWorkflowEnvironment`: a namespace of its own on the broker, a worker, a client."""
    from grctl.testing.kafka_env import KafkaWorkflowEnvironment

    async with KafkaWorkflowEnvironment(grctl_workflows, servers=grctl_kafka_servers) as env:
        yield env
