"""Hostile input, property-based (hypothesis): decoders, the payload codec, and the processor.

- Every decoder of the engine's records takes any bytes and any msgpack structure: it returns
  a record or raises msgspec's DecodeError/ValidationError, nothing else (which the processor
  turns into a dead letter).
- The payload codec raises only `CodecError` on bytes that are not a value.
- The partition processor (real machine, real RocksDB, the in-memory transaction of
  tests/unit/publisher.py) takes any record: garbage goes to dead-letter with its reason, and the
  partition keeps moving (the next valid start is applied).
- Random sequences of valid directives for one workflow id never raise out of the machine and
  always leave a run record that holds together.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grctl.codec import CodecRegistry
from grctl.engine import keys
from grctl.engine.records import (
    CancelCmd,
    ChildDoneCmd,
    DescribeCmd,
    EventCmd,
    NextCmd,
    QueryCmd,
    ReplyTo,
    StartCmd,
    WatchCmd,
    directive_decoder,
    encoder,
    history_decoder,
    inbox_decoder,
    reply_decoder,
    run_decoder,
    timer_decoder,
)
from grctl.errors import CodecError
from grctl.models.run_info import TERMINAL_STATUSES, RunStateKind
from tests.unit.test_partition_processor import TOPICS, Harness, start_cmd, wf_ids_on

DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    "directive": directive_decoder,
    "history": history_decoder,
    "run": run_decoder,
    "reply": reply_decoder,
    "inbox": inbox_decoder,
    "timer": timer_decoder,
}
REFUSALS = (msgspec.DecodeError, msgspec.ValidationError)
TAGS = ["start", "next", "event", "cancel", "child_done", "describe", "query", "watch", "list", "nope"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=20),
)  # fmt: skip
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=30,
)
# Envelopes that look like the engine's: a known tag and known field names, values of any type.
FIELDS = ["wf_id", "run_id", "wf_type", "input", "seq", "event_name", "payload", "reply_to", "partition", "v",
          "reason", "terminate", "outcome", "child_wf_id", "kind", "ts_ms", "status", "state", "msg"]  # fmt: skip
envelopes = st.fixed_dictionaries({"t": st.sampled_from(TAGS)}, optional={f: structures for f in FIELDS})
hostile = st.one_of(
    st.binary(max_size=300),
    structures.map(msgspec.msgpack.encode),
    envelopes.map(msgspec.msgpack.encode),
    envelopes.map(lambda e: msgspec.msgpack.encode(e)[:-1] or b"\x80"),  # truncated
    st.integers(1, 2000).map(lambda depth: b"\x91" * depth + b"\xc0"),  # deep nesting
)


@pytest.mark.parametrize("name", sorted(DECODERS))
@given(data=hostile)
@settings(max_examples=150, deadline=None)
def test_decoders_return_a_record_or_refuse_it(name: str, data: bytes) -> None:
    try:
        DECODERS[name].decode(data)
    except REFUSALS:
        pass


@given(data=hostile)
@settings(max_examples=150, deadline=None)
def test_the_codec_raises_only_codec_errors(data: bytes) -> None:
    codec = CodecRegistry()
    try:
        codec.decode(data)
    except CodecError:
        pass


@contextmanager
def fresh_harness() -> Iterator[Harness]:
    with tempfile.TemporaryDirectory() as d:
        h = Harness(Path(d))
        try:
            yield h
        finally:
            h.store.close()


def dead_letters(h: Harness) -> list[Any]:
    return [r for r in h.open_records() if r[0] == TOPICS.dead_letter]


@given(data=hostile)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_garbage_goes_to_dead_letter_and_the_partition_keeps_moving(data: bytes) -> None:
    ids = wf_ids_on(0)
    wf_id, after = next(ids), next(ids)
    with fresh_harness() as h:
        h.feed(data, wf_id)
        try:
            decoded: Any = directive_decoder.decode(data)
        except REFUSALS:
            decoded = None
        if decoded is None:
            (rec,) = dead_letters(h)
            assert rec[3] == data
            assert dict(rec[4] or [])["grctl.reason"].decode().startswith("undecodable directive record")
        h.feed(start_cmd(after), after)  # the next record is applied as if nothing had happened
        assert h.proc.position == 2
        assert h.store.get(keys.run_key(after)) is not None


def reply_to() -> st.SearchStrategy[ReplyTo]:
    return st.builds(ReplyTo, client_id=st.just("c1"), request_id=st.text(min_size=1, max_size=8),
                     partition=st.integers(0, 3))  # fmt: skip


def commands(wf_id: str) -> st.SearchStrategy[Any]:
    runs = st.sampled_from(["r1", "r2"])
    maybe_runs = st.none() | runs
    return st.one_of(
        st.builds(StartCmd, wf_id=st.just(wf_id), run_id=runs, wf_type=st.sampled_from(["Order", "Nope"]),
                  input=structures, reply_to=st.none() | reply_to()),
        st.builds(NextCmd, wf_id=st.just(wf_id), run_id=runs, seq=st.integers(0, 5)),
        st.builds(EventCmd, wf_id=st.just(wf_id), event_name=st.sampled_from(["approve", "unknown"]),
                  payload=structures, run_id=maybe_runs, reply_to=st.none() | reply_to()),
        st.builds(CancelCmd, wf_id=st.just(wf_id), reason=st.none() | st.text(max_size=10), terminate=st.booleans(),
                  run_id=maybe_runs, reply_to=st.none() | reply_to()),
        st.builds(ChildDoneCmd, wf_id=st.just(wf_id), run_id=runs, event_name=st.text(max_size=8),
                  child_wf_id=st.text(max_size=8), child_run_id=st.text(max_size=8),
                  outcome=st.dictionaries(st.text(max_size=8), structures, max_size=3)),
        st.builds(DescribeCmd, wf_id=st.just(wf_id), reply_to=reply_to()),
        st.builds(WatchCmd, wf_id=st.just(wf_id), reply_to=reply_to()),
        st.builds(QueryCmd, wf_id=st.just(wf_id), name=st.text(max_size=8), reply_to=reply_to(), payload=structures),
    )  # fmt: skip


WF_ID = next(wf_ids_on(0))


@given(cmds=st.lists(commands(WF_ID), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_directive_sequences_never_raise_and_leave_a_coherent_run(cmds: list[Any]) -> None:
    with fresh_harness() as h:
        for cmd in cmds:
            h.feed(encoder.encode(cmd), WF_ID)
            assert not dead_letters(h), f"a valid directive went to dead-letter: {cmd!r}"
            raw = h.store.get(keys.run_key(WF_ID))
            if raw is None:
                continue
            run = run_decoder.decode(raw)
            ended = run.state in (RunStateKind.complete, RunStateKind.fail, RunStateKind.cancel,
                                  RunStateKind.terminate, RunStateKind.timeout)  # fmt: skip
            assert ended == (run.status in TERMINAL_STATUSES), run
            assert 0 <= run.inbox_head <= run.inbox_next, run
            assert run.seq >= 0 and run.wf_id == WF_ID and run.wf_type == "Order", run
        assert h.proc.position == len(cmds)


def test_a_valid_start_whose_input_nests_too_deep_goes_to_dead_letter_and_the_next_start_is_applied() -> None:
    # Found by the property test above: msgspec raised RecursionError (not a DecodeError) for an
    # input nested thousands of levels deep inside a well-formed start envelope, which escaped
    # the poison-record handling and failed the worker session on every redelivery.
    ids = wf_ids_on(0)
    wf_id, after = next(ids), next(ids)
    envelope = msgspec.msgpack.encode({"t": "start", "wf_id": wf_id, "run_id": "r1", "wf_type": "Order"})
    deep = b"\x91" * 100_000 + b"\xc0"  # [[[...[nil]...]]], 100,000 levels
    data = bytes([envelope[0] + 1]) + envelope[1:] + msgspec.msgpack.encode("input") + deep
    with pytest.raises(RecursionError):
        msgspec.msgpack.decode(data)  # the shape of the record really is the one that recursed
    with fresh_harness() as h:
        h.feed(data, wf_id)
        (rec,) = dead_letters(h)
        assert rec[3] == data
        assert dict(rec[4] or [])["grctl.reason"].decode().startswith("undecodable directive record")
        assert h.store.get(keys.run_key(wf_id)) is None
        h.feed(start_cmd(after), after)
        assert h.proc.position == 2
        assert h.store.get(keys.run_key(after)) is not None
