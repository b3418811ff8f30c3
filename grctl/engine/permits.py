"""Permits in the run state machine: pure transitions, no I/O, no clock (docs/tutorials/flow-control.md).

A step that enters `async with ctx.limit("payments-api", key=...)` for the first time suspends;
its outcome ("limit") names the request. From there everything is a transition of the run:

1. The suspension sends the request (`LimitAcquireCmd`) to the limiter's partition and records
   it in the run record (`RunRecord.acquire`): the run waits durably, in no worker's memory.
2. The limiter's answer (`LimitGrantCmd`) is an input record on the run's partition. It is
   applied only if it answers the request the run waits for; otherwise a granted permit is given
   back at once (`LimitReleaseCmd`): the run ended, was cancelled or moved on meanwhile.
3. A grant is written into the step's journal at the call's position, the permit is added to the
   run's permits (`RunRecord.permits`) and the step is due again: it re-executes, replays its
   journal, and the section's body runs with the permit held.
4. Permits are given back in the transaction of the step outcome that ends their use: the
   sections the step left (`StepOutcome.released`) while it suspends again; every permit when the
   step ends however it ends (next step, wait, complete, fail, error, timeout); every permit and
   the request still waiting when the run ends (cancel, terminate, workflow timeout). A worker
   that dies holds nothing: the permit is in the committed run record, and whichever worker owns
   the run next releases it with the transition that ends its use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from grctl.engine.records import (
    HeldPermit,
    HistoryRecord,
    LimitAcquireCmd,
    LimitGrantCmd,
    LimitReleaseCmd,
    PendingAcquire,
    RunRecord,
)
from grctl.models.history import HistoryKind
from grctl.models.limits import MAX_PRIORITY, MIN_PRIORITY

if TYPE_CHECKING:
    from grctl.engine.machine import Transition

#: The journal entry kind of a `ctx.limit` call's grant (or refusal).
JOURNAL_LIMIT: Final = "limit"


def holder_id(run_id: str, acquire_id: str) -> str:
    """The name of a permit: the run and the `ctx.limit` call that asked for it."""
    return f"{run_id}/{acquire_id}"


def acquire_id_of(seq: int, position: int) -> str:
    """The id of a `ctx.limit` call inside its run: the step's number and the call's journal position."""
    return f"{seq}.{position}"


def request(tr: Transition, run: RunRecord, call: PendingAcquire, now_ms: int, worker_id: str) -> RunRecord:
    """A step suspended on `ctx.limit`: send the request and wait (step 1 of the module docstring)."""
    priority = call.priority if MIN_PRIORITY <= call.priority <= MAX_PRIORITY else run.priority
    acq = msgspec.structs.replace(
        call, acquire_id=acquire_id_of(run.seq, call.position), priority=priority, since_ms=now_ms
    )
    tr.sends.append(
        LimitAcquireCmd(
            wf_id=acq.limiter, run_wf_id=run.wf_id, run_id=run.run_id, acquire_id=acq.acquire_id, key=acq.key,
            fairness=acq.fairness, priority=acq.priority,
        )
    )  # fmt: skip
    tr.history.append(
        _hist(
            run, HistoryKind.permit_requested, now_ms, worker_id,
            {"limiter": acq.limiter, "acquire_id": acq.acquire_id, "step_name": run.step or "", "key": acq.key,
             "fairness": acq.fairness, "priority": acq.priority},
            acq.position,
        )
    )  # fmt: skip
    return msgspec.structs.replace(run, acquire=acq)


def on_grant(tr: Transition, run: RunRecord | None, cmd: LimitGrantCmd, now_ms: int, worker_id: str) -> bool:
    """The limiter answered: apply it if the run waits for it (steps 2-3). True if the step is due again."""
    acq = run.acquire if run is not None and run.run_id == cmd.run_id else None
    if run is None or acq is None or acq.acquire_id != cmd.acquire_id or acq.limiter != cmd.limiter:
        if cmd.ok:  # nobody waits for this permit any more: give it back in this same transaction
            tr.sends.append(LimitReleaseCmd(wf_id=cmd.limiter, holder=holder_id(cmd.run_id, cmd.acquire_id)))
        tr.permit_dropped = True
        return False
    seq = run.seq
    if cmd.ok:
        waited = max(0, now_ms - acq.since_ms)
        tr.history.append(
            _hist(
                run, HistoryKind.permit_granted, now_ms, worker_id,
                {"limiter": acq.limiter, "acquire_id": acq.acquire_id, "step_name": run.step or "", "key": acq.key,
                 "waited_ms": waited, "requested_ms": cmd.requested_ms or None, "granted_ms": cmd.granted_ms or None},
                acq.position,
            )
        )  # fmt: skip
        tr.journal.append((seq, acq.position, [JOURNAL_LIMIT, acq.limiter, {"ok": True, "acquire_id": acq.acquire_id}]))
        held = HeldPermit(limiter=acq.limiter, acquire_id=acq.acquire_id, seq=seq, since_ms=now_ms)
        tr.permit_waited_ms = waited
        tr.run = msgspec.structs.replace(run, acquire=None, permits=(*run.permits, held))
        return True
    error = dict(cmd.error or {"type": "LimiterNotFoundError", "message": f"limiter {cmd.limiter!r} refused"})
    tr.history.append(
        _hist(
            run, HistoryKind.permit_refused, now_ms, worker_id,
            {"limiter": acq.limiter, "acquire_id": acq.acquire_id, "step_name": run.step or "", "error": error},
            acq.position,
        )
    )  # fmt: skip
    tr.journal.append(
        (seq, acq.position, [JOURNAL_LIMIT, acq.limiter, {"ok": False, "acquire_id": acq.acquire_id, "error": error}])
    )
    tr.run = msgspec.structs.replace(run, acquire=None)
    return True


def release(tr: Transition, run: RunRecord, which: tuple[str, ...] | None, now_ms: int, worker_id: str) -> RunRecord:
    """Give back the run's permits named in `which` (None: all of them), in this transition (step 4)."""
    if not run.permits:
        return run
    keep: list[HeldPermit] = []
    for p in run.permits:
        if which is not None and p.acquire_id not in which:
            keep.append(p)
            continue
        tr.sends.append(LimitReleaseCmd(wf_id=p.limiter, holder=holder_id(run.run_id, p.acquire_id)))
        tr.history.append(
            _hist(
                run, HistoryKind.permit_released, now_ms, worker_id,
                {"limiter": p.limiter, "acquire_id": p.acquire_id, "held_ms": max(0, now_ms - p.since_ms)},
                _position(p.acquire_id),
            )
        )  # fmt: skip
    if len(keep) == len(run.permits):
        return run
    return msgspec.structs.replace(run, permits=tuple(keep))


