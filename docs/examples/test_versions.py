"""Replay safety in tests: new code must repeat the journaled calls of runs recorded on old code."""

# --8<-- [start:all]
import pytest

from grctl import Context, Directive, Workflow, task
from grctl.testing import Replayer


@task()
async def charge(amount: float) -> str:
    return f"charged {amount}"


def billing(new_code: bool) -> Workflow:
    wf = Workflow(workflow_type="Billing")

    @wf.start()
    async def start(ctx: Context, amount: float) -> Directive:
        if new_code:  # the change under review: the charge moved before the timestamp
            receipt = await charge(amount)
            at = await ctx.now()
        else:
            at = await ctx.now()
            receipt = await charge(amount)
        return ctx.next.complete({"receipt": receipt, "at": at.isoformat()})

    return wf


@pytest.fixture
def grctl_workflows():
    return [billing(new_code=False)]  # the code in production


async def test_the_change_does_not_replay_runs_recorded_on_the_old_code(grctl_env):
    handle = await grctl_env.client.start_workflow("Billing", "b-1", {"amount": 12.5})
    await handle.result()
    recorded = await grctl_env.history("b-1")

    assert (await Replayer([billing(new_code=False)]).replay_async(recorded)).divergence is None
    divergence = (await Replayer([billing(new_code=True)]).replay_async(recorded)).divergence
    assert divergence is not None and divergence.step == "start" and divergence.position == 0
    print(divergence.message)  # what was recorded, what the new code called, and the code's line


# --8<-- [end:all]
