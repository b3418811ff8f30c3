"""A/B: the same scenarios on two versions of the engine, interleaved, against one broker.

    python -m benchmarks.ab --before 1eabc07 [--after REV] --rounds 2 -s chain -s latency [--quick] [--no-baseline]

Each round runs `python -m benchmarks run <scenarios>` first in a git worktree of `--before`
(made once under build/ab/tree-<rev>, with this checkout's virtualenv and the worktree first on
PYTHONPATH, so its harness and its workers run its own engine), then in this checkout (or a
worktree of `--after`, so that this checkout can be edited meanwhile). Rounds
interleave the two, so that the machine's drift hits both alike. The headline figures of every
run are printed side by side and written to build/ab/summary.json; each run's full results stay
in build/ab/<label>-<round>/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "ab"

#: (label, scenario, path in its metrics) of the figures compared.
HEADLINES: list[tuple[str, str, tuple[str, ...]]] = [
    ("chain steps/s", "chain", ("steps_per_s",)),
    ("chain / raw loop, paired median", "chain", ("paired_ratio_median",)),
    ("chain worker CPU µs/step", "chain", ("worker_cpu_us_per_step",)),
    ("chain broker CPU µs/step", "chain", ("broker_cpu_us_per_step",)),
    ("chain directives offsets/step", "chain", ("offsets_per_step", "directives")),
    ("chain run latency p50 ms", "chain", ("run_latency_ms", "p50")),
    ("1-step latency p50 ms", "latency", ("latency_ms", "p50")),
    ("1-step latency p99 ms", "latency", ("latency_ms", "p99")),
    ("1-step runs/s", "latency", ("runs_per_s",)),
    ("children runs/s", "children", ("children_per_s",)),
    ("64 / 4 partitions", "partitions", ("p64_over_p4",)),
]


def worktree(rev: str) -> Path:
    """A worktree of `rev` (created once)."""
    path = OUT / f"tree-{rev}"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True)
    return path


def run_once(tree: Path, label: str, args: argparse.Namespace) -> dict[str, Any]:
    out = OUT / label
    cmd = [sys.executable, "-m", "benchmarks", "run", "--out", str(out)]
    for s in args.scenario:
        cmd += ["-s", s]
    if args.quick:
        cmd.append("--quick")
    if args.no_baseline:
        cmd.append("--no-baseline")
    env = dict(os.environ, PYTHONPATH=str(tree))
    print(f"ab: {label}: {' '.join(cmd)} (in {tree})", flush=True)
    subprocess.run(cmd, cwd=tree, env=env, check=False)
    path = out / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def headline(doc: dict[str, Any], scenario: str, path: tuple[str, ...]) -> Any:
    node: Any = doc.get("scenarios", {}).get(scenario, {}).get("metrics", {})
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the git revision to compare this checkout with")
    ap.add_argument("--after", help="a git revision for the other side (default: this checkout, as it is)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-s", "--scenario", action="append", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args(argv)
    before = worktree(args.before)
    after = worktree(args.after) if args.after else ROOT
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for i in range(1, args.rounds + 1):
        runs["before"].append(run_once(before, f"before-{i}", args))
        runs["after"].append(run_once(after, f"after-{i}", args))
    summary: dict[str, Any] = {"before": args.before, "rounds": args.rounds, "scenarios": args.scenario, "figures": {}}
    print(f"\n{'figure':<36} {'before (' + args.before + ')':>28} {'after':>28}")
    for label, scenario, path in HEADLINES:
        if scenario not in args.scenario:
            continue
        pair = {side: [headline(doc, scenario, path) for doc in docs] for side, docs in runs.items()}
        summary["figures"][label] = pair
        cells = [" / ".join("-" if v is None else f"{v:g}" for v in pair[side]) for side in ("before", "after")]
        print(f"{label:<36} {cells[0]:>28} {cells[1]:>28}")
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nab: written {OUT / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
