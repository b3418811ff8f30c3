"""``python -m benchmarks run [--scenario NAME ...] [--quick]``: see benchmarks/README.md."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
import traceback
from pathlib import Path

from benchmarks.harness import Bench, ScenarioResult, console, make_progress, servers_from_env, temp_root
from benchmarks.report import environment, write_all
from benchmarks.scenarios import ALIASES, NEEDS_BASELINE, ON_REQUEST, SCENARIOS

RESULTS = Path(__file__).resolve().parent / "results"


def selected(names: list[str] | None, with_baseline: bool) -> list[str]:
    """The scenarios to run, in the canonical order (the baseline first when a ratio needs it)."""
    if not names:
        return [n for n in SCENARIOS if n not in ON_REQUEST]
    wanted = set()
    for n in names:
        n = ALIASES.get(n, n)
        if n not in SCENARIOS:
            raise SystemExit(f"unknown scenario {n!r}; choose from {', '.join([*SCENARIOS, *ALIASES])}")
        wanted.add(n)
    if with_baseline and wanted & set(NEEDS_BASELINE):
        wanted.add("baseline")
    return [n for n in SCENARIOS if n in wanted]


async def run(args: argparse.Namespace) -> int:
    names = selected(args.scenario, not args.no_baseline)
    out: Path = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    tmp = temp_root()
    results: list[ScenarioResult] = []
    console.print(f"[bold]grctl benchmarks[/] ({'quick' if args.quick else 'full'}): {', '.join(names)} "
                  f"against {args.servers}; results in {out}")  # fmt: skip
    with make_progress() as progress:
        bench = Bench(servers=args.servers, quick=args.quick, progress=progress, tmp=tmp,
                      profile=(out / "profile") if args.profile else None,
                      keep_logs=(out / "logs") if args.keep_logs else None)  # fmt: skip
        for name in names:
            await bench.settle()
            t0 = time.perf_counter()
            try:
                res = await SCENARIOS[name](bench)
            except Exception as exc:
                res = ScenarioResult(name, status="error", error=f"{type(exc).__name__}: {exc}")
                res.notes.append(traceback.format_exc(limit=3).strip().splitlines()[-1])
                console.print(f"[red]{name} failed:[/]\n{traceback.format_exc()}")
            res.seconds = time.perf_counter() - t0
            bench.results[name] = res
            results.append(res)
            mark = {"ok": "[green]ok[/]", "skipped": "[yellow]skipped[/]"}.get(res.status, f"[red]{res.status}[/]")
            console.print(f"{name}: {mark} in {res.seconds:.0f}s " + "; ".join(
                f"{r.metric} = {r.value} {r.unit}" for r in res.rows[:3]))  # fmt: skip
    env = environment(args.servers, args.quick)
    env["broker_settle_waits_s"] = bench.scratch.get("settle_s", [])  # waits for an idle broker
    paths = write_all(out, env, results)
    if args.profile and (out / "profile" / "chain-worker.collapsed.txt").exists():
        from benchmarks.profile import write_summary

        paths["profile"] = write_summary(out / "profile" / "chain-worker.collapsed.txt", out / "profile")
    shutil.rmtree(tmp, ignore_errors=True)
    print((out / "results.md").read_text())
    for kind, p in paths.items():
        console.print(f"{kind}: {p}")
    return 0 if all(r.status in ("ok", "skipped") for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run scenarios and write results")
    names = ", ".join([*SCENARIOS, *ALIASES])
    r.add_argument(
        "--scenario", "-s", action="append",
        help=f"one of {names} (repeatable; default: all but {', '.join(ON_REQUEST)})",
    )  # fmt: skip
    r.add_argument("--quick", action="store_true", help="small sizes: a few minutes in all")
    r.add_argument("--servers", default=servers_from_env(), help="default: GRCTL_KAFKA_SERVERS or 127.0.0.1:9092")
    r.add_argument("--out", type=Path, help="results folder (default: benchmarks/results; results/quick with --quick)")
    r.add_argument("--no-baseline", action="store_true", help="do not add the baseline for ratio scenarios")
    r.add_argument("--profile", action="store_true", help="py-spy on the chain scenario's worker (needs py-spy)")
    r.add_argument("--keep-logs", action="store_true", help="copy the worker logs to <out>/logs")
    sub.add_parser("list", help="list the scenarios")
    args = ap.parse_args(argv)
    if args.command == "list":
        for name, fn in SCENARIOS.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            print(f"{name:12} {doc[0] if doc else ''}{' (only with -s)' if name in ON_REQUEST else ''}")
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
