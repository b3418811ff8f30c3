"""Smoke test of the benchmark harness: the quick mode of three cheap scenarios, end to end.

Runs ``python -m benchmarks run --quick`` against the session's broker and checks that every
scenario's own correctness checks passed and that the JSON, the markdown table and the plots
were written. It never asserts speed: the machine running the suite is shared and noisy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scenarios import LATENCY_P99_MS

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def test_quick_latency_tasks_children(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--scenario", "latency", "--scenario", "tasks",
         "--scenario", "children", "--out", str(out)],
        cwd=ROOT,
        env=dict(os.environ, GRCTL_KAFKA_SERVERS=kafka_bootstrap),
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"

    doc = json.loads((out / "results.json").read_text())
    assert doc["environment"]["mode"] == "quick"
    scenarios = doc["scenarios"]
    assert set(scenarios) == {"latency", "tasks", "children"}
    for name in ("latency", "tasks", "children"):
        s = scenarios[name]
        assert s["status"] == "ok", s
        assert s["checks"] and all(s["checks"].values()), s["checks"]

    lat = scenarios["latency"]["metrics"]
    assert lat["latency_ms"]["n"] == scenarios["latency"]["params"]["sequential_runs"]
    assert 0 < lat["latency_ms"]["p50"] <= lat["latency_ms"]["p99"]
    assert lat["runs_per_s"] > 0
    assert scenarios["tasks"]["metrics"]["task_attempts_per_s"] > 0
    assert scenarios["children"]["metrics"]["children_per_s"] > 0

    table = (out / "results.md").read_text()
    assert "| scenario | metric | measured | unit | target | met | engine / baseline |" in table
    assert "1-step latency p99 (light load)" in table and f"≤ {LATENCY_P99_MS:g} ms" in table
    assert "child runs/s" in table
    for png in ("latency.png", "throughput.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, png


def test_quick_schedules(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The schedules scenario's quick mode: 200 schedules every 5 s, each tick fired once (issue 27)."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--quick",
            "--no-baseline",
            "--scenario",
            "schedules",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=dict(os.environ, GRCTL_KAFKA_SERVERS=kafka_bootstrap),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    s = json.loads((out / "results.json").read_text())["scenarios"]["schedules"]
    assert s["status"] == "ok" and s["checks"] and all(s["checks"].values()), s
    m = s["metrics"]
    assert m["ticks_fired"] == 200 * s["params"]["ticks_measured"]
    assert m["lateness_ms"]["n"] == m["ticks_fired"] and m["state_bytes_per_schedule"]["max"] < 8192


def test_quick_baseline_and_runtimes(kafka_bootstrap: str, tmp_path: Path) -> None:
    """One raw loop is the ceiling (issue 32), and the runtimes scenario runs a worker on each loop asked for."""
    pytest.importorskip("uvloop")  # the dev extras install it (grctl[uvloop])
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "-s", "baseline", "-s", "runtimes", "--out", str(out)],
        cwd=ROOT,
        env=dict(os.environ, GRCTL_KAFKA_SERVERS=kafka_bootstrap, GRCTL_BENCH_RUNTIMES="asyncio uvloop"),
        capture_output=True,
        text=True,
        timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    scenarios = json.loads((out / "results.json").read_text())["scenarios"]
    for name in ("baseline", "runtimes"):
        assert scenarios[name]["status"] == "ok" and all(scenarios[name]["checks"].values()), scenarios[name]
    base = scenarios["baseline"]["metrics"]
    assert base["ceiling_variant"] == "confluent-thread-2"
    assert base["ceiling_records_in_per_s"] == base["confluent-thread-2"]["records_in_per_s"] > 0
    assert not [k for k in base if "echo" in k or "aiokafka" in k]
    rt = scenarios["runtimes"]
    assert any("ran on Python" in c and "uvloop" in c for c in rt["checks"]), rt["checks"]
    summary = rt["metrics"]["summary"]
    assert len(summary) == 2 and all(s["steps_per_s"] > 0 and s["worker_cpu_us_per_step"] > 0 for s in summary.values())
    table = (out / "results.md").read_text()
    assert "ceiling (the raw loop of every ratio)" in table and "confluent-thread-2" in table
