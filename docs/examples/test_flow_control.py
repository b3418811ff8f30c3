"""Testing a limited workflow without Kafka (`pytest docs/examples/test_flow_control.py`)."""

# --8<-- [start:all]
from flow_control import PAYMENTS_API, payments

from grctl import Limiter
from grctl.testing import WorkflowEnvironment


async def test_payments_go_through_the_limiter_and_give_their_permits_back():
    async with WorkflowEnvironment([payments], limiters=[PAYMENTS_API]) as env:
        handle = await env.client.start_workflow("Payment", "p-1", {"tenant": "acme", "customer": "c-1", "cents": 5})
        assert await handle.result() == "receipt-c-1-5"
        api = await env.client.describe_limiter("payments-api")
        assert (api.granted, api.in_use, api.waiting) == (1, 0, 0)


async def test_a_slow_rate_takes_no_real_time():
    slow = Limiter("payments-api", rate="1/min")  # the environment's clock skips ahead
    async with WorkflowEnvironment([payments], limiters=[slow]) as env:
        runs = [{"tenant": "acme", "customer": f"c-{i}", "cents": i} for i in range(3)]
        handles = [await env.client.start_workflow("Payment", f"p-{i}", r) for i, r in enumerate(runs)]
        assert [await h.result() for h in handles] == ["receipt-c-0-0", "receipt-c-1-1", "receipt-c-2-2"]


# --8<-- [end:all]
