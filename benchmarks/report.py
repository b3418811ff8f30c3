"""Results as JSON, a markdown table and PNG plots."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiokafka
import confluent_kafka

from benchmarks.harness import ROOT, ScenarioResult

JSON_NAME = "results.json"
MD_NAME = "results.md"


def environment(servers: str, quick: bool) -> dict[str, Any]:
    """Where and on what the numbers were measured."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "servers": servers,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "grctl")),
        "cpus": os.cpu_count(),
        "load_avg_at_end": [round(x, 2) for x in load],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "confluent_kafka": getattr(confluent_kafka, "__version__", "") or str(confluent_kafka.version()),
        "librdkafka": confluent_kafka.libversion()[0],
        "aiokafka": aiokafka.__version__,
    }


def write_all(out: Path, env: dict[str, Any], results: list[ScenarioResult]) -> dict[str, Path]:
    """Write results.json, results.md and the plots to `out`; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"environment": env, "scenarios": {r.name: r.to_json() for r in results}}
    paths = {"json": out / JSON_NAME, "markdown": out / MD_NAME}
    paths["json"].write_text(json.dumps(doc, indent=2, default=str) + "\n")
    paths["markdown"].write_text(markdown(env, results))
    paths.update(plots(out, results))
    return paths


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(env: dict[str, Any], results: list[ScenarioResult]) -> str:
    """The results table: measured value, target, target met, engine/baseline ratio."""
    lines = [
        f"Measured {env['measured_at']} ({env['mode']} mode) on {env['cpus']} CPUs, broker {env['servers']}, "
        f"grctl {env['git_commit']}{' + uncommitted engine changes' if env['git_dirty'] else ''}, "
        f"librdkafka {env['librdkafka']}, aiokafka {env['aiokafka']}, Python {env['python']}; "
        f"load average at the end {env['load_avg_at_end'][0]}.",
        "",
        "| scenario | metric | measured | unit | target | met | engine / baseline |",
        "|---|---|---:|---|---|:-:|---:|",
    ]
    for r in results:
        checks = f"{sum(r.checks.values())}/{len(r.checks)} checks" if r.checks else ""
        status = {"ok": "", "failed": " **FAILED**", "error": " **ERROR**", "skipped": " (skipped)"}.get(r.status, "")
        name = f"{r.name}{status}" + (f" ({checks})" if checks else "")
        if not r.rows:
            lines.append(f"| {name} | {r.error or ''} | | | | | |")
        for i, row in enumerate(r.rows):
            met = "" if row.met is None else ("yes" if row.met else "**no**")
            ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
            lines.append(
                f"| {name if i == 0 else ''} | {row.metric} | {_fmt(row.value)} | {row.unit} | {row.target} | {met} "
                f"| {ratio} |"
            )
    notes = [f"- {r.name}: {n}" for r in results for n in r.notes]
    if any(r.error for r in results):
        notes += [f"- {r.name}: error: {r.error.splitlines()[0] if r.error else ''}" for r in results if r.error]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += [
        "",
        "engine / baseline = engine steps/s over the records-in/s of the raw loop (confluent-thread-2: the "
        "engine's due-step traffic, 2 steps of a run per transaction) measured in the same run (each consumed "
        "record is one step's input); partitions compare with that loop on the same partition count.",
    ]
    return "\n".join(lines) + "\n"


def plots(out: Path, results: list[ScenarioResult]) -> dict[str, Path]:
    """throughput.png, latency.png and timers.png (each when its scenarios ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r.name: r for r in results}
    paths: dict[str, Path] = {}

    # Throughput: the baselines' records-in/s next to the engine's steps/s.
    bars: list[tuple[str, float, str]] = []
    if (b := by.get("baseline")) is not None:
        for k, v in b.metrics.items():
            if isinstance(v, dict) and "records_in_per_s" in v:
                bars.append((f"raw {k}", v["records_in_per_s"], "tab:gray"))
    engine_bars = [
        ("chain", "chain 10-step", lambda m: m.get("steps_per_s")),
        ("latency", "1-step runs", lambda m: m.get("runs_per_s")),
        ("store", "store-heavy", lambda m: m.get("steps_per_s")),
        ("events", "events fan-in", lambda m: m.get("steps_per_s")),
        ("timers", "chain, timers pending", lambda m: m.get("burst_steps_per_s")),
        ("partitions", "chain, 4 partitions", lambda m: m.get("p4", {}).get("steps_per_s")),
        ("partitions", "chain, 64 partitions", lambda m: m.get("p64", {}).get("steps_per_s")),
        ("workers", "chain, 1 worker", lambda m: m.get("w1", {}).get("steps_per_s")),
        ("workers", "chain, 2 workers", lambda m: m.get("w2", {}).get("steps_per_s")),
    ]
    for name, label, get in engine_bars:
        if (r := by.get(name)) is not None and r.metrics and (v := get(r.metrics)):
            bars.append((f"engine {label}", float(v), "tab:blue"))
    if bars:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.5))
        labels = [b[0] for b in bars][::-1]
        ax.barh(labels, [b[1] for b in bars][::-1], color=[b[2] for b in bars][::-1])
        for y, v in enumerate([b[1] for b in bars][::-1]):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_xlabel("steps/s (engine) · records in/s (raw loops)")
        ax.set_title("Throughput: engine vs raw Kafka consume-transform-produce")
        fig.tight_layout()
        paths["throughput"] = out / "throughput.png"
        fig.savefig(paths["throughput"], dpi=110)
        plt.close(fig)

    if (r := by.get("latency")) is not None and r.metrics.get("latency_samples_ms"):
        samples = sorted(r.metrics["latency_samples_ms"])
        fig, ax = plt.subplots(figsize=(7, 4))
        ys = [(i + 1) / len(samples) for i in range(len(samples))]
        ax.plot(samples, ys, drawstyle="steps-post")
        for x, lbl in ((15, "p50 target"), (50, "p99 target")):
            ax.axvline(x, color="tab:red", linestyle="--", linewidth=0.8)
            ax.text(x, 0.05, f" {lbl}", color="tab:red", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("start → complete latency, ms (log)")
        ax.set_ylabel("fraction of runs")
        ax.set_title("1-step workflow latency at light load (CDF)")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        paths["latency"] = out / "latency.png"
        fig.savefig(paths["latency"], dpi=110)
        plt.close(fig)

    if (r := by.get("timers")) is not None and r.metrics.get("fire_lag_samples_ms"):
        m = r.metrics
        lags = sorted(m["fire_lag_samples_ms"])
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot([x / 1000 for x in lags], [(i + 1) / len(lags) for i in range(len(lags))], drawstyle="steps-post")
        a1.set_xlabel("seconds after the due time")
        a1.set_ylabel("fraction of timer runs completed")
        a1.set_title(f"{r.params.get('waiting_runs', 0):,} timers due at once")
        a1.grid(True, alpha=0.3)
        names = ["idle", "runs waiting", "after firing", "100k (extrap.)" if m["rss_100k_extrapolated"] else "100k"]
        vals = [m["rss_idle_mb"], m["rss_waiting_mb"], m["rss_after_fired_mb"], m["rss_100k_mb"]]
        a2.bar(names, vals, color=["tab:gray", "tab:blue", "tab:blue", "tab:orange"])
        a2.axhline(300, color="tab:red", linestyle="--", linewidth=0.8)
        a2.text(0, 305, "target 300 MB", color="tab:red", fontsize=8)
        a2.set_ylabel("worker RSS, MiB")
        a2.set_title("worker memory")
        fig.tight_layout()
        paths["timers"] = out / "timers.png"
        fig.savefig(paths["timers"], dpi=110)
        plt.close(fig)

    if (r := by.get("soak")) is not None and r.metrics.get("samples"):
        from benchmarks.soak import plot

        if (path := plot(r.metrics["samples"], out / "soak.png", r.metrics.get("probe_span"))) is not None:
            paths["soak"] = path
    return paths
