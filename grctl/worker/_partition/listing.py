"""One partition's answer to a listing (`ListCmd`): a page of its run index, and its counts.

The run index (`x/<status>/<newest first>/<wf_id>`, kept by the partition processor with
every status change) holds the latest run of every workflow id the partition owns, so a page
is a seek and a short walk per status asked, never a scan of the changelog. The client asks
every partition and merges the pages (`grctl.client.listing`).

Each answer is bounded: at most `LIST_LIMIT_MAX` runs, and at most `SCAN_BUDGET` index entries
examined (filters by type or text can skip many). A partition that stops on its budget says
how far it looked (`frontier`), and the client's next page starts there, so a page may be short
but never skips a run.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from grctl.engine import keys
from grctl.engine.machine import Machine
from grctl.engine.records import ListCmd, ReplyTo, RunRecord, run_decoder
from grctl.models.run_info import RunStatus
from grctl.state.partition_store import PartitionStore

#: The most runs one partition returns for one page.
LIST_LIMIT_MAX: Final = 1000
#: The most index entries one answer examines.
SCAN_BUDGET: Final = 20_000
#: A listed run's error message is cut to this many characters (describe has it whole).
ERROR_PREVIEW_CHARS: Final = 200

_count_decoder = msgspec.msgpack.Decoder(int)
_NO_REPLY: Final = ReplyTo(client_id="", request_id="", partition=0)


def list_page(store: PartitionStore, cmd: ListCmd) -> dict[str, Any]:
    """The page of runs (and the counts) `cmd` asks of this partition's store.

    Returns:
        `{"runs": [[position, run info], ...], "frontier": position | None, "full": bool,
        "counts": {status: {type: n}} | None}`, runs newest first. `full`: the partition had
        `limit` runs to give (more may follow); `frontier`: it stopped on its budget there.
    """
    limit = max(1, min(cmd.limit, LIST_LIMIT_MAX))
    statuses = cmd.statuses or [s.value for s in RunStatus]
    types = set(cmd.wf_types) if cmd.wf_types else None
    text = cmd.text.lower() if cmd.text else None
    budget = SCAN_BUDGET
    rows: list[tuple[bytes, RunRecord]] = []
    frontiers: list[bytes] = []
    full = False
    for status in statuses:
        prefix = keys.index_prefix(status)
        taken = 0
        for key, value in store.scan(prefix, None if cmd.after is None else prefix + cmd.after):
            pos = keys.index_position(key)
            if budget <= 0:
                frontiers.append(pos)
                break
            budget -= 1
            raw = store.get(keys.run_key(keys.index_wf_id(key)))
            if raw is None:
                continue
            run = run_decoder.decode(raw)
            if run.run_id.encode() != value:
                continue  # the index entry of a run record written since (a newer run took the id)
            if cmd.started_after_ms is not None and run.started_ms < cmd.started_after_ms:
                break  # newest first: every run after this one started earlier still
            if types is not None and run.wf_type not in types:
                continue
            if text is not None and not any(text in f.lower() for f in (run.wf_id, run.wf_type, run.run_id)):
                continue
            rows.append((pos, run))
            taken += 1
            if taken >= limit:
                full = True
                break
    frontier = min(frontiers) if frontiers else None
    rows.sort(key=lambda r: r[0])
    if frontier is not None:
        rows = [r for r in rows if r[0] <= frontier]
    runs = [[pos, row_info(run)] for pos, run in rows[:limit]]
    return {
        "runs": runs,
        "frontier": frontier,
        "full": full,
        "counts": counts(store) if cmd.counts else None,
        "versions": version_counts(store) if cmd.counts else None,
    }


def row_info(run: RunRecord) -> dict[str, Any]:
    """A run as a listing shows it: its describe answer without the result, the error cut short."""
    info: dict[str, Any] = Machine.describe(run, _NO_REPLY)[1].payload
    info["result"] = None
    error = info.get("error")
    if isinstance(error, dict):
        info["error"] = {"type": error.get("type"), "message": str(error.get("message") or "")[:ERROR_PREVIEW_CHARS]}
    return info


def counts(store: PartitionStore) -> dict[str, dict[str, int]]:
    """How many latest runs the partition holds, by status and type."""
    out: dict[str, dict[str, int]] = {}
    for key, raw in store.scan(keys.COUNT_PREFIX):
        status, wf_type = keys.count_of_key(key)
        out.setdefault(status, {})[wf_type] = _count_decoder.decode(raw)
    return out


def version_counts(store: PartitionStore) -> dict[str, dict[int, dict[str, int]]]:
    """How many latest runs not ended the partition holds, by type, version and status.

    A version once counted stays (with 0): "Order v1: 0 runs open" is its drain count.
    """
    out: dict[str, dict[int, dict[str, int]]] = {}
    for key, raw in store.scan(keys.VERSION_PREFIX):
        wf_type, version, status = keys.version_count_of_key(key)
        out.setdefault(wf_type, {}).setdefault(version, {})[status] = _count_decoder.decode(raw)
    return out
