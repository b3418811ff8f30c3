"""Testing sources and emits in process: records written to a source's topic start runs and send events."""

# --8<-- [start:all]
import json

import pytest

from sources import ORDERS, PAYMENTS, SHIPMENTS, SOURCES, order


@pytest.fixture
def grctl_workflows():
    return [order]


@pytest.fixture
def grctl_env_options():
    return {"sources": SOURCES}  # routed as a worker routes them


async def test_an_order_and_its_payment_ship_it(grctl_env):
    grctl_env.produce(ORDERS, {"order": "A-1", "amount": 30}, key="A-1")  # starts run A-1
    await grctl_env.settle()
    handle = await grctl_env.client.get_workflow_handle("A-1")
    grctl_env.produce(PAYMENTS, {"order": "A-1", "amount": 30}, key="A-1")  # its event
    assert await handle.result() == {"shipped": True, "paid": 30}
    [shipment] = grctl_env.emitted(SHIPMENTS)
    assert shipment.key() == b"A-1" and json.loads(shipment.value()) == {"order": "A-1"}


# --8<-- [end:all]
