"""The identity of operator actions through the Python client: set per client, per call, checked, recorded."""

from __future__ import annotations

import os

import pytest

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.errors import InvalidArgumentError
from grctl.models.history import HistoryKind
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

held = Workflow(workflow_type="IdentityHeld")


@held.start()
async def held_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@held.event()
async def nudge(ctx: Context) -> Directive:
    return ctx.next.wait()


async def test_client_identity_is_recorded_per_client_and_per_call(workers, connection: Connection) -> None:
    await workers.start([held])
    async with Client(connection, identity="billing-service") as client:
        handle = await client.start_workflow("IdentityHeld", "held-1")

        async def waits() -> bool:
            return (await client.describe("held-1")).waiting_for_event

        await wait_until_async("held-1 waits", waits, 30)
        await client.send_event("held-1", "nudge")
        await client.send_event("held-1", "nudge", identity="alice via support tool")
        await handle.cancel()
        history = await client.get_history("held-1")
        who = [(e.kind, e.msg.identity) for e in history if getattr(e.msg, "identity", None)]
        assert who == [
            (HistoryKind.run_started, "billing-service"),
            (HistoryKind.event_received, "billing-service"),
            (HistoryKind.event_received, "alice via support tool"),
            (HistoryKind.run_cancelled, "billing-service"),
        ]
        info = await client.describe("held-1")
        assert (info.started_by, info.cancel_by) == ("billing-service", "billing-service")

    default = Client(connection)
    assert default.identity.endswith(f"/{os.getpid()}") and "@" in default.identity
    for bad, why in (("", "non-empty"), ("x" * 201, "at most 200"), ("a\nb", "control characters")):
        with pytest.raises(InvalidArgumentError, match=why):
            Client(connection, identity=bad)
        with pytest.raises(InvalidArgumentError, match=why):
            await default.cancel_run("held-1", identity=bad)
