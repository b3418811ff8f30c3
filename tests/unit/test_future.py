"""`WorkflowFuture` (BEHAVIOUR.md §1.10) and the step's `ChildHandle`, on a real event loop.

The subscriptions here are plain implementations of what the client's reader and the
partition processor provide: a feed that delivers a run's end to the futures following it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from grctl.codec import default_codec
from grctl.engine.records import CancelCmd, EventCmd, StartCmd
from grctl.errors import InvalidArgumentError, NotAvailableInStepError, WorkflowError
from grctl.future import WorkflowFuture
from grctl.models.run_info import RunInfo, RunStatus
from grctl.worker.child import ChildHandle
from grctl.worker.runtime import JournalEntry, StepRuntime


class Feed:
    """Delivers the end of one run to the futures that follow it."""

    def __init__(self) -> None:
        self.followers: list[WorkflowFuture] = []
        self.subscribed = 0

    def subscribe(self, fut: WorkflowFuture) -> Callable[[], None]:
        self.subscribed += 1
        self.followers.append(fut)
        return lambda: self.followers.remove(fut)

    def end(self, status: RunStatus, **kwargs: Any) -> None:
        for fut in list(self.followers):
            fut.settle(status, **kwargs)


def run_info() -> RunInfo:
    return RunInfo(id="run-1", wf_id="wf-1", wf_type="T", status=RunStatus.running)


async def test_start_follows_the_run_once_and_done_stops_following() -> None:
    feed = Feed()
    fut = WorkflowFuture(run_info(), feed.subscribe)
    assert not fut.is_started
    fut.start()
    await fut.start()  # the original's coroutine style
    assert fut.is_started and feed.subscribed == 1
    feed.end(RunStatus.completed, result={"ok": True})
    assert not fut.is_started and feed.followers == []
    assert await fut == {"ok": True}
    assert fut.run_info.status == RunStatus.completed
    fut.start()
    assert not fut.is_started and feed.subscribed == 1  # done: nothing to follow


async def test_stop_unsubscribes_and_cancels_a_pending_future() -> None:
    feed = Feed()
    fut = WorkflowFuture(run_info(), feed.subscribe)
    fut.start()
    await fut.stop()
    assert not fut.is_started and feed.followers == [] and fut.cancelled()
    fut.stop()  # twice is fine
    assert fut.run_info.status == RunStatus.running


async def test_stop_keeps_an_outcome() -> None:
    feed = Feed()
    fut = WorkflowFuture(run_info(), feed.subscribe)
    fut.start()
    feed.end(RunStatus.completed, result=7)
    fut.stop()
    assert fut.result() == 7


async def test_an_outside_cancel_stops_following() -> None:
    feed = Feed()
    fut = WorkflowFuture(run_info(), feed.subscribe)
    fut.start()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fut, 0.01)  # cancels the future when it runs out
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert fut.cancelled() and not fut.is_started and feed.followers == []


def unretrieved_errors(make: Callable[[asyncio.AbstractEventLoop], None]) -> list[dict[str, Any]]:
    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    try:
        loop.run_until_complete(asyncio.sleep(0))
        make(loop)
        gc.collect()
    finally:
        loop.close()
    return reported


def test_discard_marks_the_exception_retrieved() -> None:
    def failed(discard: bool) -> Callable[[asyncio.AbstractEventLoop], None]:
        def make(loop: asyncio.AbstractEventLoop) -> None:
            async def body() -> None:
                feed = Feed()
                fut = WorkflowFuture(run_info(), feed.subscribe)
                fut.start()
                feed.end(RunStatus.failed, error={"type": "ValueError", "message": "boom"})
                if discard:
                    await fut.discard()

            loop.run_until_complete(body())

        return make

    reported = unretrieved_errors(failed(discard=False))
    assert [ctx["message"] for ctx in reported] == ["WorkflowFuture exception was never retrieved"]
    assert isinstance(reported[0]["exception"], WorkflowError)
    assert unretrieved_errors(failed(discard=True)) == []


async def test_discard_of_a_pending_or_resolved_future() -> None:
    feed = Feed()
    pending = WorkflowFuture(run_info(), feed.subscribe)
    pending.start()
    pending.discard()
    assert pending.cancelled() and feed.followers == []
    resolved = WorkflowFuture(run_info(), feed.subscribe)
    resolved.start()
    feed.end(RunStatus.completed, result=1)
    resolved.discard()
    assert resolved.result() == 1


async def test_start_without_a_subscription_says_how_to_get_one() -> None:
    fut = WorkflowFuture(run_info())
    with pytest.raises(InvalidArgumentError, match=r"Client\.start_workflow"):
        fut.start()
    fut.discard()


async def test_wait_runs_out_without_cancelling() -> None:
    feed = Feed()
    fut = WorkflowFuture(run_info(), feed.subscribe)
    fut.start()
    with pytest.raises(TimeoutError, match=r"^run run-1 of workflow id 'wf-1' did not finish within 0\.01s$"):
        await fut.wait(0.01)
    assert not fut.done() and fut.is_started
    asyncio.get_running_loop().call_later(0.01, lambda: feed.end(RunStatus.completed, result=3))
    assert await fut.wait(5) == 3


@pytest.mark.parametrize(
    ("status", "raises", "message"),
    [
        (RunStatus.failed, WorkflowError, "ValueError: boom"),
        (RunStatus.cancelled, asyncio.CancelledError, "Workflow cancelled"),
        (RunStatus.terminated, asyncio.CancelledError, "Workflow terminated"),
        (RunStatus.timed_out, TimeoutError, "Workflow timed out after 2.5s"),
    ],
)
async def test_awaiting_raises_what_the_end_means(status: RunStatus, raises: type[BaseException], message: str) -> None:
    feed = Feed()
    fut = WorkflowFuture(run_info(), feed.subscribe)
    fut.start()
    feed.end(status, error={"type": "ValueError", "message": "boom"}, after_s=2.5)
    with pytest.raises(raises, match=f"^{message}$"):
        await fut.wait()
    assert fut.run_info.status == status


async def test_settle_from_a_describe_answer() -> None:
    fut = WorkflowFuture(run_info())
    assert not fut.settle_from(run_info())  # still running
    started = datetime(2026, 1, 1, tzinfo=UTC)
    info = RunInfo(
        id="run-1", wf_id="wf-1", wf_type="T", status=RunStatus.timed_out,
        started_at=started, ended_at=started + timedelta(seconds=3),
    )  # fmt: skip
    assert fut.settle_from(info)
    with pytest.raises(TimeoutError, match=r"^Workflow timed out after 3s$"):
        fut.result()


# ---------------------------------------------------------------------------- ChildHandle


class ChildSink:
    """What the partition processor gives a step (its `StepPort`): journal, directives, child outcomes.

    The directives it is asked to send are kept as the records the processor would stage.
    """

    def __init__(self) -> None:
        self.journal: list[JournalEntry] = []
        self.sent: list[Any] = []
        self.outcomes: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def journal_append(self, runtime: StepRuntime, position: int, entry: JournalEntry) -> None:
        self.journal.append(entry)

    def history_append(self, runtime: StepRuntime, kind: str, msg: Any, operation_id: str = "") -> None:
        pass

    def start_child(self, runtime: StepRuntime, **kw: Any) -> None:
        self.sent.append(StartCmd(**{k: v for k, v in kw.items() if k != "callback_step"}))

    def send_event(self, runtime: StepRuntime, **kw: Any) -> None:
        self.sent.append(EventCmd(**kw))

    def cancel_run(self, runtime: StepRuntime, **kw: Any) -> None:
        self.sent.append(CancelCmd(**kw))

    def child_outcome(self, runtime: StepRuntime, child_wf_id: str) -> asyncio.Future[dict[str, Any]]:
        return self.outcomes.setdefault(child_wf_id, asyncio.get_running_loop().create_future())


def child_handle(sink: ChildSink, recorded: list[JournalEntry] | None = None) -> ChildHandle:
    rt = StepRuntime(
        wf_id="parent", run_id="p-run", wf_type="P", step_name="s", seq=1, recorded=recorded or [], sink=sink
    )
    info = RunInfo(id="c-run", wf_id="child", wf_type="C", status=RunStatus.running, timeout=4.0)
    return ChildHandle(info, rt, default_codec())


async def test_child_future_follows_the_outcome() -> None:
    sink = ChildSink()
    handle = child_handle(sink)
    assert handle.future.is_started
    sink.outcomes["child"].set_result({"status": "completed", "result": {"n": 2}})
    assert await handle.result(timeout=5) == {"n": 2}
    assert not handle.future.is_started


@pytest.mark.parametrize(
    ("outcome", "raises", "message"),
    [
        ({"status": "failed", "error": {"type": "ValueError", "message": "bad"}}, WorkflowError, "ValueError: bad"),
        (
            {"status": "cancelled", "error": {"type": "Cancelled", "message": "x"}},
            asyncio.CancelledError,
            "Workflow cancelled",
        ),
        ({"status": "terminated"}, asyncio.CancelledError, "Workflow terminated"),
        ({"status": "timed_out"}, TimeoutError, "Workflow timed out after 4s"),
    ],
)
async def test_child_outcome_mapping(outcome: dict[str, Any], raises: type[BaseException], message: str) -> None:
    sink = ChildSink()
    handle = child_handle(sink)
    sink.outcomes["child"].set_result(outcome)
    with pytest.raises(raises, match=f"^{message}$"):
        await handle.result()
    if raises is WorkflowError:
        exc = handle.future.exception()
        assert isinstance(exc, WorkflowError) and (exc.wf_id, exc.run_id) == ("child", "c-run")


async def test_child_stop_and_discard() -> None:
    sink = ChildSink()
    handle = child_handle(sink)
    await handle.future.stop()
    assert handle.future.cancelled() and not handle.future.is_started
    sink.outcomes["child"].set_result({"status": "completed", "result": 1})
    await asyncio.sleep(0)
    assert handle.future.cancelled()  # unsubscribed: the outcome no longer reaches it

    other = child_handle(ChildSink())
    other.discard()
    assert other.future.cancelled()


async def test_child_operations_are_journaled_once() -> None:
    sink = ChildSink()
    handle = child_handle(sink)
    await handle.send("go", {"x": 1})
    await handle.cancel("enough")
    await handle.terminate("really")
    assert [type(cmd).__name__ for cmd in sink.sent] == ["EventCmd", "CancelCmd", "CancelCmd"]
    assert [(e.kind, e.name) for e in sink.journal] == [
        ("child_send", "child:go"), ("child_cancel", "child"), ("child_terminate", "child"),
    ]  # fmt: skip
    handle.discard()

    again = ChildSink()
    replayed = child_handle(again, list(sink.journal))
    await replayed.send("go", {"x": 1})
    await replayed.cancel("enough")
    await replayed.terminate("really")
    assert again.sent == [] and again.journal == []
    replayed.discard()


async def test_child_describe_and_query_are_not_available_in_a_step() -> None:
    handle = child_handle(ChildSink())
    with pytest.raises(NotAvailableInStepError, match="from a Client") as info:
        await handle.describe()
    assert info.value.operation == "describe" and isinstance(info.value, NotImplementedError)
    with pytest.raises(NotAvailableInStepError):
        await handle.query("q")
    handle.discard()
