"""Unit tests for grctl.engine.limiters and grctl.engine.permits: limits, order of grants, permits that cannot leak.

No broker: the pure machines fed with records, the time set by the test (record timestamps).
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from grctl.engine import keys
from grctl.engine.limiters import (
    MAX_GRANTS_PER_TRANSITION,
    LimiterMachine,
    LimiterState,
    LimiterTransition,
)
from grctl.engine.machine import Machine, StepOutcome
from grctl.engine.permits import holder_id
from grctl.engine.records import (
    CancelCmd,
    HeldPermit,
    LimitAcquireCmd,
    LimiterDeleteCmd,
    LimiterSetCmd,
    LimitGrantCmd,
    LimitReleaseCmd,
    PendingAcquire,
    ReplyCode,
    ReplyTo,
    RunRecord,
    StartCmd,
    TimerEntry,
    TimerKind,
    holder_decoder,
    waiter_decoder,
)
from grctl.errors import InvalidArgumentError
from grctl.models.history import HistoryKind
from grctl.models.limits import Limit, Limiter, LimitSpec, format_rate, make_spec, parse_rate
from grctl.models.run_info import RunStateKind, RunStatus

TO = ReplyTo(client_id="c", request_id="r", partition=0)
T0 = 1_800_000_000_000


class Table:
    """A limiter kept as the processor keeps it: the state in memory, its writes applied to a dict."""

    def __init__(self) -> None:
        self.machine = LimiterMachine()
        self.state: LimiterState | None = None
        self.kv: dict[bytes, bytes] = {}
        self.offset = 0
        self.granted: list[LimitGrantCmd] = []
        self.timer: int | None = None

    def feed(self, cmd: Any, now: int = T0, *, in_place: bool = False) -> LimiterTransition:
        """Apply `cmd` as a record of the partition, or (`in_place`) as a request applied without one."""
        tr, self.state = self.machine.apply(self.state, cmd, -1 if in_place else self.offset, now)
        if not in_place:
            self.offset += 1
        self._absorb(tr)
        return tr

    def fire(self) -> LimiterTransition:
        assert self.timer is not None
        entry = TimerEntry(wf_id="api", run_id="", kind=TimerKind.limiter, seq=0, due_ms=self.timer)
        self.timer = None  # the processor deletes a timer as it fires it
        tr = self.machine.on_due(self.state, entry)
        self._absorb(tr)
        return tr

    def _absorb(self, tr: LimiterTransition) -> None:
        if tr.delete:
            self.kv.pop(keys.limiter_key("api"), None)
        elif tr.record is not None:
            self.kv[keys.limiter_key("api")] = msgspec.msgpack.encode(tr.record)
        for k, v in tr.writes:
            if v is None:
                self.kv.pop(k, None)
            else:
                self.kv[k] = v
        for t in tr.timers_clear:
            assert self.timer == t.due_ms
            self.timer = None
        for t in tr.timers_set:
            self.timer = t.due_ms
        self.granted.extend(c for c in tr.sends if isinstance(c, LimitGrantCmd) and c.ok)

    def reload(self) -> None:
        """What a new owner of the partition reads back: the same state."""
        assert self.state is not None
        waiters = [waiter_decoder.decode(v) for k, v in self.kv.items() if k.startswith(keys.WAITER_PREFIX)]
        holders = [holder_decoder.decode(v) for k, v in self.kv.items() if k.startswith(keys.HOLDER_PREFIX)]
        # The record as written, not as kept in memory: what was not written is lost in a move.
        record = msgspec.msgpack.decode(self.kv[keys.limiter_key("api")], type=type(self.state.record))
        self.state = LimiterState.load(record, waiters, holders)

    def acquire(
        self, run: str, *, key: str = "", fairness: str = "", priority: int = 3, now: int = T0, in_place: bool = False
    ) -> str:
        self.feed(
            LimitAcquireCmd(wf_id="api", run_wf_id=f"wf-{run}", run_id=run, acquire_id="1.0", key=key,
                            fairness=fairness, priority=priority),
            now, in_place=in_place,
        )  # fmt: skip
        return holder_id(run, "1.0")

    def release(self, holder: str, now: int = T0, in_place: bool = False) -> LimiterTransition:
        return self.feed(LimitReleaseCmd(wf_id="api", holder=holder), now, in_place=in_place)

    @property
    def granted_runs(self) -> list[str]:
        return [g.run_id for g in self.granted]


def make(table: Table | None = None, **kw: Any) -> Table:
    t = table or Table()
    tr = t.feed(LimiterSetCmd(wf_id="api", spec=make_spec(**kw), reply_to=TO))
    assert tr.replies and tr.replies[0][1].ok
    return t


# --------------------------------------------------------------------------- specs


def test_rates_parse_and_format_both_ways() -> None:
    assert parse_rate("50/s") == (50, 1000)
    assert parse_rate("600/min") == (600, 60_000)
    assert parse_rate("5/10s") == (5, 10_000)
    assert format_rate(*parse_rate("5/10s")) == "5/10s"
    assert format_rate(*parse_rate("50/s")) == "50/s"


@pytest.mark.parametrize("bad", ["50", "50/x", "0/s", "-1/s", "fifty/s", "5/0s", ""])
def test_a_malformed_rate_is_refused_naming_the_form(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"rate must look like|at least 1 permit"):
        parse_rate(bad)


@pytest.mark.parametrize(
    "kw",
    [{"concurrency": 0}, {"concurrency": -3}, {"per_key": 0}, {"rate": "5/s", "burst": 0}, {}, {"burst": 5},
     {"concurrency": 1, "weights": {"a": 0}}, {"concurrency": 1, "weights": {"a": 1001}}],
)  # fmt: skip
def test_a_limit_of_zero_or_less_or_no_limit_is_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        make_spec(**kw)
    with pytest.raises(InvalidArgumentError):
        Limiter("x", **kw)


def test_a_declaration_fingerprint_changes_with_the_declaration_only() -> None:
    a = Limiter("api", concurrency=20, rate="50/s", per_key=Limit(concurrency=2)).spec()
    b = Limiter("api", concurrency=20, rate="50/s", per_key=2).spec()
    c = Limiter("api", concurrency=21, rate="50/s", per_key=2).spec()
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


# --------------------------------------------------------------------------- concurrency


def test_concurrency_grants_up_to_the_limit_then_one_per_release_in_arrival_order() -> None:
    t = make(concurrency=2)
    holders = [t.acquire(f"r{i}") for i in range(5)]
    assert t.granted_runs == ["r0", "r1"]
    assert t.state is not None and t.state.record.in_use == 2 and t.state.record.waiting == 3
    t.release(holders[0])
    assert t.granted_runs == ["r0", "r1", "r2"]
    t.release(holders[1])
    t.release(holders[2])
    assert t.granted_runs == ["r0", "r1", "r2", "r3", "r4"]
    assert t.state.record.in_use == 2 and t.state.record.waiting == 0


def test_a_release_of_an_unknown_or_already_released_permit_is_ignored_and_counted() -> None:
    t = make(concurrency=1)
    h = t.acquire("r0")
    assert t.release(h).released == 1
    tr = t.release(h)
    assert tr.ignored == 1 and tr.released == 0
    assert t.state is not None and t.state.record.in_use == 0


def test_a_request_withdrawn_while_waiting_leaves_the_queue_and_is_never_granted() -> None:
    t = make(concurrency=1)
    first = t.acquire("r0")
    second = t.acquire("r1")
    t.release(second)  # withdrawn (its run was cancelled)
    t.release(first)
    assert t.granted_runs == ["r0"]
    assert t.state is not None and t.state.record.waiting == 0 and t.state.record.in_use == 0
    assert not [k for k in t.kv if k.startswith(keys.WAITER_PREFIX)]


def test_the_same_request_delivered_twice_waits_once() -> None:
    t = make(concurrency=1)
    t.acquire("r0")
    t.acquire("r1")
    t.acquire("r1")
    assert t.state is not None and t.state.record.waiting == 1


def test_a_record_applied_before_is_skipped_by_its_offset() -> None:
    t = make(concurrency=5)
    t.offset = 10
    t.acquire("r0")
    t.offset = 10  # the same offset again (re-delivered after a crash)
    tr = t.feed(LimitAcquireCmd(wf_id="api", run_wf_id="wf-r9", run_id="r9", acquire_id="1.0"))
    assert tr.skipped and t.state is not None and t.state.record.in_use == 1


def test_raising_the_limit_at_runtime_serves_waiting_requests_at_once() -> None:
    t = make(concurrency=1)
    for i in range(4):
        t.acquire(f"r{i}")
    assert t.granted_runs == ["r0"]
    make(t, concurrency=3)
    assert t.granted_runs == ["r0", "r1", "r2"]


def test_lowering_the_limit_takes_effect_as_permits_come_back() -> None:
    t = make(concurrency=3)
    hs = [t.acquire(f"r{i}") for i in range(5)]
    make(t, concurrency=1)
    t.release(hs[0])
    t.release(hs[1])
    assert t.granted_runs == ["r0", "r1", "r2"]  # still 1 held: nothing more
    t.release(hs[2])
    assert t.granted_runs == ["r0", "r1", "r2", "r3"]


def test_a_declaration_applied_before_does_not_undo_a_runtime_change() -> None:
    t = Table()
    spec = Limiter("api", concurrency=5).spec()
    t.feed(LimiterSetCmd(wf_id="api", spec=spec, declared=spec.fingerprint()))
    make(t, concurrency=2)  # an operator lowers it
    t.feed(LimiterSetCmd(wf_id="api", spec=spec, declared=spec.fingerprint()))  # a worker restarts
    assert t.state is not None and t.state.record.spec.concurrency == 2
    changed = Limiter("api", concurrency=7).spec()
    t.feed(LimiterSetCmd(wf_id="api", spec=changed, declared=changed.fingerprint()))  # the code changed
    assert t.state.record.spec.concurrency == 7


def test_an_invalid_spec_sent_by_another_producer_is_answered_and_changes_nothing() -> None:
    t = make(concurrency=2)
    tr = t.feed(LimiterSetCmd(wf_id="api", spec=LimitSpec(concurrency=0), reply_to=TO))
    assert tr.replies[0][1].code == ReplyCode.invalid_limiter
    assert t.state is not None and t.state.record.spec.concurrency == 2


# --------------------------------------------------------------------------- per key


def test_a_per_key_limit_lets_other_keys_pass_a_saturated_one() -> None:
    t = make(concurrency=10, per_key=Limit(concurrency=1))
    a0 = t.acquire("a0", key="A")
    t.acquire("a1", key="A")
    t.acquire("b0", key="B")
    assert t.granted_runs == ["a0", "b0"]
    t.release(a0)
    assert t.granted_runs == ["a0", "b0", "a1"]


def test_per_key_without_a_global_limit() -> None:
    t = make(per_key=2)
    for i in range(3):
        t.acquire(f"a{i}", key="A")
    t.acquire("b0", key="B")
    assert sorted(t.granted_runs) == ["a0", "a1", "b0"]


# --------------------------------------------------------------------------- priority and fairness


def test_a_better_priority_is_served_first_then_arrival() -> None:
    t = make(concurrency=1)
    first = t.acquire("busy")
    t.acquire("low", priority=5)
    t.acquire("mid1", priority=3)
    t.acquire("high", priority=1)
    t.acquire("mid2", priority=3)
    t.release(first)
    order = ["busy"]
    while len(order) < 5:
        last = t.granted[-1]
        order = t.granted_runs
        t.release(holder_id(last.run_id, last.acquire_id))
    assert t.granted_runs == ["busy", "high", "mid1", "mid2", "low"]


def test_fairness_serves_tenants_by_weight_not_by_arrival() -> None:
    t = make(concurrency=1, weights={"big": 1, "small": 1})
    busy = t.acquire("busy")
    for i in range(100):
        t.acquire(f"big{i}", fairness="big")
    for i in range(5):
        t.acquire(f"small{i}", fairness="small")
    t.release(busy)
    for _ in range(10):
        g = t.granted[-1]
        t.release(holder_id(g.run_id, g.acquire_id))
    served = t.granted_runs[1:11]
    # Equal weights: the two tenants alternate though the big one asked 100 times first.
    assert sum(r.startswith("small") for r in served) == 5
    assert served[:4] in (["big0", "small0", "big1", "small1"], ["small0", "big0", "small1", "big1"])


def test_weights_are_read_when_granting_not_when_requesting() -> None:
    t = make(concurrency=1)
    busy = t.acquire("busy")
    for i in range(40):
        t.acquire(f"a{i}", fairness="a")
        t.acquire(f"b{i}", fairness="b")
    make(t, concurrency=1, weights={"a": 3})  # after the requests were made
    t.release(busy)
    for _ in range(40):
        g = t.granted[-1]
        t.release(holder_id(g.run_id, g.acquire_id))
    served = t.granted_runs[1:41]
    a = sum(r.startswith("a") for r in served)
    assert a == 30  # 3 to 1


def test_an_idle_tenant_earns_no_credit_while_away() -> None:
    t = make(concurrency=1)
    h = t.acquire("busy", fairness="a")
    for i in range(50):  # tenant a alone for a while
        t.release(h)
        h = t.acquire(f"a{i}", fairness="a")
    for i in range(10):
        t.acquire(f"a-more{i}", fairness="a")
        t.acquire(f"b{i}", fairness="b")
    for _ in range(10):
        g = t.granted[-1]
        t.release(holder_id(g.run_id, g.acquire_id))
    served = t.granted_runs[-10:]
    assert 4 <= sum(r.startswith("b") for r in served) <= 6  # turns, not b's 50 missed turns at once


# --------------------------------------------------------------------------- rate


def test_the_rate_is_a_token_bucket_moved_by_record_time() -> None:
    t = make(rate="10/s", burst=2)
    for i in range(5):
        t.acquire(f"r{i}", now=T0)
    assert t.granted_runs == ["r0", "r1"]  # the burst
    assert t.timer == T0 + 100  # one permit per 100 ms
    t.fire()
    assert t.granted_runs == ["r0", "r1", "r2"]
    assert t.timer == T0 + 200
    t.acquire("r5", now=T0 + 450)  # a record 450 ms later: 2 more earned (the bucket holds 2 at most)
    assert t.granted_runs == ["r0", "r1", "r2", "r3", "r4"]


def test_the_bucket_never_runs_backwards_on_an_older_record_timestamp() -> None:
    t = make(rate="10/s", burst=1)
    t.acquire("r0", now=T0 + 1000)
    t.acquire("r1", now=T0)  # a producer whose clock is behind
    assert t.granted_runs == ["r0"]
    assert t.state is not None and t.state.record.tokens_at_ms == T0 + 1000


def test_rate_and_concurrency_together_both_hold() -> None:
    t = make(concurrency=1, rate="1000/s", burst=5)
    hs = [t.acquire(f"r{i}") for i in range(3)]
    assert t.granted_runs == ["r0"]
    t.release(hs[0], now=T0 + 1)
    assert t.granted_runs == ["r0", "r1"]


def test_many_waiting_are_granted_over_several_transitions() -> None:
    t = make(concurrency=1)
    for i in range(MAX_GRANTS_PER_TRANSITION * 2 + 10):
        t.acquire(f"r{i}")
    h = holder_id("r0", "1.0")
    t.feed(LimiterSetCmd(wf_id="api", spec=make_spec(concurrency=MAX_GRANTS_PER_TRANSITION * 3)))
    assert len(t.granted) == 1 + MAX_GRANTS_PER_TRANSITION and t.timer == T0
    t.fire()
    t.fire()
    assert len(t.granted) == MAX_GRANTS_PER_TRANSITION * 2 + 10 and t.timer is None
    assert h in (t.state.holders if t.state else {})


# --------------------------------------------------------------------------- durability, deletion


def test_the_state_read_back_by_a_new_owner_decides_the_same() -> None:
    rnd = random.Random(7)
    a, b = make(concurrency=3, per_key=2, weights={"t1": 2}), None
    for step in range(600):
        if step % 150 == 149:
            a.reload()  # the partition moved: the new owner reads the tables
        held = list(a.state.holders) if a.state else []
        # Half the inputs are applied in place (a run of the same worker), without an offset.
        in_place = rnd.random() < 0.5
        if held and rnd.random() < 0.45:
            a.release(rnd.choice(held), in_place=in_place)
        else:
            a.acquire(f"r{step}", key=rnd.choice("xyz"), fairness=rnd.choice(["t1", "t2"]),
                      priority=rnd.randint(1, 5), in_place=in_place)  # fmt: skip
        st = a.state
        assert st is not None
        assert len(st.holders) <= 3 and all(n <= 2 for n in st.key_use.values())
        assert st.record.in_use == len(st.holders) == sum(1 for k in a.kv if k.startswith(keys.HOLDER_PREFIX))
        assert st.record.waiting == len(st.waiters) == sum(1 for k in a.kv if k.startswith(keys.WAITER_PREFIX))
    assert b is None


def test_delete_is_refused_while_in_use_and_forced_delete_refuses_the_waiting() -> None:
    t = make(concurrency=1)
    t.acquire("r0")
    t.acquire("r1")
    tr = t.feed(LimiterDeleteCmd(wf_id="api", reply_to=TO))
    assert tr.replies[0][1].code == ReplyCode.limiter_in_use and t.state is not None
    tr = t.feed(LimiterDeleteCmd(wf_id="api", force=True, reply_to=TO))
    assert tr.delete and t.state is None
    refused = [c for c in tr.sends if isinstance(c, LimitGrantCmd)]
    assert [(c.run_id, c.ok) for c in refused] == [("r1", False)]
    assert refused[0].error is not None and refused[0].error["type"] == "LimiterNotFoundError"
    assert not t.kv.keys() - {k for k in t.kv if not k.startswith((keys.WAITER_PREFIX, keys.HOLDER_PREFIX))}


def test_a_request_to_an_unknown_limiter_is_refused_naming_how_to_create_it() -> None:
    t = Table()
    tr = t.feed(LimitAcquireCmd(wf_id="nope", run_wf_id="wf", run_id="r", acquire_id="1.0"))
    (grant,) = tr.sends
    assert isinstance(grant, LimitGrantCmd) and not grant.ok and tr.refused == 1
    assert grant.error is not None and "grctl limiter set nope" in grant.error["message"]


# --------------------------------------------------------------------------- the run side


class Cat:
    def has_type(self, wf_type: str) -> bool:
        return True

    def versions(self, wf_type: str) -> list[int]:
        return [1]

    def upgrade_auto(self, wf_type: str, version: int) -> bool:
        return False

    def has_step(self, wf_type: str, version: int, step: str) -> bool:
        return True

    def step_timeout_ms(self, wf_type: str, version: int, step: str) -> int | None:
        return None

    def has_event(self, wf_type: str, version: int, name: str) -> bool | None:
        return True

    def events(self, wf_type: str, version: int) -> list[str]:
        return []

    def retention_ms(self, wf_type: str) -> int:
        return 60_000

    def results_topic(self, wf_type: str) -> str | None:
        return None


M = Machine(Cat(), "w1")


def running(priority: int = 3) -> RunRecord:
    tr = M.on_start(None, StartCmd(wf_id="wf", run_id="run", wf_type="T", priority=priority), T0)
    assert tr.run is not None
    run = tr.run
    return msgspec.structs.replace(run, state=RunStateKind.step, step="start", seq=1)


def suspended_for_permit(run: RunRecord) -> RunRecord:
    call = PendingAcquire(limiter="api", acquire_id="", position=2, key="cust", fairness="tenant")
    tr = M.on_step_outcome(run, StepOutcome(run_id="run", seq=1, next_kind="limit", acquire=call), T0, lambda s: None)
    (req,) = tr.sends
    assert isinstance(req, LimitAcquireCmd) and req.acquire_id == "1.2" and req.wf_id == "api"
    assert req.priority == run.priority  # not given: the run's own
    assert [h.kind for h in tr.history] == [HistoryKind.permit_requested]
    assert tr.run is not None and tr.run.acquire is not None and not tr.execute
    return tr.run


def granted(run: RunRecord) -> RunRecord:
    tr = M.apply(
        run, LimitGrantCmd(wf_id="wf", run_id="run", acquire_id="1.2", limiter="api"), 5, T0 + 30, lambda s: None
    )
    assert tr.execute and tr.journal == [(1, 2, ["limit", "api", {"ok": True, "acquire_id": "1.2"}])]
    assert tr.run is not None and tr.run.acquire is None
    assert tr.run.permits == (HeldPermit(limiter="api", acquire_id="1.2", seq=1, since_ms=T0 + 30),)
    assert tr.history[0].kind == HistoryKind.permit_granted and tr.history[0].msg is not None
    assert tr.history[0].msg["waited_ms"] == 30
    return tr.run


def releases(tr: Any) -> list[str]:
    return [c.holder for c in tr.sends if isinstance(c, LimitReleaseCmd)]


def test_children_and_requests_inherit_the_run_priority() -> None:
    run = running(priority=1)
    suspended_for_permit(run)
    assert run.priority == 1


@pytest.mark.parametrize("kind", ["step", "wait", "complete", "fail", "error", "timeout"])
def test_every_way_a_step_ends_gives_its_permits_back_in_the_same_transition(kind: str) -> None:
    run = granted(suspended_for_permit(running()))
    out = StepOutcome(run_id="run", seq=1, next_kind=kind, next_step="next", result=1, error={"type": "E"})  # type: ignore[arg-type]
    tr = M.on_step_outcome(run, out, T0 + 100, lambda s: None)
    assert releases(tr) == ["run/1.2"]
    assert tr.run is not None and tr.run.permits == ()
    assert HistoryKind.permit_released in [h.kind for h in tr.history]


def test_a_step_that_suspends_inside_its_section_keeps_the_permit_and_one_that_left_it_gives_it_back() -> None:
    run = granted(suspended_for_permit(running()))
    tr = M.on_step_outcome(
        run, StepOutcome(run_id="run", seq=1, next_kind="suspend", resume_at_ms=T0 + 9), T0, lambda s: None
    )
    assert releases(tr) == [] and tr.run is not None and len(tr.run.permits) == 1
    out = StepOutcome(run_id="run", seq=1, next_kind="suspend", resume_at_ms=T0 + 9, released=("1.2",))
    tr = M.on_step_outcome(run, out, T0, lambda s: None)
    assert releases(tr) == ["run/1.2"] and tr.run is not None and tr.run.permits == ()


@pytest.mark.parametrize("terminate", [False, True])
def test_cancel_or_terminate_releases_held_permits_and_withdraws_the_waiting_request(terminate: bool) -> None:
    held = granted(suspended_for_permit(running()))
    tr = M.apply(held, CancelCmd(wf_id="wf", terminate=terminate), 9, T0, lambda s: None)
    if not terminate:  # a cancel of a running step waits for the step; its outcome releases
        tr = M.on_step_outcome(tr.run, StepOutcome(run_id="run", seq=1, next_kind="complete"), T0, lambda s: None)
    assert releases(tr) == ["run/1.2"]
    waiting = suspended_for_permit(running())
    tr = M.apply(waiting, CancelCmd(wf_id="wf", terminate=terminate), 9, T0, lambda s: None)
    assert releases(tr) == ["run/1.2"]  # the request is withdrawn
    assert tr.run is not None and tr.run.status in (RunStatus.cancelled, RunStatus.terminated)
    assert tr.run.acquire is None and tr.run.permits == ()


def test_a_workflow_timeout_while_holding_releases() -> None:
    held = granted(suspended_for_permit(running()))
    held = msgspec.structs.replace(held, deadline_ms=T0 + 1000)
    timer = TimerEntry(wf_id="wf", run_id="run", kind=TimerKind.workflow, seq=0, due_ms=T0 + 1000)
    tr = M.on_timer(held, timer, T0 + 1000)
    assert releases(tr) == ["run/1.2"] and tr.run is not None and tr.run.status == RunStatus.timed_out


def test_a_grant_nobody_waits_for_goes_back_in_the_same_transition() -> None:
    run = suspended_for_permit(running())
    ended = M.apply(run, CancelCmd(wf_id="wf"), 9, T0, lambda s: None).run
    # The grant crossed the withdrawal: it reaches an ended run, and the permit goes straight back.
    tr = M.apply(
        ended, LimitGrantCmd(wf_id="wf", run_id="run", acquire_id="1.2", limiter="api"), 10, T0, lambda s: None
    )
    assert releases(tr) == ["run/1.2"] and tr.permit_dropped and not tr.execute
    tr = M.apply(None, LimitGrantCmd(wf_id="wf", run_id="run", acquire_id="1.2", limiter="api"), 10, T0, lambda s: None)
    assert releases(tr) == ["run/1.2"]  # its state is gone (retention): the same


def test_a_refusal_is_journaled_for_the_step_to_raise() -> None:
    run = suspended_for_permit(running())
    err = {"type": "LimiterNotFoundError", "message": "no limiter named 'api'"}
    cmd = LimitGrantCmd(wf_id="wf", run_id="run", acquire_id="1.2", limiter="api", ok=False, error=err)
    tr = M.apply(run, cmd, 5, T0, lambda s: None)
    assert tr.execute and releases(tr) == []
    assert tr.journal == [(1, 2, ["limit", "api", {"ok": False, "acquire_id": "1.2", "error": err}])]
    assert tr.run is not None and tr.run.permits == () and tr.run.acquire is None


def test_the_two_sides_together_never_count_a_permit_without_its_holder() -> None:
    """Runs that ask, get, cancel and end in random order: the limiter's count matches the runs' permits."""
    rnd = random.Random(3)
    t = make(concurrency=3)
    runs: dict[str, RunRecord] = {}
    inbox: list[Any] = []  # records in flight to runs
    for i in range(30):
        r = msgspec.structs.replace(running(), run_id=f"r{i}", wf_id=f"wf{i}")
        call = PendingAcquire(limiter="api", acquire_id="", position=0)
        tr = M.on_step_outcome(
            r, StepOutcome(run_id=f"r{i}", seq=1, next_kind="limit", acquire=call), T0, lambda s: None
        )
        runs[f"wf{i}"] = tr.run  # type: ignore[assignment]
        for c in tr.sends:
            inbox.extend(c2 for c2 in t.feed(c).sends)
    for _ in range(2000):
        if not inbox and all(r.state not in (RunStateKind.step,) for r in runs.values()):
            break
        pick = rnd.random()
        if inbox and pick < 0.5:
            g = inbox.pop(rnd.randrange(len(inbox)))
            tr = M.apply(runs.get(g.wf_id), g, -1, T0, lambda s: None)
            if tr.run is not None:
                runs[g.wf_id] = tr.run
            for c in tr.sends:
                inbox.extend(t.feed(c).sends)
        else:
            wf = rnd.choice(list(runs))
            r = runs[wf]
            if r.state != RunStateKind.step:
                continue
            if r.permits and pick < 0.8:
                tr = M.on_step_outcome(r, StepOutcome(run_id=r.run_id, seq=1, next_kind="complete"), T0, lambda s: None)
            elif pick >= 0.9:
                tr = M.apply(r, CancelCmd(wf_id=wf, terminate=True), -1, T0, lambda s: None)
            else:
                continue
            runs[wf] = tr.run  # type: ignore[assignment]
            for c in tr.sends:
                inbox.extend(t.feed(c).sends)
    assert not inbox
    assert t.state is not None
    held = {holder_id(r.run_id, p.acquire_id) for r in runs.values() for p in r.permits}
    assert set(t.state.holders) == held
    assert all(r.state != RunStateKind.step for r in runs.values()) or t.state.record.in_use == len(held)


def test_setting_and_removing_a_per_key_limit_at_runtime_regroups_the_waiting() -> None:
    t = make(concurrency=1)
    busy = t.acquire("busy", key="A")
    for i, key in enumerate("AAB"):
        t.acquire(f"r{i}-{key}", key=key)
    make(t, concurrency=2, per_key=1)  # now each key at most 1: A is full (busy), B goes in
    assert t.granted_runs == ["busy", "r2-B"]
    t.release(busy)
    assert t.granted_runs == ["busy", "r2-B", "r0-A"]
    make(t, concurrency=3)  # no per-key limit any more: the last A goes in beside the other A
    assert t.granted_runs == ["busy", "r2-B", "r0-A", "r1-A"]
    assert t.state is not None and t.state.record.waiting == 0


def test_an_invalid_spec_for_a_limiter_that_does_not_exist_is_answered_and_creates_nothing() -> None:
    t = Table()
    tr = t.feed(LimiterSetCmd(wf_id="api", spec=LimitSpec(concurrency=0), reply_to=TO))
    assert not tr.skipped and tr.replies[0][1].code == ReplyCode.invalid_limiter  # the client hears why
    assert t.state is None and not t.kv


def test_limits_are_bounded() -> None:
    with pytest.raises(InvalidArgumentError, match="from 1 to 1,000,000,000"):
        make_spec(concurrency=10**10)
    with pytest.raises(InvalidArgumentError, match="at least 1 permit per period"):
        parse_rate(f"{10**12}/s")


def test_the_record_keeps_every_waiting_tenant_pass_and_at_most_100_idle_ones() -> None:
    from grctl.engine.limiters import MAX_PASSES

    t = make(concurrency=1)
    hold = t.acquire("hold")
    for i in range(300):  # 300 tenants served once each: idle afterwards, each with a debt
        t.release(hold)
        hold = t.acquire(f"t{i}", fairness=f"tenant-{i}")
    for i in range(150):  # 150 tenants waiting now
        t.acquire(f"w{i}", fairness=f"waiting-{i}")
    assert t.state is not None
    passes = t.state.record.passes
    assert all(f"waiting-{i}" in passes for i in range(150))
    assert len(passes) <= 150 + MAX_PASSES
    assert len(t.kv[keys.limiter_key("api")]) < 16 * 1024  # far under any record limit


def test_weights_are_bounded_in_number_and_key_length() -> None:
    with pytest.raises(InvalidArgumentError, match="at most 100 fairness keys"):
        make_spec(concurrency=1, weights={f"t{i}": 2 for i in range(101)})
    with pytest.raises(InvalidArgumentError, match="at most 100 characters"):
        make_spec(concurrency=1, weights={"t" * 101: 2})
