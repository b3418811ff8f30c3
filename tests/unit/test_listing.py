"""Listing without a broker: one partition's page of its index, the merge, the page token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from grctl.client.listing import ListFilter, decode_page_token, encode_page_token, merge_counts, merge_pages
from grctl.engine import keys
from grctl.engine.records import ListCmd, ReplyTo, StartCmd, encoder, run_decoder
from grctl.errors import InvalidArgumentError
from grctl.models.run_info import RunStatus
from grctl.state.partition_store import PartitionStore
from grctl.worker._partition import listing as _listing
from grctl.worker._partition.listing import list_page
from tests.unit.test_machine import M, no_inbox

TO = ReplyTo(client_id="c", request_id="r", partition=0)


def put_run(store: PartitionStore, wf_id: str, started_ms: int, status: RunStatus, wf_type: str = "Order") -> None:
    run = M.apply(None, StartCmd(wf_id=wf_id, run_id=f"run-{wf_id}", wf_type=wf_type), 0, started_ms, no_inbox).run
    assert run is not None
    run = msgspec.structs.replace(run, status=status)
    store.put(keys.run_key(wf_id), encoder.encode(run), batch_id=1)
    store.put(keys.index_key(status, started_ms, wf_id), run.run_id.encode(), batch_id=1)


@pytest.fixture
def store(tmp_path: Path) -> PartitionStore:
    s = PartitionStore(tmp_path / "p")
    for i in range(10):
        put_run(
            s, f"wf-{i}", 1_000 + i, RunStatus.completed if i % 2 else RunStatus.running, "Order" if i < 5 else "Child"
        )
    s.commit(1, checkpoint=0)
    yield s
    s.close()


def ids(page: dict) -> list[str]:
    return [info["wf_id"] for _pos, info in page["runs"]]


def test_a_page_is_newest_first_and_filtered(store: PartitionStore) -> None:
    page = list_page(store, ListCmd(wf_id="", partition=0, reply_to=TO, limit=100))
    assert ids(page) == [f"wf-{i}" for i in range(9, -1, -1)] and not page["full"] and page["frontier"] is None
    running = list_page(store, ListCmd(wf_id="", partition=0, reply_to=TO, statuses=["running"]))
    assert ids(running) == ["wf-8", "wf-6", "wf-4", "wf-2", "wf-0"]
    typed = list_page(store, ListCmd(wf_id="", partition=0, reply_to=TO, wf_types=["Order"], started_after_ms=1_002))
    assert ids(typed) == ["wf-4", "wf-3", "wf-2"]
    limited = list_page(store, ListCmd(wf_id="", partition=0, reply_to=TO, limit=3))
    assert ids(limited) == ["wf-9", "wf-8", "wf-7"] and limited["full"]
    after = limited["runs"][-1][0]
    rest = list_page(store, ListCmd(wf_id="", partition=0, reply_to=TO, limit=100, after=after))
    assert ids(rest) == [f"wf-{i}" for i in range(6, -1, -1)]
    text = list_page(store, ListCmd(wf_id="", partition=0, reply_to=TO, text="WF-1"))
    assert ids(text) == ["wf-1"]


def test_a_listed_run_carries_no_result_and_a_short_error(store: PartitionStore) -> None:
    raw = store.get(keys.run_key("wf-3"))
    run = msgspec.structs.replace(
        run_decoder.decode(raw or b""), result="x" * 10_000, error={"type": "E", "message": "m" * 5_000}
    )
    info = _listing.row_info(run)
    assert info["result"] is None and info["error"] == {"type": "E", "message": "m" * _listing.ERROR_PREVIEW_CHARS}


def test_a_budget_stops_the_walk_and_says_where(store: PartitionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_listing, "SCAN_BUDGET", 4)
    page = list_page(store, ListCmd(wf_id="", partition=0, reply_to=TO, wf_types=["Z"]))
    assert page["runs"] == [] and page["frontier"] is not None


def test_merge_cuts_at_the_limit_and_never_past_a_frontier() -> None:
    a = {"runs": [[b"01", {"wf_id": "a1"}], [b"05", {"wf_id": "a5"}]], "frontier": None, "full": False}
    b = {"runs": [[b"02", {"wf_id": "b2"}], [b"03", {"wf_id": "b3"}]], "frontier": b"03", "full": False}
    rows, cursor, more = merge_pages({0: a, 1: b}, limit=10)
    assert [i["wf_id"] for _p, i in rows] == ["a1", "b2", "b3"] and cursor == b"03" and more
    rows, cursor, more = merge_pages({0: a}, limit=1)
    assert [i["wf_id"] for _p, i in rows] == ["a1"] and cursor == b"01" and more
    rows, cursor, more = merge_pages({0: a}, limit=10)
    assert len(rows) == 2 and cursor is None and not more
    assert merge_counts([{"counts": {"running": {"A": 2}}}, {"counts": {"running": {"A": 1, "B": 4}}}]) == {
        "running": {"A": 3, "B": 4}
    }


def test_page_tokens_belong_to_one_namespace_and_one_filter() -> None:
    flt = ListFilter.of("running", "Order", datetime.now(UTC) - timedelta(hours=1), None)
    token = encode_page_token("ns", flt, b"0042\x00wf")
    assert decode_page_token(token, "ns", flt) == (b"0042\x00wf", flt)
    later = ListFilter.of("running", "Order", datetime.now(UTC), None)  # "since 1h" asked again, later
    assert decode_page_token(token, "ns", later) == (b"0042\x00wf", flt)  # the first page's cutoff goes on
    with pytest.raises(InvalidArgumentError, match="namespace 'ns', not 'other'"):
        decode_page_token(token, "other", flt)
    with pytest.raises(InvalidArgumentError, match="other filters"):
        decode_page_token(token, "ns", ListFilter.of("failed", "Order", None, None))
    with pytest.raises(InvalidArgumentError, match="not a page token"):
        decode_page_token("%%%", "ns", flt)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "runing"}, "unknown run status 'runing'"),
        ({"status": ["running", "nope"]}, "unknown run status 'nope'"),
        ({"started_after": datetime(2026, 1, 1)}, "aware datetime"),  # naive on purpose
        ({"workflow_type": [""]}, "workflow_type must be names"),
    ],
)
def test_bad_filters_are_refused(kwargs: dict, message: str) -> None:
    args = {"status": None, "workflow_type": None, "started_after": None, "text": None, **kwargs}
    with pytest.raises(InvalidArgumentError, match=message):
        ListFilter.of(**args)
