"""What a retention purge's scans cost, against what else the partition holds (issue 24). No broker.

A purge deletes every key of one ended run: it scans three prefixes of that run (store,
journal, children) in the partition store, through the writes waiting in memory and RocksDB.
This measures one purge's three scans on a real RocksDB holding `RUNS` runs of one step (no
store value, journal or child, as `OneStep`), while `K` unrelated writes wait in memory
(uncommitted batches and committed, unflushed writes), and after `RUNS` fired timers were
deleted (tombstones in the timer table, which sorts right after the store table: a seek for a
prefix with no live key walks them).
A scan that costs what the run holds stays flat across the rows. The first scan after the
writes is shown apart: it indexes them (each write once per in-memory dict it passes through).

``python -m benchmarks.scan_cost`` (about 10 s); results in benchmarks/results/scan_cost.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from grctl.engine import keys
from grctl.state.partition_store import PartitionStore

RUNS = 20_000
SAMPLES = 2_000
IN_MEMORY = (0, 10_000, 40_000)
OUT = Path(__file__).resolve().parent / "results" / "scan_cost.json"


def first_scan_ms(store: PartitionStore) -> float:
    """ms of the first scan after the writes: it indexes every write in memory (once per dict)."""
    t0 = time.perf_counter()
    for _ in store.scan(keys.store_prefix("wf-0", "run-1")):
        pass
    return (time.perf_counter() - t0) * 1000


def purge_scans_us(store: PartitionStore) -> float:
    """Mean µs of the three scans of one purge, over `SAMPLES` runs."""
    t0 = time.perf_counter()
    for i in range(SAMPLES):
        wf, run = f"wf-{i * (RUNS // SAMPLES)}", "run-1"
        for prefix in (keys.store_prefix(wf, run), keys.journal_run_prefix(wf, run), keys.child_prefix(wf, run)):
            for _ in store.scan(prefix):
                pass
    return (time.perf_counter() - t0) / SAMPLES * 1e6


def main() -> int:
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = PartitionStore(Path(tmp) / "p", clock=lambda: 0.0, flush_keys=10**9)  # flushed by hand
        for i in range(RUNS):
            wf = f"wf-{i}"
            store.put(keys.run_key(wf), b"\x80" * 60, batch_id=1)
            store.put(keys.index_key("completed", i, wf), b"run-1", batch_id=1)
            store.put(keys.timer_key(10**12 + i, wf, "wait"), b"\x80" * 30, batch_id=1)
        store.commit(1, checkpoint=1)
        store.flush()
        batch = 2
        for tombstones in (False, True):
            if tombstones:  # every run's timer fired: deleted
                for i in range(RUNS):
                    store.put(keys.timer_key(10**12 + i, f"wf-{i}", "wait"), None, batch_id=batch)
                store.commit(batch, checkpoint=batch)
                store.flush()
                batch += 1
            for k in IN_MEMORY:
                for j in range(k // 2):  # half committed and not flushed, half in an open batch
                    store.put(keys.store_key(f"other-{j}", "r", "x"), b"v", batch_id=batch)
                store.commit(batch, checkpoint=batch)
                batch += 1
                for j in range(k // 2, k):
                    store.put(keys.store_key(f"other-{j}", "r", "x"), b"v", batch_id=batch)
                first = first_scan_ms(store)
                rows.append({"in_memory_writes": k, "timer_tombstones": RUNS if tombstones else 0,
                             "first_scan_ms": round(first, 2),
                             "us_per_purge_scans": round(purge_scans_us(store), 1)})  # fmt: skip
                store.drop_uncommitted()
                store.flush()
                batch += 1
        store.close()
    print("| writes waiting in memory | deleted timers | first scan (ms) | µs per purge (its 3 scans) |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['in_memory_writes']:,} | {r['timer_tombstones']:,} | {r['first_scan_ms']} | "
              f"{r['us_per_purge_scans']} |")  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"runs": RUNS, "samples": SAMPLES, "rows": rows}, indent=1) + "\n")
    print(f"\nsaved {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
