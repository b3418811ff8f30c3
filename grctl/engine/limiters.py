"""The limiter state machine: pure functions from (limiter, input) to a `LimiterTransition`.

A limiter lives on the partition that owns its name, like a schedule. Its inputs are requests
(`LimitAcquireCmd`, sent by a run's step in the transaction of its suspension), releases
(`LimitReleaseCmd`, sent in the transaction that ends the limited work), the operator's changes
(`LimiterSetCmd`, `LimiterDeleteCmd`) and its timer (`TimerKind.limiter`: the rate's bucket has a
permit again). The processor stages what a transition returns with the consumed offsets in one
transaction, so a grant is one transaction: the permit counted, the request gone from the queue,
the grant sent to the run's partition, the offsets. A crash cannot count a permit without the
grant that hands it over, or the reverse.

**Order of grants** (`_pick`): the best priority first (1 before 5); within it, across fairness
keys, stride scheduling: each fairness key has a pass, the one with the lowest pass is served and
its pass moves on by `STRIDE / weight`, its weight read when it is served (so a changed weight acts
on the next grant, not on requests made before); a key that was idle starts at the scheduler's
virtual time, so idleness earns no credit; within a fairness key, arrival order, skipping requests
whose key is at its per-key limit.

**Rate**: a token bucket of `spec.capacity` permits refilled at `rate_n` per `rate_period_ms`,
moved by the timestamps of the records it reads (and the due time of its timer), never by a
worker's clock: re-applying the same inputs after a crash makes the same decisions.

The waiting requests and held permits are records of their own (`keys.waiter_key`,
`keys.holder_key`); `LimiterState` is their in-memory index, loaded by the processor when it first
touches the limiter and changed only with the writes a transition returns.

May import (of grctl): errors, defaults, models, engine.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from grctl.engine import keys
from grctl.engine.machine import bounded_identity
from grctl.engine.permits import holder_id
from grctl.engine.records import (
    DirectiveRecord,
    LimitAcquireCmd,
    LimiterDeleteCmd,
    LimiterRecord,
    LimiterSetCmd,
    LimitGrantCmd,
    LimitHolder,
    LimitReleaseCmd,
    LimitWaiter,
    Reply,
    ReplyCode,
    ReplyTo,
    TimerEntry,
    TimerKind,
    encoder,
)
from grctl.errors import InternalError, InvalidArgumentError
from grctl.models.limits import DEFAULT_PRIORITY, LimitSpec

#: A permit in the rate's bucket, in the bucket's unit (millionths: the bucket holds whole numbers).
UNIT: Final = 1_000_000
#: The stride of a fairness key of weight 1 (weights up to 1000 keep strides whole).
STRIDE: Final = 1_000_000
#: Grants one transition makes at most; more follow from the limiter's timer, due at once.
MAX_GRANTS_PER_TRANSITION: Final = 500
#: Idle fairness keys whose pass a limiter remembers (the oldest debts go first). The passes of keys
#: with requests waiting are all kept: the limiter's record grows with the work waiting, not with
#: every tenant it ever served, and stays far under a record's size limit.
MAX_PASSES: Final = 100


@dataclass(slots=True)
class LimiterState:
    """A limiter's record with the index of its waiting requests and held permits (in memory).

    `queues[priority][fairness][key]` holds the holder ids of waiting requests in arrival order.
    """

    record: LimiterRecord
    waiters: dict[str, LimitWaiter] = field(default_factory=dict)
    holders: dict[str, LimitHolder] = field(default_factory=dict)
    queues: dict[int, dict[str, dict[str, collections.deque[str]]]] = field(default_factory=dict)
    key_use: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, record: LimiterRecord, waiters: list[LimitWaiter], holders: list[LimitHolder]) -> LimiterState:
        """The state of a limiter read from its tables (waiters in arrival order)."""
        state = cls(record)
        for w in sorted(waiters, key=lambda w: w.arrival):
            state._enqueue(w)
        for h in holders:
            state.holders[h.holder] = h
            state.key_use[h.key] = state.key_use.get(h.key, 0) + 1
        return state

    def _queue_key(self, w: LimitWaiter) -> str:
        """The queue a request waits in within its fairness key: its key only when a per-key limit
        applies (without one, one queue per fairness key keeps a grant's choice independent of how
        many keys there are)."""
        return w.key if self.record.spec.per_key is not None else ""

    def _enqueue(self, w: LimitWaiter) -> None:
        self.waiters[w.holder] = w
        by_fair = self.queues.setdefault(w.priority, {})
        by_key = by_fair.setdefault(w.fairness, {})
        by_key.setdefault(self._queue_key(w), collections.deque()).append(w.holder)

    def requeue(self) -> None:
        """Rebuild the queues (the per-key limit was set or removed: requests are grouped by key or not)."""
        waiting = sorted(self.waiters.values(), key=lambda w: w.arrival)
        self.waiters.clear()
        self.queues.clear()
        for w in waiting:
            self._enqueue(w)

    def _dequeue(self, w: LimitWaiter) -> None:
        del self.waiters[w.holder]
        by_fair = self.queues[w.priority]
        by_key = by_fair[w.fairness]
        qkey = self._queue_key(w)
        q = by_key[qkey]
        if q[0] == w.holder:
            q.popleft()
        else:
            q.remove(w.holder)
        if not q:
            del by_key[qkey]
            if not by_key:
                del by_fair[w.fairness]
                if not by_fair:
                    del self.queues[w.priority]

    def position(self, holder: str) -> int | None:
        """How many requests are ahead of `holder` at a better priority or earlier at its own (None: not waiting).

        Fairness across keys may serve it earlier or later than this count says.
        """
        w = self.waiters.get(holder)
        if w is None:
            return None
        return sum(
            1
            for o in self.waiters.values()
            if o.priority < w.priority or (o.priority == w.priority and o.arrival < w.arrival)
        )

    def queue_summary(self) -> dict[str, Any]:
        """Waiting requests and held permits by priority, fairness key and key (what describe shows)."""
        waiting: dict[str, int] = {}
        by_fairness: dict[str, int] = {}
        for prio, by_fair in self.queues.items():
            for fair, by_key in by_fair.items():
                n = sum(len(q) for q in by_key.values())
                waiting[str(prio)] = waiting.get(str(prio), 0) + n
                by_fairness[fair] = by_fairness.get(fair, 0) + n
        in_use_by_key = {k: n for k, n in sorted(self.key_use.items(), key=lambda kv: -kv[1])[:50] if n}
        oldest = min((w.since_ms for w in self.waiters.values()), default=None)
        return {
            "waiting_by_priority": waiting,
            "waiting_by_fairness": dict(sorted(by_fairness.items(), key=lambda kv: -kv[1])[:50]),
            "in_use_by_key": in_use_by_key,
            "oldest_waiting_since_ms": oldest,
        }


@dataclass(slots=True)
class LimiterTransition:
    """Everything one input changes of a limiter: all of it is published in one transaction.

    Attributes:
        record: the new record (None: unchanged); `delete` drops it and every key of the limiter.
        writes: waiter and holder keys written (value) or deleted (None).
        sends: grants (and refusals) for runs' partitions.
        replies: answers to clients.
        timers_set / timers_clear: the limiter's timer.
        skipped: the input was stale or a duplicate; nothing changed.
        granted: (fairness key, wait in ms) of each grant made (metrics).
        refused: requests refused (an unknown or deleted limiter).
        released: permits given back.
        ignored: releases of permits the limiter did not know.
    """

    record: LimiterRecord | None = None
    delete: bool = False
    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    sends: list[DirectiveRecord] = field(default_factory=list)
    replies: list[tuple[ReplyTo, Reply]] = field(default_factory=list)
    timers_set: list[TimerEntry] = field(default_factory=list)
    timers_clear: list[TimerEntry] = field(default_factory=list)
    skipped: bool = False
    granted: list[tuple[str, int]] = field(default_factory=list)
    refused: int = 0
    released: int = 0
    ignored: int = 0


SKIPPED = LimiterTransition(skipped=True)


def not_found_error(name: str, why: str = "") -> dict[str, Any]:
    """The error a request of an unknown (or deleted) limiter is refused with."""
    return {
        "type": "LimiterNotFoundError",
        "message": f"no limiter named {name!r}{why}: create it with `grctl limiter set {name} --concurrency N` "
        f"or declare it with Worker(limiters=[Limiter({name!r}, ...)])",
    }


class LimiterMachine:
    """Applies inputs to limiters. Stateless: the processor holds each limiter's `LimiterState`."""

    def apply(
        self, state: LimiterState | None, cmd: DirectiveRecord, offset: int, now_ms: int
    ) -> tuple[LimiterTransition, LimiterState | None]:
        """Apply one limiter directive; returns the transition and the limiter's state after it.

        `now_ms` is the record's timestamp: the bucket moves by it (never backwards).
        """
        rec = state.record if state is not None else None
        if rec is not None and 0 <= offset <= rec.last_offset:
            return SKIPPED, state  # re-delivered after a crash: already applied
        if isinstance(cmd, LimitAcquireCmd):
            tr = self._acquire(state, cmd, now_ms)
        elif isinstance(cmd, LimitReleaseCmd):
            tr = self._release(state, cmd, now_ms)
        elif isinstance(cmd, LimiterSetCmd):
            tr, state = self._set(state, cmd, now_ms)
        elif isinstance(cmd, LimiterDeleteCmd):
            tr = self._delete(state, cmd)
            if tr.delete:
                state = None
        else:
            raise InternalError(f"LimiterMachine.apply() does not take {type(cmd).__name__} records")
        if state is not None and not tr.skipped:
            if offset >= 0:  # a record of its partition (a request applied in place has none)
                state.record.last_offset = offset
            tr.record = state.record  # its counters and bucket moved with whatever changed
        return tr, state

    def on_due(self, state: LimiterState | None, timer: TimerEntry) -> LimiterTransition:
        """The limiter's timer fired (its bucket has a permit again, or grants were left over)."""
        if state is None or state.record.timer_due_ms != timer.due_ms:
            return SKIPPED  # disarmed or moved meanwhile
        tr = LimiterTransition()
        state.record.timer_due_ms = None
        self._grant(state, tr, timer.due_ms)
        tr.record = state.record
        return tr

    # ------------------------------------------------------------------ inputs

    def _acquire(self, state: LimiterState | None, cmd: LimitAcquireCmd, now_ms: int) -> LimiterTransition:
        tr = LimiterTransition()
        if state is None:
            tr.refused = 1
            tr.sends.append(
                _grant_cmd(
                    cmd.run_wf_id, cmd.run_id, cmd.acquire_id, cmd.wf_id, now_ms, error=not_found_error(cmd.wf_id)
                )
            )
            return tr
        holder = holder_id(cmd.run_id, cmd.acquire_id)
        if holder in state.waiters or holder in state.holders:
            return SKIPPED  # the same request twice: it waits, or holds, already
        rec = state.record
        prio = cmd.priority if 1 <= cmd.priority <= 5 else DEFAULT_PRIORITY
        # Waiting starts when the limiter reads the request, on its own clock (the latest record time
        # it has applied): a request read late, after its trip through Kafka, is not older to it.
        _refill(rec, now_ms)
        w = LimitWaiter(
            holder=holder, wf_id=cmd.run_wf_id, run_id=cmd.run_id, acquire_id=cmd.acquire_id, arrival=rec.arrivals,
            key=cmd.key, fairness=cmd.fairness, priority=prio, since_ms=rec.tokens_at_ms,
        )  # fmt: skip
        rec.arrivals += 1
        if not _fairness_waiting(state, cmd.fairness):
            # A key that waited for nothing starts at the virtual time: idleness earns no credit.
            rec.passes[cmd.fairness] = max(rec.passes.get(cmd.fairness, rec.vtime), rec.vtime)
        state._enqueue(w)
        rec.waiting = len(state.waiters)
        tr.writes.append((keys.waiter_key(rec.name, w.arrival), encoder.encode(w)))
        self._grant(state, tr, now_ms)
        return tr

    def _release(self, state: LimiterState | None, cmd: LimitReleaseCmd, now_ms: int) -> LimiterTransition:
        tr = LimiterTransition()
        if state is None:
            tr.ignored = 1
            return tr
        rec = state.record
        held = state.holders.pop(cmd.holder, None)
        if held is not None:
            n = state.key_use.get(held.key, 0) - 1
            if n > 0:
                state.key_use[held.key] = n
            else:
                state.key_use.pop(held.key, None)
            rec.in_use = len(state.holders)
            rec.released += 1
            tr.released = 1
            tr.writes.append((keys.holder_key(rec.name, cmd.holder), None))
            self._grant(state, tr, now_ms)
            return tr
        waiting = state.waiters.get(cmd.holder)
        if waiting is not None:  # withdrawn before it was granted (its run ended, or was cancelled)
            state._dequeue(waiting)
            rec.waiting = len(state.waiters)
            tr.writes.append((keys.waiter_key(rec.name, waiting.arrival), None))
            self._grant(state, tr, now_ms)  # a per-key limit may have held others behind it
            return tr
        tr.ignored = 1
        return tr

    def _set(
        self, state: LimiterState | None, cmd: LimiterSetCmd, now_ms: int
    ) -> tuple[LimiterTransition, LimiterState]:
        tr = LimiterTransition()
        try:
            spec = msgspec.convert(msgspec.to_builtins(cmd.spec), LimitSpec).check()
        except (InvalidArgumentError, msgspec.ValidationError) as exc:
            if cmd.reply_to is not None:  # answered, nothing else changes (no limiter is created)
                tr.replies.append(_error(cmd.reply_to, ReplyCode.invalid_limiter, f"limiter {cmd.wf_id!r}: {exc}"))
            else:
                tr.skipped = True
            return tr, state  # type: ignore[return-value]  # the processor keeps None as None
        by = bounded_identity(cmd.identity)
        if state is None:
            rec = LimiterRecord(
                name=cmd.wf_id, spec=spec, declared=cmd.declared, created_ms=now_ms, updated_ms=now_ms,
                created_by=by, updated_by=by, tokens_u=spec.capacity * UNIT, tokens_at_ms=now_ms,
            )  # fmt: skip
            state = LimiterState(rec)
        else:
            rec = state.record
            if cmd.declared is not None and cmd.declared == rec.declared:
                if cmd.reply_to is not None:
                    tr.replies.append((cmd.reply_to, _ok(cmd.reply_to, rec)))
                return tr, state  # the code's declaration was applied before: runtime changes stand
            _refill(rec, now_ms)
            grouped = rec.spec.per_key is not None
            rec.spec = spec
            if grouped != (spec.per_key is not None):
                state.requeue()
            rec.tokens_u = min(rec.tokens_u, spec.capacity * UNIT)
            rec.updated_ms = now_ms
            rec.updated_by = by
            if cmd.declared is not None:
                rec.declared = cmd.declared
        self._grant(state, tr, now_ms)  # a larger limit serves waiting requests now
        if cmd.reply_to is not None:
            tr.replies.append((cmd.reply_to, _ok(cmd.reply_to, rec)))
        return tr, state

    def _delete(self, state: LimiterState | None, cmd: LimiterDeleteCmd) -> LimiterTransition:
        tr = LimiterTransition()
        if state is None:
            if cmd.reply_to is not None:
                tr.replies.append(_error(cmd.reply_to, ReplyCode.limiter_not_found, f"no limiter named {cmd.wf_id!r}"))
            return tr
        rec = state.record
        if (state.holders or state.waiters) and not cmd.force:
            if cmd.reply_to is not None:
                tr.replies.append(
                    _error(
                        cmd.reply_to, ReplyCode.limiter_in_use,
                        f"limiter {rec.name!r} has {len(state.holders)} permits held and {len(state.waiters)} "
                        f"requests waiting; wait until they are done, or delete with force (waiting requests "
                        f"then fail with LimiterNotFoundError)",
                    )
                )  # fmt: skip
            tr.skipped = cmd.reply_to is None
            return tr
        for w in list(state.waiters.values()):
            tr.sends.append(
                _grant_cmd(
                    w.wf_id, w.run_id, w.acquire_id, rec.name, w.since_ms, error=not_found_error(rec.name, " (deleted)")
                )
            )
            tr.writes.append((keys.waiter_key(rec.name, w.arrival), None))
            tr.refused += 1
        for h in state.holders:
            tr.writes.append((keys.holder_key(rec.name, h), None))
        if rec.timer_due_ms is not None:
            tr.timers_clear.append(_timer(rec.name, rec.timer_due_ms))
        tr.delete = True
        if cmd.reply_to is not None:
            tr.replies.append(
                (cmd.reply_to, Reply(request_id=cmd.reply_to.request_id, client_id=cmd.reply_to.client_id))
            )
        return tr

    # ------------------------------------------------------------------ grants

    def _grant(self, state: LimiterState, tr: LimiterTransition, now_ms: int) -> None:
        """Grant what the limits allow now, in order; arm the timer for what the rate holds back."""
        rec = state.record
        spec = rec.spec
        _refill(rec, now_ms)
        now_ms = rec.tokens_at_ms  # the limiter's own time: never before a record it has applied
        due: int | None = None
        made = 0
        while state.waiters:
            if spec.concurrency is not None and len(state.holders) >= spec.concurrency:
                break  # a release serves the next
            if spec.rate_n is not None and rec.tokens_u < UNIT:
                due = rec.tokens_at_ms + _ms_until_token(rec)
                break
            if made == MAX_GRANTS_PER_TRANSITION:
                due = now_ms  # the rest in the next transition, at once
                break
            holder = self._pick(state)
            if holder is None:
                break  # every waiting request's key is at its per-key limit
            w = state.waiters[holder]
            state._dequeue(w)
            self._charge(rec, w.fairness)
            h = LimitHolder(
                holder=holder, wf_id=w.wf_id, run_id=w.run_id, key=w.key, fairness=w.fairness,
                priority=w.priority, since_ms=now_ms,
            )  # fmt: skip
            state.holders[holder] = h
            state.key_use[w.key] = state.key_use.get(w.key, 0) + 1
            if spec.rate_n is not None:
                rec.tokens_u -= UNIT
            waited = max(0, now_ms - w.since_ms)
            rec.granted += 1
            rec.waited_ms += waited
            tr.granted.append((w.fairness, waited))
            tr.writes.append((keys.waiter_key(rec.name, w.arrival), None))
            tr.writes.append((keys.holder_key(rec.name, holder), encoder.encode(h)))
            tr.sends.append(_grant_cmd(w.wf_id, w.run_id, w.acquire_id, rec.name, w.since_ms, now_ms))
            made += 1
        rec.in_use = len(state.holders)
        rec.waiting = len(state.waiters)
        if due != rec.timer_due_ms:
            if rec.timer_due_ms is not None:
                tr.timers_clear.append(_timer(rec.name, rec.timer_due_ms))
            if due is not None:
                tr.timers_set.append(_timer(rec.name, due))
            rec.timer_due_ms = due
        if len(rec.passes) > MAX_PASSES:
            _forget_passes(state)

    @staticmethod
    def _pick(state: LimiterState) -> str | None:
        """The next request to serve: best priority, then lowest pass across fairness keys, then arrival."""
        rec = state.record
        per_key = rec.spec.per_key
        key_use = state.key_use
        for prio in sorted(state.queues):
            best: tuple[int, str, str] | None = None  # (pass, fairness, holder)
            for fair, by_key in state.queues[prio].items():
                pass_ = rec.passes.get(fair, rec.vtime)
                if best is not None and (pass_, fair) >= best[:2]:
                    continue
                head: tuple[int, str] | None = None  # (arrival, holder) of the earliest servable key
                for key, q in by_key.items():
                    if per_key is not None and key_use.get(key, 0) >= per_key:
                        continue
                    arrival = state.waiters[q[0]].arrival
                    if head is None or arrival < head[0]:
                        head = (arrival, q[0])
                if head is not None:
                    best = (pass_, fair, head[1])
            if best is not None:
                return best[2]
        return None

    @staticmethod
    def _charge(rec: LimiterRecord, fairness: str) -> None:
        """Move the served fairness key's pass on by its stride (its weight read now)."""
        pass_ = max(rec.passes.get(fairness, rec.vtime), rec.vtime)
        rec.vtime = pass_
        weight = rec.spec.weights.get(fairness, 1)
        rec.passes[fairness] = pass_ + STRIDE // max(1, weight)


