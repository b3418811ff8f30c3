"""Testing the expense workflow: 3 days and a day of sleep pass in milliseconds."""

# --8<-- [start:all]
from datetime import timedelta

import pytest

from approval import expense


@pytest.fixture
def grctl_workflows():
    return [expense]


async def test_an_approved_expense_is_paid_a_day_later(grctl_env):
    handle = await grctl_env.client.start_workflow("Expense", "e-1", {"amount": 42.0, "by": "ada"})
    await handle.send("approve", {"approver": "grace"})
    approved_at = grctl_env.now()
    result = await handle.result()  # the clock skips the day of ctx.sleep
    assert result["paid"] and result["approver"] == "grace"
    assert grctl_env.now() - approved_at == timedelta(days=1)


async def test_an_expense_nobody_decides_on_is_escalated_after_3_days(grctl_env):
    handle = await grctl_env.client.start_workflow("Expense", "e-2", {"amount": 9.5, "by": "bob"})
    assert await handle.result() == {"paid": False, "reason": "no decision within 3 days"}


async def test_the_status_after_2_days(grctl_env):
    handle = await grctl_env.client.start_workflow("Expense", "e-3", {"amount": 1.0, "by": "eve"})
    await grctl_env.sleep(timedelta(days=2))  # moves the clock; the 3-day timeout has not fired
    assert await handle.query("status") == "waiting for a decision"


async def test_the_payment_step_replays_after_a_crash(grctl_env):
    handle = await grctl_env.client.start_workflow("Expense", "e-4", {"amount": 5.0, "by": "joe"})
    await handle.send("approve", {"approver": "grace"})
    grctl_env.crash_next_step()  # the worker "dies" once the step's calls are journaled
    result = await handle.result()
    kinds = [str(e.kind) for e in await grctl_env.history("e-4")]
    assert kinds.count("sleep.recorded") == 1  # the day of sleep happened once
    assert result["paid"]


# --8<-- [end:all]