def on_run_end(tr: Transition, run: RunRecord, now_ms: int, worker_id: str) -> RunRecord:
    """The run ends: every permit it holds goes back, and the request it waits with is withdrawn."""
    run = release(tr, run, None, now_ms, worker_id)
    acq = run.acquire
    if acq is not None:
        tr.sends.append(LimitReleaseCmd(wf_id=acq.limiter, holder=holder_id(run.run_id, acq.acquire_id)))
        run = msgspec.structs.replace(run, acquire=None)
    return run


def describe(run: RunRecord) -> dict[str, Any] | None:
    """What describe and the UI show of a run's permits and the one it waits for (None: neither)."""
    if run.acquire is None and not run.permits:
        return None
    acq = run.acquire
    return {
        "waiting_for": None
        if acq is None
        else {
            "limiter": acq.limiter,
            "acquire_id": acq.acquire_id,
            "holder": holder_id(run.run_id, acq.acquire_id),
            "key": acq.key,
            "fairness": acq.fairness,
            "priority": acq.priority,
            "since_ms": acq.since_ms,
        },
        "holding": [{"limiter": p.limiter, "acquire_id": p.acquire_id, "since_ms": p.since_ms} for p in run.permits],
    }


def _position(acquire_id: str) -> int:
    return int(acquire_id.rpartition(".")[2] or 0)


def _hist(run: RunRecord, kind: str, now_ms: int, worker_id: str, msg: dict[str, Any], position: int) -> HistoryRecord:
    return HistoryRecord(
        kind=kind, wf_id=run.wf_id, run_id=run.run_id, ts_ms=now_ms, msg=msg, worker_id=worker_id,
        op=f"{JOURNAL_LIMIT}:{position}",
    )  # fmt: skip