def _fairness_waiting(state: LimiterState, fairness: str) -> bool:
    return any(fairness in by_fair for by_fair in state.queues.values())


def _forget_passes(state: LimiterState) -> None:
    """Drop the passes of idle fairness keys that owe nothing (at or below the virtual time), then the oldest."""
    rec = state.record
    active = {f for by_fair in state.queues.values() for f in by_fair}
    rec.passes = {f: p for f, p in rec.passes.items() if f in active or p > rec.vtime}
    if len(rec.passes) > MAX_PASSES:
        idle = sorted(((f, p) for f, p in rec.passes.items() if f not in active), key=lambda fp: -fp[1])
        keep = max(0, MAX_PASSES - len(active))
        rec.passes = {f: p for f, p in rec.passes.items() if f in active} | dict(idle[:keep])


def _refill(rec: LimiterRecord, now_ms: int) -> None:
    """Add the permits the rate earned since `tokens_at_ms` (time never moves back)."""
    spec = rec.spec
    if spec.rate_n is None or spec.rate_period_ms is None:
        rec.tokens_at_ms = max(rec.tokens_at_ms, now_ms)
        return
    if now_ms <= rec.tokens_at_ms:
        return
    cap = spec.capacity * UNIT
    earned = (now_ms - rec.tokens_at_ms) * spec.rate_n * UNIT // spec.rate_period_ms
    rec.tokens_u = min(cap, rec.tokens_u + earned)
    rec.tokens_at_ms = now_ms


