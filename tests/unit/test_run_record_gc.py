"""Decoded run records stay out of the garbage collector's sight (docs/engine.md, "The hot path")."""

from __future__ import annotations

import gc
from enum import Enum

from grctl.engine.records import RunRecord, encoder, run_decoder
from grctl.models.run_info import RunStatus


def test_a_decoded_run_record_holds_nothing_the_collector_tracks() -> None:
    # Issue 32: a worker caches ~49,000 decoded records; a list in each (a default `[]`: msgspec
    # gives every instance its own) was half of what every full collection walked.
    raw = encoder.encode(RunRecord(run_id="r1", wf_id="w1", wf_type="T", status=RunStatus.running, state="step"))
    rec = run_decoder.decode(raw)
    assert not gc.is_tracked(rec)
    fields = [getattr(rec, f) for f in rec.__struct_fields__]
    # (a status or state is a shared enum member, not the record's own)
    assert not [v for v in fields if gc.is_tracked(v) and not isinstance(v, Enum)]
