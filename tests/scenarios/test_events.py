"""Event scenarios EVT-1..14 of BEHAVIOUR.md §3, and event behaviour users rely on (§2.3, §2.7)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import msgspec
import pytest

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.errors import WorkflowError
from grctl.kafka.partitioner import partition_for
from grctl.models import HistoryKind
from grctl.models.history import EventReceived
from tests.scenarios.support import (
    ModelPayload,
    StructPayload,
    count_of,
    history,
    index_of,
    kinds,
    of_kind,
    run_kinds,
    start,
    wait_for_history,
    wait_for_kind,
)

pytestmark = pytest.mark.kafka


# --------------------------------------------------------------------------------------------
# "waiting wf": start -> wait(); event finish(result: str = "done") -> complete(result).

waiting_wf = Workflow(workflow_type="EvtWaiting")


@waiting_wf.start()
async def waiting_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@waiting_wf.event()
async def finish(ctx: Context, result: str = "done") -> Directive:
    return ctx.next.complete(result)


# EVT-1: two events, each completing with its own name.
approval_wf = Workflow(workflow_type="EvtApproval")


@approval_wf.start()
async def approval_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@approval_wf.event()
async def approve(ctx: Context) -> Directive:
    return ctx.next.complete("approve")


@approval_wf.event()
async def reject(ctx: Context) -> Directive:
    return ctx.next.complete("reject")


# EVT-2: an event handler that waits again.
two_events_wf = Workflow(workflow_type="EvtTwoEvents")


@two_events_wf.start()
async def two_events_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@two_events_wf.event()
async def first_event(ctx: Context) -> Directive:
    return ctx.next.wait()


@two_events_wf.event()
async def second_event(ctx: Context) -> Directive:
    return ctx.next.complete("done-after-second")


# EVT-3: @event(timeout=) limits how long the handler may run.
slow_handler_wf = Workflow(workflow_type="EvtSlowHandler")


@slow_handler_wf.start()
async def slow_handler_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@slow_handler_wf.event(name="finish", timeout=timedelta(milliseconds=100))
async def slow_finish(ctx: Context) -> Directive:
    await asyncio.sleep(1)
    return ctx.next.complete("too late")


# EVT-8: any payload reaches `value: Any` unchanged.
any_payload_wf = Workflow(workflow_type="EvtAnyPayload")


@any_payload_wf.start()
async def any_payload_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@any_payload_wf.event()
async def receive(ctx: Context, value: Any = None) -> Directive:
    return ctx.next.complete(value)


# EVT-9 / EVT-10: typed payloads.
typed_payload_wf = Workflow(workflow_type="EvtTypedPayload")


@typed_payload_wf.start()
async def typed_payload_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@typed_payload_wf.event()
async def receive_struct(ctx: Context, value: StructPayload) -> Directive:
    if not isinstance(value, StructPayload):
        raise TypeError(f"expected StructPayload, got {type(value).__name__}")
    return ctx.next.complete(value)


@typed_payload_wf.event()
async def receive_model(ctx: Context, value: ModelPayload) -> Directive:
    if not isinstance(value, ModelPayload):
        raise TypeError(f"expected ModelPayload, got {type(value).__name__}")
    return ctx.next.complete(value)


# EVT-13 / EVT-14: wait timeouts.
wait_timeout_step_wf = Workflow(workflow_type="EvtWaitTimeoutStep")


@wait_timeout_step_wf.start()
async def wait_timeout_step_start(ctx: Context) -> Directive:
    return ctx.next.wait(timeout=timedelta(milliseconds=100), on_timeout=on_timeout)


@wait_timeout_step_wf.step()
async def on_timeout(ctx: Context) -> Directive:
    return ctx.next.complete("timed_out")


wait_timeout_fail_wf = Workflow(workflow_type="EvtWaitTimeoutFail")


@wait_timeout_fail_wf.start()
async def wait_timeout_fail_start(ctx: Context) -> Directive:
    return ctx.next.wait(timeout=timedelta(milliseconds=100))


# Binding of event payloads (BEHAVIOUR.md §2.3).
binding_wf = Workflow(workflow_type="EvtBinding")


@binding_wf.start()
async def binding_start(ctx: Context) -> Directive:
    return ctx.next.wait()


@binding_wf.event()
async def note(ctx: Context, text: str) -> Directive:
    return ctx.next.complete({"text": text})


@binding_wf.event()
async def whole(ctx: Context, data: dict[str, Any]) -> Directive:
    return ctx.next.complete({"data": data})


@binding_wf.event()
async def pair(ctx: Context, left: str, right: int) -> Directive:
    return ctx.next.complete({"left": left, "right": right})


# The seed page's name for wait(): ctx.next.wait_for_event().
seed_wait_wf = Workflow(workflow_type="EvtSeedWait")


@seed_wait_wf.start()
async def seed_wait_start(ctx: Context) -> Directive:
    return ctx.next.wait_for_event()


@seed_wait_wf.event()
async def go(ctx: Context) -> Directive:
    return ctx.next.complete("went")


# Events are handled one at a time, in arrival order (BEHAVIOUR.md §2.7).
ordered_wf = Workflow(workflow_type="EvtOrdered")


@ordered_wf.start()
async def ordered_start(ctx: Context) -> Directive:
    ctx.store.put("items", [])
    return ctx.next.wait()


@ordered_wf.event()
async def add(ctx: Context, item: str) -> Directive:
    items = await ctx.store.get("items", list[str])
    await asyncio.sleep(0.05)  # a handler that takes a moment: later events must queue behind it
    ctx.store.put("items", [*items, item])
    return ctx.next.wait()


@ordered_wf.event()
async def done(ctx: Context) -> Directive:
    return ctx.next.complete(await ctx.store.get("items"))


# An event that arrives before the wait times out makes the wait timer stale (§2.7). The handler
# is held open (the worker runs in the test's event loop) until the test knows the wait's timer
# would have fired: the timers of a partition fire in due order, so once a witness run on the same
# partition, whose wait started later, has timed out, a timer still armed for this run would have
# fired too.
RACE_WAIT = timedelta(seconds=3)  # the event must be applied before it: far above the engine's latency
_race_release: dict[str, asyncio.Event] = {}
race_wf = Workflow(workflow_type="EvtBeatsWaitTimeout")


@race_wf.start()
async def race_start(ctx: Context) -> Directive:
    return ctx.next.wait(timeout=RACE_WAIT, on_timeout=race_on_timeout)


@race_wf.step()
async def race_on_timeout(ctx: Context) -> Directive:
    return ctx.next.complete("timeout-won")


@race_wf.event()
async def race_event(ctx: Context) -> Directive:
    await asyncio.wait_for(_race_release[ctx.run.wf_id].wait(), 60)  # runs past the original wait deadline
    return ctx.next.complete("event-won")


ALL = [
    race_wf,
    seed_wait_wf,
    ordered_wf,
    waiting_wf,
    approval_wf,
    two_events_wf,
    slow_handler_wf,
    any_payload_wf,
    typed_payload_wf,
    wait_timeout_step_wf,
    wait_timeout_fail_wf,
    binding_wf,
]


def event_received(events: list[Any]) -> list[EventReceived]:
    out = []
    for e in of_kind(events, HistoryKind.event_received):
        assert isinstance(e.msg, EventReceived)
        out.append(e.msg)
    return out


# --------------------------------------------------------------------------------------------


async def test_evt_1_each_run_gets_its_event(workers, client: Client) -> None:
    await workers.start(ALL)
    h_approve = await start(client, "EvtApproval", "evt-1-approve")
    h_reject = await start(client, "EvtApproval", "evt-1-reject")
    await wait_for_kind(client, h_approve, HistoryKind.wait_started)
    await wait_for_kind(client, h_reject, HistoryKind.wait_started)
    await h_approve.send("approve")
    await h_reject.send("reject")
    assert await h_approve.result(timeout=30) == "approve"
    assert await h_reject.result(timeout=30) == "reject"


async def test_evt_2_handler_waits_for_second_event(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtTwoEvents", "evt-2")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.send("first_event")
    await wait_for_history(client, handle, count_of(HistoryKind.wait_started, 2))
    await handle.send("second_event")
    assert await handle.result(timeout=30) == "done-after-second"


async def test_evt_3_event_handler_timeout(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtSlowHandler", "evt-3")
    await handle.send("finish")
    with pytest.raises(WorkflowError, match="step finish timed out"):
        await handle.result(timeout=30)


async def test_evt_4_event_payload_binds_parameter(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtWaiting", "evt-4")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.send("finish", {"result": "approved"})
    assert await handle.result(timeout=30) == "approved"


async def test_evt_5_event_payload_value(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtWaiting", "evt-5")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.send("finish", {"result": "payload-val"})
    assert await handle.result(timeout=30) == "payload-val"


async def test_evt_6_event_received_recorded(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtWaiting", "evt-6")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.send("finish")
    assert await handle.result(timeout=30) == "done"
    received = event_received(await history(client, handle))
    assert [r.event_name for r in received] == ["finish"]


async def test_evt_7_event_before_wait_is_queued(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtWaiting", "evt-7")
    await handle.send("finish")
    assert await handle.result(timeout=30) == "done"


EVT_8_CASES = [
    pytest.param({"value": "hello-string"}, "hello-string", id="a-str"),
    pytest.param({"value": 42}, 42, id="b-int"),
    pytest.param({"value": True}, True, id="c-bool"),
    pytest.param(
        {"value": {"nested": {"key": "val"}, "count": 3, "flag": True}},
        {"nested": {"key": "val"}, "count": 3, "flag": True},
        id="d-dict",
    ),
    pytest.param({"value": [1, "two", True]}, [1, "two", True], id="e-list"),
    pytest.param(None, None, id="f-none"),
]


@pytest.mark.parametrize(("payload", "expected"), EVT_8_CASES)
async def test_evt_8_any_payload_roundtrip(workers, client: Client, payload: Any, expected: Any) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtAnyPayload", "evt-8")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.send("receive", payload)
    result = await handle.result(timeout=30)
    assert result == expected
    assert type(result) is type(expected)
    received = event_received(await history(client, handle))
    assert len(received) == 1
    assert received[0].event_name == "receive"
    assert received[0].payload == payload
    assert type(received[0].payload) is type(payload)


async def test_evt_9_struct_payload(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtTypedPayload", "evt-9")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    sent = StructPayload(name="struct-event", count=9, tags=["x", "y"])
    await handle.send("receive_struct", {"value": sent})
    result = await handle.result(timeout=30)
    assert isinstance(result, dict)
    assert msgspec.convert(result, StructPayload) == sent


async def test_evt_10_pydantic_payload(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtTypedPayload", "evt-10")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    sent = ModelPayload(name="model-event", count=10, tags=["p"])
    await handle.send("receive_model", {"value": sent})
    result = await handle.result(timeout=30)
    assert isinstance(result, dict)
    assert ModelPayload.model_validate(result) == sent


async def test_evt_11_wait_started_recorded(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtWaiting", "evt-11")
    events = await wait_for_kind(client, handle, HistoryKind.wait_started)
    assert len(of_kind(events, HistoryKind.wait_started)) == 1


async def test_evt_12_event_received_after_wait_started(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtWaiting", "evt-12")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.send("finish")
    assert await handle.result(timeout=30) == "done"
    events = await history(client, handle)
    waited = index_of(events, HistoryKind.wait_started)
    received = index_of(events, HistoryKind.event_received)
    assert 0 <= waited < received, kinds(events)
    assert event_received(events)[0].event_name == "finish"


async def test_evt_13_wait_timeout_runs_timeout_step(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtWaitTimeoutStep", "evt-13")
    assert await handle.result(timeout=10) == "timed_out"
    events = await history(client, handle)
    assert of_kind(events, HistoryKind.wait_timed_out)
    assert of_kind(events, HistoryKind.run_completed)


async def test_evt_14_wait_timeout_without_step_fails(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "EvtWaitTimeoutFail", "evt-14")
    with pytest.raises(WorkflowError, match="wait timed out without"):
        await handle.result(timeout=30)
    events = await history(client, handle)
    assert run_kinds(events) == ["run.started", "run.failed"]


# --------------------------------------------------------------------------------------------
# Beyond the numbered scenarios.


async def test_send_unknown_event_raises(workers, client: Client) -> None:
    """Spec README rule 3: an event with no handler is rejected at send time with
    `WorkflowError` (the original accepted it and the run hung until its step timed out).
    The rejected event leaves no trace, and the run still takes its real events."""
    await workers.start(ALL)
    handle = await start(client, "EvtWaiting", "evt-unknown")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    with pytest.raises(WorkflowError, match="no_such_event"):
        await handle.send("no_such_event", {"x": 1})
    await handle.send("finish", {"result": "still-ok"})
    assert await handle.result(timeout=30) == "still-ok"
    assert [r.event_name for r in event_received(await history(client, handle))] == ["finish"]


async def test_send_to_finished_run_raises(workers, client: Client) -> None:
    """Spec README rule 3: sending to a finished run raises `WorkflowError` (the original
    ignored the server's refusal)."""
    await workers.start(ALL)
    handle = await start(client, "EvtWaiting", "evt-finished")
    await handle.send("finish")
    assert await handle.result(timeout=30) == "done"
    with pytest.raises(WorkflowError):
        await handle.send("finish")


async def test_binding_scalar_payload_passes_through(workers, client: Client) -> None:
    """§2.3 rule 2: a scalar payload into a one-parameter handler is passed straight through."""
    await workers.start(ALL)
    handle = await start(client, "EvtBinding", "evt-bind-scalar")
    await handle.send("note", "plain text")
    assert await handle.result(timeout=30) == {"text": "plain text"}


async def test_binding_dict_without_param_key_is_whole_payload(workers, client: Client) -> None:
    """§2.3 rule 2: a dict without the parameter's name as a key is the whole value."""
    await workers.start(ALL)
    handle = await start(client, "EvtBinding", "evt-bind-whole")
    await handle.send("whole", {"a": 1, "b": [2, 3]})
    assert await handle.result(timeout=30) == {"data": {"a": 1, "b": [2, 3]}}


async def test_binding_dict_with_param_key_is_unwrapped(workers, client: Client) -> None:
    """§2.3 rule 2: a dict holding the parameter's name is unwrapped to that key's value."""
    await workers.start(ALL)
    handle = await start(client, "EvtBinding", "evt-bind-unwrap")
    await handle.send("whole", {"data": {"inner": True}, "ignored": 1})
    assert await handle.result(timeout=30) == {"data": {"inner": True}}


async def test_binding_several_params_extra_keys_ignored(workers, client: Client) -> None:
    """§2.3 rule 3: each parameter takes its key, converted to its type; extra keys are ignored."""
    await workers.start(ALL)
    handle = await start(client, "EvtBinding", "evt-bind-pair")
    await handle.send("pair", {"left": "l", "right": 7, "extra": "ignored"})
    assert await handle.result(timeout=30) == {"left": "l", "right": 7}


async def test_binding_several_params_missing_key_fails_run(workers, client: Client) -> None:
    """§2.3 rule 3: a missing key is a `KeyError` (defaults are not used), so the step fails."""
    await workers.start(ALL)
    handle = await start(client, "EvtBinding", "evt-bind-missing")
    await handle.send("pair", {"left": "l"})
    with pytest.raises(WorkflowError, match="KeyError"):
        await handle.result(timeout=30)
    events = await history(client, handle)
    assert run_kinds(events) == ["run.started", "run.failed"]
    assert of_kind(events, HistoryKind.step_failed)


async def test_binding_several_params_non_dict_fails_run(workers, client: Client) -> None:
    """§2.3 rule 3: with two or more parameters the payload must be a dict (else `TypeError`)."""
    await workers.start(ALL)
    handle = await start(client, "EvtBinding", "evt-bind-scalar-pair")
    await handle.send("pair", "not a dict")
    with pytest.raises(WorkflowError, match="TypeError"):
        await handle.result(timeout=30)


async def test_binding_none_payload_required_param_fails_run(workers, client: Client) -> None:
    """§2.3 rule 1: a None payload skips binding, so a required parameter is a `TypeError`."""
    await workers.start(ALL)
    handle = await start(client, "EvtBinding", "evt-bind-none")
    await handle.send("note")
    with pytest.raises(WorkflowError, match="TypeError"):
        await handle.result(timeout=30)


async def test_wait_for_event_alias(workers, client: Client) -> None:
    """Spec README rule 1: the seed page's `ctx.next.wait_for_event()` works like `wait()`."""
    await workers.start(ALL)
    handle = await start(client, "EvtSeedWait", "evt-seed-wait")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    await handle.send("go")
    assert await handle.result(timeout=30) == "went"


async def test_events_handled_in_arrival_order(workers, client: Client) -> None:
    """Events sent back to back, some while a handler runs, are handled one at a time in
    arrival order (BEHAVIOUR.md §2.7); none is lost."""
    await workers.start(ALL)
    handle = await start(client, "EvtOrdered", "evt-ordered")
    items = [f"item-{i}" for i in range(8)]
    for item in items:
        await handle.send("add", {"item": item})
    await handle.send("done")
    assert await handle.result(timeout=30) == items
    events = await history(client, handle)
    assert [r.event_name for r in event_received(events)] == ["add"] * len(items) + ["done"]
    assert len(of_kind(events, HistoryKind.wait_started)) == len(items) + 1


async def test_event_before_wait_timeout_disarms_timer(workers, client: Client, connection: Connection) -> None:
    """An event that arrives before the wait times out wins: the timeout step never runs, even
    though the event handler is still running when the wait deadline passes (§2.7)."""
    release = _race_release["evt-race"] = asyncio.Event()
    await workers.start(ALL)
    handle = await start(client, "EvtBeatsWaitTimeout", "evt-race")
    await wait_for_kind(client, handle, HistoryKind.wait_started)
    witness_id = next(
        f"evt-race-witness-{i}"
        for i in range(1000)
        if partition_for(f"evt-race-witness-{i}", connection.num_partitions)
        == partition_for("evt-race", connection.num_partitions)
    )
    witness = await start(client, "EvtBeatsWaitTimeout", witness_id)
    await handle.send("race_event")
    events = await wait_for_kind(client, handle, HistoryKind.event_received)
    (waiting,) = of_kind(events, HistoryKind.wait_started)
    (received,) = of_kind(events, HistoryKind.event_received)
    assert waiting.timestamp is not None and received.timestamp is not None
    assert received.timestamp < waiting.timestamp + RACE_WAIT, "the event came after the wait deadline: no race"
    assert await witness.result(timeout=30) == "timeout-won"
    (witness_waiting,) = of_kind(await history(client, witness), HistoryKind.wait_started)
    assert witness_waiting.timestamp is not None
    # Its timer was due no earlier than this run's (on a tie, the timer key of "evt-race" sorts first).
    assert witness_waiting.timestamp >= waiting.timestamp
    release.set()
    assert await handle.result(timeout=30) == "event-won"
    events = await history(client, handle)
    assert not of_kind(events, HistoryKind.wait_timed_out)
    assert [e.msg.step_name for e in of_kind(events, HistoryKind.step_started)] == ["start", "race_event"]