def _ms_until_token(rec: LimiterRecord) -> int:
    """Milliseconds until the bucket holds a whole permit (at least 1)."""
    spec = rec.spec
    assert spec.rate_n is not None and spec.rate_period_ms is not None
    need = UNIT - rec.tokens_u
    per_ms = spec.rate_n * UNIT
    return max(1, -(-need * spec.rate_period_ms // per_ms))


def _timer(name: str, due_ms: int) -> TimerEntry:
    return TimerEntry(wf_id=name, run_id="", kind=TimerKind.limiter, seq=0, due_ms=due_ms)


def _grant_cmd(
    wf_id: str,
    run_id: str,
    acquire_id: str,
    limiter: str,
    requested_ms: int,
    granted_ms: int = 0,
    error: dict[str, Any] | None = None,
) -> LimitGrantCmd:
    return LimitGrantCmd(
        wf_id=wf_id, run_id=run_id, acquire_id=acquire_id, limiter=limiter, ok=error is None, error=error,
        requested_ms=requested_ms, granted_ms=granted_ms,
    )  # fmt: skip


def _ok(to: ReplyTo, rec: LimiterRecord) -> Reply:
    return Reply(request_id=to.request_id, client_id=to.client_id, payload=rec)


def _error(to: ReplyTo, code: ReplyCode, message: str) -> tuple[ReplyTo, Reply]:
    return to, Reply(request_id=to.request_id, client_id=to.client_id, ok=False, code=code, message=message)
