"""Context scenarios CTX-1..11 of BEHAVIOUR.md §3 (the crash tests CTX-4/6/8/10 live elsewhere)."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pydantic
import pytest

from grctl import Client, Connection, Context, Directive, Workflow
from grctl.errors import StoreKeyNotFoundError, WorkflowError
from grctl.models import (
    HistoryKind,
    RandomRecorded,
    SleepRecorded,
    StepFailed,
    TimestampRecorded,
    UuidRecorded,
)
from grctl.worker import task
from grctl.worker.codec import CodecRegistry
from tests.scenarios.support import history, of_kind, run_kinds, start

pytestmark = pytest.mark.kafka


class ModelValue(pydantic.BaseModel):
    label: str
    count: int


class StructValue(msgspec.Struct):
    label: str
    count: int


# --------------------------------------------------------------------------------------------
# CTX-1: a value put in one step is read in the next.

store_wf = Workflow(workflow_type="CtxStorePutGet")


@store_wf.start()
async def store_start(ctx: Context) -> Directive:
    ctx.store.put("key", "hello")
    return ctx.next.step(store_read)


@store_wf.step()
async def store_read(ctx: Context) -> Directive:
    return ctx.next.complete(await ctx.store.get("key"))


# --------------------------------------------------------------------------------------------
# CTX-2: every kind of value round-trips through the store.

types_wf = Workflow(workflow_type="CtxStoreTypes")


@types_wf.start()
async def types_start(ctx: Context) -> Directive:
    ctx.store.put("text", "text")
    ctx.store.put("int", 42)
    ctx.store.put("float", 3.14)
    ctx.store.put("bool", True)
    ctx.store.put("list", [1, 2, 3])
    ctx.store.put("dict", {"a": 1})
    ctx.store.put("model", ModelValue(label="hello", count=5))
    ctx.store.put("struct", StructValue(label="world", count=7))
    return ctx.next.step(types_read)


@types_wf.step()
async def types_read(ctx: Context) -> Directive:
    model = await ctx.store.get("model", ModelValue)
    struct = await ctx.store.get("struct", StructValue)
    out: dict[str, Any] = {key: await ctx.store.get(key) for key in ("text", "int", "float", "bool", "list", "dict")}
    out["types"] = {key: type(value).__name__ for key, value in out.items()}
    out["model"] = model
    out["struct"] = struct
    out["model_is_instance"] = isinstance(model, ModelValue)
    out["struct_is_instance"] = isinstance(struct, StructValue)
    return ctx.next.complete(out)


# --------------------------------------------------------------------------------------------
# CTX-3: reading a key that was never put.

missing_wf = Workflow(workflow_type="CtxStoreMissing")


@missing_wf.start()
async def missing_start(ctx: Context) -> Directive:
    return ctx.next.step(missing_read)


@missing_wf.step()
async def missing_read(ctx: Context) -> Directive:
    untyped = await ctx.store.get("never_put")
    try:
        await ctx.store.get("never_put", str)
    except StoreKeyNotFoundError as exc:
        return ctx.next.complete(
            {"outcome": "raised", "untyped": untyped, "key": exc.key, "is_key_error": isinstance(exc, KeyError)}
        )
    return ctx.next.complete({"outcome": "returned", "untyped": untyped})


# --------------------------------------------------------------------------------------------
# CTX-5/7/9/11: deterministic values are recorded in history.

det_wf = Workflow(workflow_type="CtxDeterministic")


@det_wf.start()
async def det_start(ctx: Context, what: str) -> Directive:
    if what == "now":
        return ctx.next.complete((await ctx.now()).isoformat())
    if what == "random":
        return ctx.next.complete(await ctx.random())
    if what == "uuid":
        return ctx.next.complete(str(await ctx.uuid4()))
    if what == "sleep":
        await ctx.sleep(timedelta(milliseconds=100))
        return ctx.next.complete("slept")
    raise ValueError(f"unknown case {what!r}")


# CTX-9: `sleep.recorded` is written when the sleep has ended (BEHAVIOUR.md §2.5: "really sleeps,
# then records"), not when it starts. A task that runs while the step sleeps shows which.


@task
async def during_sleep() -> str:
    return "ran while sleeping"


sleep_order_wf = Workflow(workflow_type="CtxSleepOrder")


@sleep_order_wf.start()
async def sleep_order_start(ctx: Context) -> Directive:
    # gather runs the sleep up to its wait first, then the task, which never suspends: the task's
    # events are staged while the sleep waits, whatever the machine's speed.
    _, marker = await asyncio.gather(ctx.sleep(timedelta(milliseconds=200)), during_sleep())
    return ctx.next.complete(marker)


# --------------------------------------------------------------------------------------------
# Beyond the numbered scenarios: ctx.run, and an unserializable store value.

run_info_wf = Workflow(workflow_type="CtxRunInfo")


@run_info_wf.start()
async def run_info_start(ctx: Context) -> Directive:
    return ctx.next.complete({"id": ctx.run.id, "wf_id": ctx.run.wf_id, "wf_type": ctx.run.wf_type})


class NotSerializable:
    pass


bad_put_wf = Workflow(workflow_type="CtxBadPut")


@bad_put_wf.start()
async def bad_put_start(ctx: Context) -> Directive:
    ctx.store.put("fine", 1)
    ctx.store.put("bad", NotSerializable())  # the step must fail on this line
    return ctx.next.complete("not reached")


# A run reads the store key "k" and returns what it found, then puts "k" for later runs.
fresh_store_wf = Workflow(workflow_type="CtxFreshStore")


@fresh_store_wf.start()
async def fresh_store_start(ctx: Context) -> Directive:
    ctx.store.put("seen_at_start", await ctx.store.get("k"))
    ctx.store.put("k", f"written by {ctx.run.id}")
    return ctx.next.step(fresh_store_read)


@fresh_store_wf.step()
async def fresh_store_read(ctx: Context) -> Directive:
    return ctx.next.complete({"seen_at_start": await ctx.store.get("seen_at_start"), "k": await ctx.store.get("k")})


# A put made after building the directive but before returning it.
late_put_wf = Workflow(workflow_type="CtxLatePut")


@late_put_wf.start()
async def late_put_start(ctx: Context) -> Directive:
    directive = ctx.next.step(late_put_read)
    ctx.store.put("late", "saved")
    return directive


@late_put_wf.step()
async def late_put_read(ctx: Context) -> Directive:
    return ctx.next.complete(await ctx.store.get("late"))


logger_wf = Workflow(workflow_type="CtxLogger")


@logger_wf.start()
async def logger_start(ctx: Context) -> Directive:
    ctx.logger.info("processing %s", ctx.run.wf_id)
    return ctx.next.complete("logged")


# A user class no built-in codec knows, with a codec registered by the application.
class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents

    def __hash__(self) -> int:
        return hash(self.cents)


def money_codec() -> CodecRegistry:
    codec = CodecRegistry()
    codec.register(Money, lambda m: {"cents": m.cents}, lambda tp, raw: tp(raw["cents"]))
    return codec


money_wf = Workflow(workflow_type="CtxCustomCodec")


@money_wf.start()
async def money_start(ctx: Context, price: Money) -> Directive:
    if not isinstance(price, Money):
        raise TypeError(f"expected Money, got {type(price).__name__}")
    ctx.store.put("price", Money(price.cents * 2))
    return ctx.next.step(money_read)


@money_wf.step()
async def money_read(ctx: Context) -> Directive:
    doubled = await ctx.store.get("price", Money)
    if not isinstance(doubled, Money):
        raise TypeError(f"expected Money, got {type(doubled).__name__}")
    return ctx.next.complete(doubled)


ALL = [
    money_wf,
    logger_wf,
    store_wf,
    types_wf,
    missing_wf,
    det_wf,
    sleep_order_wf,
    run_info_wf,
    bad_put_wf,
    fresh_store_wf,
    late_put_wf,
]


async def test_ctx_1_store_put_then_get(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "CtxStorePutGet", "ctx-1")
    assert await handle.result(timeout=30) == "hello"


async def test_ctx_2_store_value_types(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "CtxStoreTypes", "ctx-2")
    out = await handle.result(timeout=30)
    assert out["text"] == "text"
    assert out["int"] == 42
    assert math.isclose(out["float"], 3.14, abs_tol=1e-9)
    assert out["bool"] is True
    assert out["list"] == [1, 2, 3]
    assert out["dict"] == {"a": 1}
    assert out["types"] == {
        "text": "str",
        "int": "int",
        "float": "float",
        "bool": "bool",
        "list": "list",
        "dict": "dict",
    }
    assert out["model_is_instance"] is True
    assert out["struct_is_instance"] is True
    assert out["model"] == {"label": "hello", "count": 5}
    assert out["struct"] == {"label": "world", "count": 7}


async def test_ctx_3_missing_key_raises(workers, client: Client) -> None:
    """The typed read raises `StoreKeyNotFoundError` (a `KeyError`); the step catches it.

    Spec README rule 1 (the seed page): the untyped `get` of a missing key returns None, where
    the original raised.
    """
    await workers.start(ALL)
    handle = await start(client, "CtxStoreMissing", "ctx-3")
    out = await handle.result(timeout=30)
    assert out == {"outcome": "raised", "untyped": None, "key": "never_put", "is_key_error": True}


async def test_ctx_5_now_recorded(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "CtxDeterministic", "ctx-5", {"what": "now"})
    result = await handle.result(timeout=30)
    recorded = of_kind(await history(client, handle), HistoryKind.timestamp_recorded)
    assert len(recorded) == 1
    msg = recorded[0].msg
    assert isinstance(msg, TimestampRecorded)
    assert msg.value is not None
    assert msg.value == datetime.fromisoformat(result)


async def test_ctx_7_random_recorded_in_unit_interval(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "CtxDeterministic", "ctx-7", {"what": "random"})
    result = await handle.result(timeout=30)
    recorded = of_kind(await history(client, handle), HistoryKind.random_recorded)
    assert len(recorded) == 1
    msg = recorded[0].msg
    assert isinstance(msg, RandomRecorded)
    assert 0.0 <= msg.value < 1.0
    assert msg.value == result


async def test_ctx_9_sleep_recorded_duration(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "CtxDeterministic", "ctx-9", {"what": "sleep"})
    assert await handle.result(timeout=30) == "slept"
    recorded = of_kind(await history(client, handle), HistoryKind.sleep_recorded)
    assert len(recorded) == 1
    msg = recorded[0].msg
    assert isinstance(msg, SleepRecorded)
    assert msg.duration_ms == 100
    assert msg.until_ms is not None


async def test_ctx_9_sleep_recorded_once_the_sleep_has_ended(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "CtxSleepOrder", "ctx-9-order")
    assert await handle.result(timeout=30) == "ran while sleeping"
    events = await history(client, handle)
    recorded = of_kind(events, HistoryKind.sleep_recorded)
    assert len(recorded) == 1
    msg = recorded[0].msg
    assert isinstance(msg, SleepRecorded)
    assert msg.duration_ms == 200 and msg.until_ms is not None
    watched = {HistoryKind.task_started, HistoryKind.task_completed, HistoryKind.sleep_recorded}
    order = [str(e.kind) for e in events if e.kind in watched]
    assert order == ["task.started", "task.completed", "sleep.recorded"], "sleep.recorded came before the sleep ended"


async def test_ctx_11_uuid_recorded_parses(workers, client: Client) -> None:
    await workers.start(ALL)
    handle = await start(client, "CtxDeterministic", "ctx-11", {"what": "uuid"})
    result = await handle.result(timeout=30)
    recorded = of_kind(await history(client, handle), HistoryKind.uuid_recorded)
    assert len(recorded) == 1
    msg = recorded[0].msg
    assert isinstance(msg, UuidRecorded)
    assert uuid.UUID(msg.value) == uuid.UUID(result)


async def test_ctx_run_info_fields(workers, client: Client) -> None:
    """`ctx.run.id`, `.wf_id` and `.wf_type` describe the run (seed page, "Run Info")."""
    await workers.start(ALL)
    handle = await start(client, "CtxRunInfo", "ctx-run-info")
    out = await handle.result(timeout=30)
    assert out == {"id": handle.run_info.id, "wf_id": "ctx-run-info", "wf_type": "CtxRunInfo"}


async def test_ctx_store_put_unserializable_fails_step_at_put(workers, client: Client) -> None:
    """`put` encodes at once (BEHAVIOUR.md §1.4): the step fails on the `put` line, so the run fails."""
    await workers.start(ALL)
    handle = await start(client, "CtxBadPut", "ctx-bad-put")
    with pytest.raises(WorkflowError, match="CodecError") as info:
        await handle.result(timeout=30)
    assert "NotSerializable" in str(info.value)
    events = await history(client, handle)
    failed = of_kind(events, HistoryKind.step_failed)
    assert len(failed) == 1
    msg = failed[0].msg
    assert isinstance(msg, StepFailed)
    assert msg.step_name == "start"
    assert msg.error is not None
    assert msg.error.type == "CodecError"
    # The traceback's last frame of user code is the put of the unserializable value.
    assert 'ctx.store.put("bad", NotSerializable())' in msg.error.stack_trace
    assert run_kinds(events) == ["run.started", "run.failed"]


async def test_ctx_store_is_scoped_to_the_run(workers, client: Client) -> None:
    """A new run of the same workflow id starts with an empty store (BEHAVIOUR.md §2.4)."""
    await workers.start(ALL)
    first = await start(client, "CtxFreshStore", "ctx-fresh")
    assert await first.result(timeout=30) == {"seen_at_start": None, "k": f"written by {first.run_info.id}"}
    second = await start(client, "CtxFreshStore", "ctx-fresh")
    assert await second.result(timeout=30) == {"seen_at_start": None, "k": f"written by {second.run_info.id}"}


async def test_ctx_put_after_next_is_saved(workers, client: Client) -> None:
    """Spec README rule 3: a put made after calling `ctx.next.*` but before the handler returns
    is saved with the step (the original sent it in `kv_revs`, which the server ignored)."""
    await workers.start(ALL)
    handle = await start(client, "CtxLatePut", "ctx-late-put")
    assert await handle.result(timeout=30) == "saved"


async def test_ctx_logger_named_after_type(workers, client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """`ctx.logger` is a standard logger named `grctl.workflow.<wf_type>` (BEHAVIOUR.md §2.12)
    that logs on a first execution."""
    await workers.start(ALL)
    with caplog.at_level(logging.INFO, logger="grctl.workflow.CtxLogger"):
        handle = await start(client, "CtxLogger", "ctx-logger")
        assert await handle.result(timeout=30) == "logged"
    records = [r for r in caplog.records if r.name == "grctl.workflow.CtxLogger"]
    assert [r.getMessage() for r in records] == ["processing ctx-logger"]


async def test_ctx_custom_codec_applies_on_worker(workers, connection: Connection) -> None:
    """Spec README rule 3: a custom codec given to the Worker applies to step arguments, store
    values and results there too (the original always used a default codec on the worker)."""
    await workers.start(ALL, codec=money_codec())
    async with Client(connection, codec=money_codec()) as client:
        handle = await start(client, "CtxCustomCodec", "ctx-codec", {"price": Money(125)}, return_type=Money)
        assert await handle.result(timeout=30) == Money(250)
