"""Bounded growth under sustained load (issue 14): the soak and the listing scenarios.

`soak` offers a fixed rate of runs (open loop: the rate does not slow down when the engine
does) near 70 % of what this machine sustains (GRCTL_BENCH_SOAK_LOAD=closed: a closed loop of
`CLOSED_IN_FLIGHT` runs instead, at the engine's full speed, issue 24), mixing `OneStep` and `Soak3` runs, for a
bounded time, in a namespace whose ended runs are kept `retention` seconds. Every
`sample_s` it records the workers' live state (keys and bytes of their RocksDB, runs held,
timers in memory, from the worker's metrics endpoint), the `state` topic's size on the
broker's disk, the worker's RSS, the benchmark client's CPU and the runs' latency; the plot
is `soak.png`. A restore from scratch of the whole changelog is timed after the first
retention window and at the end (the same probe, in a separate process, under the same
load), then the worker is restarted twice: with its local state, then with it wiped.

The state topic's compaction is scaled down with the retention (`segment.ms`,
`delete.retention.ms`, `min.cleanable.dirty.ratio`, set on the namespace's topic before the
workers start): with the topic defaults (6 h segments, tombstones kept a day) a 20-minute
soak would never see its changelog compacted; a week-long retention in production sees it
every few hours.

`listing` fills a namespace with a million ended runs (`--quick`: 20,000) and a few
hundred running ones and times `Client.list_workflows(status="running", limit=50)` and the
CLI's `grctl workflow list --status running --limit 50`.

The restore probe alone: ``python -m benchmarks.soak probe --servers S --namespace NS --dir D``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import workflows as wf
from benchmarks.harness import (
    ROOT,
    Bench,
    Row,
    ScenarioResult,
    _local_listener,
    percentiles,
    run_many,
    wait_for,
)
from grctl import Client, Connection
from grctl.kafka.settings_topic import NamespaceSettings, write_settings
from grctl.kafka.topics import admin_client

#: Share of the sustainable rate the soak offers.
OFFERED_FRACTION = 0.7
#: Growth over the last half of the soak, as a share of the growth over the first window.
PLATEAU_TARGET = 0.05
#: Restore after the whole soak over restore after one window.
RESTORE_RATIO_TARGET = 1.5
LIST_TARGET_MS = 200.0
#: The runs offered are abandoned (the soak fails) when this many seconds of them are in flight.
BACKLOG_LIMIT_S = 30.0
#: Runs in flight of the closed loops (the calibration's and the full-speed soak's).
CLOSED_IN_FLIGHT = 500
#: A call of a closed loop waits this long for its result: an overload shows as latency, and
#: only a call that gets nothing in this long counts as failed.
CLOSED_CALL_TIMEOUT = timedelta(seconds=300)
#: A window of this many seconds without a completed run, while runs are in flight, is a stall.
STALL_WINDOW_S = 10.0
#: The 1-step runs' p99 in every sample of the open-loop soak stays under this (no spike).
SPIKE_TARGET_MS = 300.0
SOAK_MAX_RUNS = 3_000_000
#: The soak worker's RocksDB memory budget (`--state-memory-mb`). Its block cache keeps the
#: blocks it read until the budget is full (blocks of files compacted away age out of the
#: LRU, they are not dropped), so RSS grows until then: 64 MiB fills within the soak's first
#: minutes, the default 256 MiB would take longer than the soak at this rate.
SOAK_STATE_MEMORY_MB = 64


@dataclass
class Sample:
    t: float
    state_keys: float | None = None
    state_bytes: float | None = None
    runs_held: float | None = None
    timers_loaded: float | None = None
    topic_bytes: float | None = None
    rss_mb: float | None = None
    state_memory_mb: float | None = None
    client_cores: float | None = None
    runs_per_s: float = 0.0
    steps_per_s: float = 0.0
    in_flight: int = 0
    one_ms: dict[str, float] = field(default_factory=dict)
    three_ms: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- measuring


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float] | None:
    """Sums of the worker's gauges that say how much it holds (None: it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    out = {"grctl_state_keys": 0.0, "grctl_state_bytes": 0.0, "grctl_runs": 0.0, "grctl_timers_pending": 0.0,
           "grctl_state_memory_bytes": 0.0}  # fmt: skip
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in out:
                out[s.name] += s.value
    return out


def broker_log_dirs(bench: Bench) -> list[Path]:
    """The local broker's `log.dirs`, read from the properties file on its command line."""
    pid = _local_listener(bench.servers)
    if pid is None:
        return []
    try:
        props = [a for a in psutil.Process(pid).cmdline() if a.endswith(".properties")]
    except psutil.Error:
        return []
    dirs: list[Path] = []
    for path in props[-1:]:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("log.dirs", "log.dir") and value.strip():
                dirs += [Path(d) for d in value.strip().split(",")]
    return dirs


def topic_bytes(log_dirs: list[Path], topic: str) -> int | None:
    """Bytes of a topic's log segments on the local broker's disk (None: not a local broker)."""
    if not log_dirs:
        return None
    total = 0
    for d in log_dirs:
        for part in d.glob(f"{topic}-*"):
            # The segments only: Kafka preallocates every index file at 10 MiB (sparse).
            total += sum(f.stat().st_size for f in part.glob("*.log"))
    return total


def scale_compaction(conn: Connection, retention_s: float) -> dict[str, str]:
    """Set the state topic's compaction to the soak's time scale; returns what was set."""
    configs = {
        "segment.ms": str(int(retention_s * 500)),  # half a retention window
        # The partitions' rolls spread over half a segment (the engine's topics have a jitter
        # too, scaled to their 6 h): without it the 12 partitions rolled, and were cleaned, in
        # the same second every 30 s, with a run latency p99 of 400-680 ms then (issue 32).
        "segment.jitter.ms": str(int(retention_s * 250)),
        "delete.retention.ms": str(int(retention_s * 2000)),  # tombstones kept two windows
        "min.cleanable.dirty.ratio": "0.3",
    }
    res = ConfigResource(
        "topic",
        conn.topics.state,
        incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()
        ],
    )
    admin = admin_client(conn.client_config())  # kept alive until the futures are done
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(30)
    return configs


def prepare_soak(retention_s: float, applied: dict[str, Any]) -> Callable[[Connection], None]:
    def prepare(conn: Connection) -> None:
        write_settings(conn, NamespaceSettings(run_retention_ms=int(retention_s * 1000)))
        applied.update(scale_compaction(conn, retention_s))

    return prepare


def slope_growth(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value) times the time they span: the trend's growth."""
    if len(samples) < 2:
        return 0.0
    ts = [t for t, _ in samples]
    vs = [v for _, v in samples]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    den = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (v - mv) for t, v in samples) / den if den else 0.0
    return slope * (ts[-1] - ts[0])


def plateau(samples: list[Sample], attr: str, window: float, end: float) -> dict[str, float] | None:
    """Growth over the first window and trend over the last half of a series, and their ratio."""
    points = [(s.t, v) for s in samples if (v := getattr(s, attr)) is not None]
    if len(points) < 4:
        return None
    start = points[0][1]
    after_window = [v for t, v in points if window <= t <= window * 1.5] or [v for t, v in points if t >= window][:1]
    if not after_window:
        return None
    first = statistics.fmean(after_window) - start
    last_half = slope_growth([(t, v) for t, v in points if t >= end / 2])
    return {"start": start, "first_window_growth": first, "last_half_growth": last_half,
            "ratio": last_half / first if first > 0 else float("inf") if last_half > 0 else 0.0}  # fmt: skip


async def restore_probe(bench: Bench, conn: Connection, label: str) -> dict[str, Any]:
    """Restore every partition of the changelog into empty stores (a separate process)."""
    target = bench.tmp / f"probe-{label}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.soak", "probe", "--servers", bench.servers,
        "--namespace", conn.namespace, "--dir", str(target),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    shutil.rmtree(target, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"restore probe failed: {err.decode()[-2000:]}")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def probe(servers: str, ns: str, target: Path) -> dict[str, Any]:
    """Time a restore of all the namespace's state partitions into fresh stores."""
    from grctl.engine import keys as key_layout
    from grctl.state.partition_store import PartitionStore
    from grctl.worker._session.restore import restore_partition

    conn = asyncio.run(Connection.connect(servers, ns, create_namespace=False))
    t0 = time.perf_counter()
    records = 0
    stores = []
    for p in range(conn.num_partitions):
        store = PartitionStore(target / str(p))
        records += restore_partition(conn, p, store)
        stores.append(store)
    seconds = time.perf_counter() - t0
    # Counted after the clock stopped, exactly (RocksDB's key estimate counts deletes against puts).
    live = sum(1 for store in stores for _ in store.scan(b""))
    runs = sum(1 for store in stores for _ in store.scan(key_layout.RUN_PREFIX))
    for store in stores:
        store.close()
    return {"records": records, "seconds": round(seconds, 3), "live_keys": live, "run_records": runs}


# --------------------------------------------------------------------------- the soak


class Offer:
    """The open-loop load: `rate` runs a second, each started and awaited by its own task."""

    def __init__(self, client: Client, rate: float) -> None:
        self.client = client
        self.rate = rate
        self.issued = 0
        self.in_flight = 0
        self.completed = 0
        self.steps = 0
        self.wrong: list[str] = []
        self.window_one: list[float] = []
        self.window_three: list[float] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.fell_behind = False
        #: GRCTL_BENCH_SOAK_TRACE=DIR: every run's (end, wall clock; latency ms; 3 steps?) for
        #: placing spikes finer than a sample (written to DIR/runs.tsv at the end).
        self.trace: list[tuple[float, float, bool]] | None = [] if os.environ.get("GRCTL_BENCH_SOAK_TRACE") else None

    async def one(self, i: int) -> None:
        three = i % 2 == 1
        wf_id = f"soak-{i}"
        t0 = time.perf_counter()
        self.in_flight += 1
        try:
            if three:
                out = await self.client.run_workflow("Soak3", wf_id, {"n": i}, timeout=CLOSED_CALL_TIMEOUT)
                ok = out == wf.soak3_result(i)
            else:
                out = await self.client.run_workflow("OneStep", wf_id, None, timeout=CLOSED_CALL_TIMEOUT)
                ok = out == "ok"
        except Exception as exc:
            out, ok = repr(exc), False
        finally:
            self.in_flight -= 1
        ms = (time.perf_counter() - t0) * 1000
        (self.window_three if three else self.window_one).append(ms)
        if self.trace is not None:
            self.trace.append((time.time(), ms, three))
        self.completed += 1
        self.steps += 3 if three else 1
        if not ok and len(self.wrong) < 1000:
            self.wrong.append(f"{wf_id}: {out!r}")

    async def run(self, seconds: float, max_runs: int) -> None:
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds and self.issued < max_runs:
            if self.in_flight > self.rate * BACKLOG_LIMIT_S:
                self.fell_behind = True
                return
            due = min(max_runs, int(elapsed * self.rate)) - self.issued
            for _ in range(due):
                task = asyncio.create_task(self.one(self.issued))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                self.issued += 1
            await asyncio.sleep(0.01)  # pacing of the open loop

    async def drain(self, timeout: float) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)


class ClosedLoad(Offer):
    """The closed-loop load: `in_flight` tasks, each starting a run and awaiting it, again and again."""

    def __init__(self, client: Client, in_flight: int) -> None:
        super().__init__(client, rate=0.0)
        self.loops = in_flight

    async def run(self, seconds: float, max_runs: int) -> None:
        t0 = time.perf_counter()

        async def loop() -> None:
            while time.perf_counter() - t0 < seconds and self.issued < max_runs:
                i = self.issued
                self.issued += 1
                await self.one(i)

        await asyncio.gather(*(loop() for _ in range(self.loops)))


async def calibrate(bench: Bench, client: Client, retention: float, in_flight: int = CLOSED_IN_FLIGHT) -> float:
    """Runs/s of the soak's mix, closed loop, once the first runs' retention has fired.

    Every run costs a second transition when its retention ends (the purge): the rate is
    measured over the half window that follows the first retention window, with both. A call
    that takes long is an overload and only slows the loop down; a call that fails, or a
    `STALL_WINDOW_S` window without any completed run, fails the calibration.
    """
    seconds = retention * 1.5
    task = bench.task(f"soak: calibrate ({seconds:.0f}s closed loop, {in_flight} in flight)", seconds)
    t0 = time.perf_counter()
    ends: list[float] = []
    bad: list[Any] = []

    async def loop(k: int) -> None:
        i = 0
        while time.perf_counter() - t0 < seconds:
            wf_id = f"cal-{k}-{i}"
            try:
                if i % 2:
                    out = await client.run_workflow("Soak3", wf_id, {"n": i}, timeout=CLOSED_CALL_TIMEOUT)
                    ok = out == wf.soak3_result(i)
                else:
                    out = await client.run_workflow("OneStep", wf_id, None, timeout=CLOSED_CALL_TIMEOUT)
                    ok = out == "ok"
            except Exception as exc:
                out, ok = repr(exc), False
            if not ok:
                bad.append(f"{wf_id}: {out!r}")
            ends.append(time.perf_counter() - t0)
            bench.progress.update(task, completed=min(seconds, ends[-1]))
            i += 1

    await asyncio.gather(*(loop(k) for k in range(in_flight)))
    if bad:
        raise RuntimeError(f"calibration: {len(bad)} runs failed or were wrong, e.g. {bad[:3]}")
    if stalls := stalled_windows(ends, seconds):
        raise RuntimeError(f"calibration: no run completed in the {STALL_WINDOW_S:.0f} s windows starting at {stalls}")
    measured = [t for t in ends if retention <= t <= seconds]
    return len(measured) / (seconds - retention)


def stalled_windows(ends: list[float], seconds: float) -> list[float]:
    """Starts of the whole `STALL_WINDOW_S` windows of [0, seconds) in which no run completed."""
    done = {int(t // STALL_WINDOW_S) for t in ends}
    return [k * STALL_WINDOW_S for k in range(int(seconds // STALL_WINDOW_S)) if k not in done]


async def soak(bench: Bench) -> ScenarioResult:
    """Sustained open-loop load with a short retention: state, RSS and restore plateau."""
    from benchmarks.scenarios import engine

    res = ScenarioResult("soak")
    retention = 60.0 if not bench.quick else 15.0
    seconds = float(os.environ.get("GRCTL_BENCH_SOAK_SECONDS") or (1200.0 if not bench.quick else 60.0))
    sample_s = 10.0 if not bench.quick else 5.0
    port = free_port()
    topic_cfg: dict[str, Any] = {}
    log_dirs = broker_log_dirs(bench)
    env = {"GRCTL_BENCH_METRICS_PORT": str(port), "GRCTL_BENCH_STATE_MEMORY_MB": str(SOAK_STATE_MEMORY_MB)}
    sustainable: float | None = None
    closed = os.environ.get("GRCTL_BENCH_SOAK_LOAD", "open") == "closed"
    rate = 0
    if closed:  # the engine's full speed: no rate to calibrate
        pass
    elif fixed := os.environ.get("GRCTL_BENCH_SOAK_RATE"):  # a fixed offered rate, no calibration
        rate = int(fixed)
    else:  # in a namespace of its own: the soak starts empty, as a launch does
        async with engine(bench, "soak-calibration", env=env, prepare=prepare_soak(retention, {})) as cal:
            sustainable = await calibrate(bench, cal.client, retention)
        rate = round(sustainable * OFFERED_FRACTION)
    async with engine(bench, "soak", env=env, prepare=prepare_soak(retention, topic_cfg)) as eng:
        client, w = eng.client, eng.workers[0]
        res.params = {"retention_s": retention, "seconds": seconds, "sample_s": sample_s,
                      "max_runs": SOAK_MAX_RUNS, "mix": "half OneStep (1 step), half Soak3 (3 steps, 3 store writes)",
                      "sustainable_runs_per_s": None if sustainable is None else round(sustainable),
                      "offered_runs_per_s": None if closed else rate,
                      "load": f"closed loop, {CLOSED_IN_FLIGHT} in flight" if closed else "open loop",
                      "state_memory_mb": SOAK_STATE_MEMORY_MB,
                      "state_topic_configs": topic_cfg, "partitions": eng.conn.num_partitions}  # fmt: skip
        offer = ClosedLoad(client, CLOSED_IN_FLIGHT) if closed else Offer(client, rate)
        samples: list[Sample] = []
        probes: dict[str, dict[str, Any]] = {}
        probe_span: list[float] = []  # when the restore probe after one window ran (s since the start)
        me = psutil.Process()
        loop = asyncio.get_running_loop()
        load = f"closed loop of {CLOSED_IN_FLIGHT}" if closed else f"{rate} runs/s"
        task = bench.task(f"soak: {load} for {seconds:.0f}s, retention {retention:.0f}s", seconds)

        async def sample(t: float, last: list[float]) -> None:
            cpu = sum(me.cpu_times()[:2])
            m = await loop.run_in_executor(None, scrape, port)
            tb = await loop.run_in_executor(None, topic_bytes, log_dirs, eng.conn.topics.state)
            wall = time.perf_counter()
            s = Sample(t=round(t, 1), topic_bytes=tb, in_flight=offer.in_flight)
            if m is not None:
                s.state_keys, s.state_bytes = m["grctl_state_keys"], m["grctl_state_bytes"]
                s.runs_held, s.timers_loaded = m["grctl_runs"], m["grctl_timers_pending"]
                s.state_memory_mb = round(m["grctl_state_memory_bytes"] / 2**20, 1)
            if w.alive():
                s.rss_mb = round(w.rss_mb(), 1)
            if last:
                dt = wall - last[0]
                s.client_cores = round((cpu - last[1]) / dt, 3)
                s.runs_per_s = round((offer.completed - last[2]) / dt, 1)
                s.steps_per_s = round((offer.steps - last[3]) / dt, 1)
            s.one_ms, s.three_ms = percentiles(offer.window_one), percentiles(offer.window_three)
            offer.window_one, offer.window_three = [], []
            last[:] = [wall, cpu, offer.completed, offer.steps]
            samples.append(s)

        async def sampler(t0: float) -> None:
            last: list[float] = []
            k = 0
            while True:
                await sample(time.perf_counter() - t0, last)
                bench.progress.update(task, completed=min(seconds, time.perf_counter() - t0))
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * sample_s - time.perf_counter()))

        async def probe_after_window(t0: float) -> None:
            await asyncio.sleep(max(0.0, t0 + retention * 1.5 - time.perf_counter()))
            start = time.perf_counter() - t0
            probes["after_one_window"] = {"t": round(start, 1),
                                          **await restore_probe(bench, eng.conn, "window")}  # fmt: skip
            probe_span.extend((start, time.perf_counter() - t0))

        trace_dir = os.environ.get("GRCTL_BENCH_SOAK_TRACE")
        if trace_dir:  # the load generator's own event loop lag
            Path(trace_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  # once, before the load
            lag = asyncio.create_task(wf.log_loop_lag(Path(trace_dir) / "client-lag.log"))
        t0 = time.perf_counter()
        sampling = asyncio.create_task(sampler(t0))
        early = asyncio.create_task(probe_after_window(t0))
        await offer.run(seconds, SOAK_MAX_RUNS)
        await early
        probes["after_soak"] = {"t": round(time.perf_counter() - t0, 1),
                                **await restore_probe(bench, eng.conn, "end")}  # fmt: skip
        sampling.cancel()
        end = samples[-1].t if samples else seconds
        await offer.drain(300)
        if trace_dir:
            lag.cancel()
            with (Path(trace_dir) / "runs.tsv").open("w") as fh:
                fh.writelines(f"{t:.3f}\t{ms:.1f}\t{int(three)}\n" for t, ms, three in offer.trace or [])
        # The restarts: with the local state (a rolling restart), then wiped (a new machine).
        w.expected_exit = True  # type: ignore[attr-defined]  # read by the engine() watchdog
        restarts: dict[str, Any] = {}
        for label, wipe in (("with_local_state", False), ("wiped", True)):
            code = await loop.run_in_executor(None, w.stop)
            res.check(f"worker stopped cleanly before the restart {label} (SIGTERM)", code == 0, f"exit {code}")
            if wipe:
                for child in w.state_dir.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child)
            r0 = time.perf_counter()
            w.start()
            await wait_for(lambda: len(w.owned()) == eng.conn.num_partitions, 300, f"the worker restarted {label}")
            restarts[label] = {"owned_all_after_s": round(time.perf_counter() - r0, 2),
                               "records_restored": sum(r for _, r, _ in w.restores())}  # fmt: skip
        w.expected_exit = False  # type: ignore[attr-defined]
        after = await client.run_workflow("OneStep", "soak-after-restart", None)
    res.check("the engine kept up with the offered rate", not offer.fell_behind,
              f"over {BACKLOG_LIMIT_S:.0f}s of runs in flight ({offer.in_flight})")  # fmt: skip
    res.check("every run completed with the right result", not offer.wrong and offer.completed == offer.issued,
              f"{len(offer.wrong)} wrong of {offer.completed}/{offer.issued}: {offer.wrong[:3]}")  # fmt: skip
    res.check("a run completes after the restarts", after == "ok", repr(after))
    loaded = [x for x in samples[1:] if x.t <= seconds]  # the samples taken while the load ran
    stalls = [x.t for x in loaded if x.runs_per_s == 0]
    res.check("no sample window without a completed run (a stall)", not stalls, f"stalled at {stalls}")

    # The restore probe after one window is a process of its own replaying the whole changelog
    # (millions of records) on the same two cores: the windows it overlaps (and the next, which
    # drains what queued) are reported apart.
    def during_probe(x: Sample) -> bool:
        return bool(probe_span) and x.t - sample_s < probe_span[1] + sample_s and x.t > probe_span[0]

    p99s = [x.one_ms["p99"] for x in loaded if x.one_ms.get("n") and not during_probe(x)]
    worst_p99 = max(p99s) if p99s else None
    probe_p99s = [x.one_ms["p99"] for x in loaded if x.one_ms.get("n") and during_probe(x)]
    over = sum(1 for p in p99s if p > SPIKE_TARGET_MS)
    kept = ("state_keys", "runs_held", "state_bytes", "rss_mb", "state_memory_mb", "topic_bytes")
    series = {a: plateau(samples, a, retention, end) for a in kept}
    ratio_restore = (probes["after_soak"]["seconds"] / probes["after_one_window"]["seconds"]
                     if probes.get("after_one_window", {}).get("seconds") else None)  # fmt: skip
    one = percentiles(v for s in samples for v in ([s.one_ms["p50"]] if s.one_ms.get("n") else []))
    res.metrics = {"runs": offer.completed, "steps": offer.steps, "plateau": series, "restore_probes": probes,
                   "probe_span": probe_span,
                   "restore_ratio": ratio_restore, "restarts": restarts,
                   "samples": [s.__dict__ for s in samples]}  # fmt: skip
    for name, label in (("state_keys", "live state keys (RocksDB's estimate)"),
                        ("runs_held", "runs held (the run indexes' counts, exact)"), ("state_bytes", "RocksDB bytes"),
                        ("rss_mb", "worker RSS")):  # fmt: skip
        p = series[name]
        res.rows.append(
            Row(
                f"{label}: growth over the last half / over the first window",
                None if p is None else round(p["ratio"], 3),
                "x",
                f"< {PLATEAU_TARGET:g}",
                None if p is None else p["ratio"] < PLATEAU_TARGET,
            )
        )
    tp = series["topic_bytes"]
    rates = [x.runs_per_s for x in loaded]
    res.rows += [
        Row(f"runs started / completed (closed loop, {CLOSED_IN_FLIGHT} in flight)" if closed else
            f"runs offered / completed ({rate:,} runs/s, "
            + ("fixed by GRCTL_BENCH_SOAK_RATE)" if sustainable is None
               else f"{OFFERED_FRACTION:.0%} of {sustainable:,.0f} sustained)"),
            f"{offer.issued:,} / {offer.completed:,}", "runs"),
        Row("runs/s per sample: lowest / mean", f"{min(rates, default=0):,.0f} / "
            f"{statistics.fmean(rates) if rates else 0:,.0f}", "runs/s"),
        Row("1-step run latency p99: worst sample (outside the restore probe's windows)", worst_p99, "ms",
            None if closed else f"≤ {SPIKE_TARGET_MS:g} ms",
            None if closed or worst_p99 is None else worst_p99 <= SPIKE_TARGET_MS),
        Row(f"samples with a 1-step p99 over {SPIKE_TARGET_MS:g} ms (outside the probe) / all", f"{over} / {len(p99s)}",
            ""),
        Row("1-step run latency p99: worst sample during the restore probe after one window "
            f"(t = {probe_span[0]:.0f}-{probe_span[1]:.0f} s)" if probe_span else
            "1-step run latency p99 during the restore probe", max(probe_p99s) if probe_p99s else None, "ms"),
        Row("state topic on disk: growth over the last half / over the first window",
            None if tp is None else round(tp["ratio"], 3), "x"),
        Row(f"RocksDB memory in use (budget {SOAK_STATE_MEMORY_MB} MiB): growth over the last half / first window",
            None if series["state_memory_mb"] is None else round(series["state_memory_mb"]["ratio"], 3), "x"),
        Row("restore from scratch after the soak / after one window",
            None if ratio_restore is None else round(ratio_restore, 2), "x", f"≤ {RESTORE_RATIO_TARGET:g}",
            None if ratio_restore is None else ratio_restore <= RESTORE_RATIO_TARGET),
        Row("restore from scratch: after one window / after the soak",
            " / ".join(f"{probes[k]['records']:,} rec in {probes[k]['seconds']:.2f} s"
                       for k in ("after_one_window", "after_soak") if k in probes), ""),
        Row("worker restart: with its local state / wiped (owns every partition after)",
            " / ".join(f"{restarts[k]['owned_all_after_s']:.1f} s" for k in ("with_local_state", "wiped")), ""),
        Row("1-step run latency (start -> result), median of the samples' p50", one.get("p50"), "ms"),
        Row("benchmark client CPU (the load generator, all runs)",
            statistics.fmean([s.client_cores for s in samples if s.client_cores is not None] or [0.0]), "cores"),
    ]  # fmt: skip
    res.notes.append(f"state topic configs for the soak: {topic_cfg}")
    return res


def plot(samples: list[dict[str, Any]], path: Path, probe_span: list[float] | None = None) -> Path | None:
    """The soak's samples over time, one panel per measure (the restore probe's span shaded)."""
    if not samples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    panels: list[tuple[str, list[tuple[str, list[Any]]]]] = [
        ("RocksDB live keys", [("keys", [s["state_keys"] for s in samples]),
                               ("runs held", [s["runs_held"] for s in samples])]),
        ("bytes (MiB)", [("RocksDB", [_mib(s["state_bytes"]) for s in samples]),
                         ("state topic on disk", [_mib(s["topic_bytes"]) for s in samples])]),
        ("worker memory (MiB)", [("RSS", [s["rss_mb"] for s in samples]),
                                 ("RocksDB budget in use", [s.get("state_memory_mb") for s in samples])]),
        ("client CPU (cores)", [("load generator", [s["client_cores"] for s in samples])]),
        ("run latency (ms)", [("1-step p50", [s["one_ms"].get("p50") for s in samples]),
                              ("1-step p99", [s["one_ms"].get("p99") for s in samples]),
                              ("3-step p99", [s["three_ms"].get("p99") for s in samples])]),
        ("throughput", [("steps/s", [s["steps_per_s"] for s in samples]),
                        ("runs/s", [s["runs_per_s"] for s in samples])]),
    ]  # fmt: skip
    fig, axes = plt.subplots(3, 2, figsize=(12, 10), sharex=True)
    for ax, (title, lines) in zip(axes.flat, panels, strict=True):
        for label, values in lines:
            ax.plot(t, [float("nan") if v is None else v for v in values], label=label)
        if probe_span:
            ax.axvspan(probe_span[0], probe_span[1], color="tab:gray", alpha=0.2, label="restore probe")
        if title == "run latency (ms)":
            ax.axhline(SPIKE_TARGET_MS, color="tab:red", linestyle="--", linewidth=0.8)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("seconds into the soak")
    fig.suptitle("grctl soak: open-loop load with a short retention")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _mib(v: float | None) -> float | None:
    return None if v is None else v / 2**20


# --------------------------------------------------------------------------- listing


async def listing(bench: Bench) -> ScenarioResult:
    """`list --status running --limit 50` with a million runs retained."""
    from benchmarks.scenarios import engine

    res = ScenarioResult("listing")
    ended, running, conc = bench.size(1_000_000, 20_000), 300, 2000
    res.params = {"ended_runs": ended, "running_runs": running, "limit": 50}
    loop = asyncio.get_running_loop()
    port = free_port()
    async with engine(bench, "listing", env={"GRCTL_BENCH_METRICS_PORT": str(port)}) as eng:
        client, w = eng.client, eng.workers[0]
        task = bench.task(f"listing: {ended:,} ended runs", ended)
        t0 = time.perf_counter()
        specs = [("OneStep", f"done-{i}", None) for i in range(ended)]
        outs: list[Any] = []
        for lo in range(0, ended, 100_000):  # in slices: the result lists stay small
            chunk, _ = await run_many(client, specs[lo : lo + 100_000], conc, lambda: bench.progress.advance(task))
            outs += [o for o in chunk if o != "ok"][:10]
        fill_s = time.perf_counter() - t0
        res.check("every ended run completed", not outs, f"e.g. {outs[:3]}")
        for i in range(running):
            await client.start_workflow("FanIn", f"open-{i}", {"expected": 1})
        counted = await client.list_workflows(status="running", limit=1, counts=True)
        running_now = sum((counted.counts or {}).get("running", {}).values())
        # The index is kept with the transition: once the counts say so, every run is listed.
        deadline = time.monotonic() + 60
        while running_now < running and time.monotonic() < deadline:
            counted = await client.list_workflows(status="running", limit=1, counts=True)
            running_now = sum((counted.counts or {}).get("running", {}).values())
        counts = counted.counts or {}
        res.check("the counts say every run", sum(counts.get("completed", {}).values()) >= ended
                  and running_now == running, f"{counts}")  # fmt: skip

        async def timed(**kw: Any) -> tuple[float, Any]:
            t = time.perf_counter()
            page = await client.list_workflows(**kw)
            return (time.perf_counter() - t) * 1000, page

        lat: list[float] = []
        pages = []
        for _ in range(30):
            ms, page = await timed(status="running", limit=50)
            lat.append(ms)
            pages.append(page)
        first = pages[-1]
        res.check("a page holds 50 running runs, newest first, and a token for more",
                  len(first.runs) == 50 and all(r.status == "running" for r in first.runs)
                  and first.next_page_token is not None and not first.unavailable_partitions
                  and [r.wf_id for r in first.runs] == [f"open-{i}" for i in range(running - 1, running - 51, -1)],
                  f"{[r.wf_id for r in first.runs][:5]} ...")  # fmt: skip
        done_lat = [(await timed(status="completed", limit=50))[0] for _ in range(10)]
        count_lat = [(await timed(status="running", limit=50, counts=True))[0] for _ in range(10)]
        cli_ms: list[float] = []
        cli_out = ""
        for _ in range(3):
            t = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "grctl", "--servers", bench.servers, "--namespace", eng.conn.namespace,
                "workflow", "list", "--status", "running", "--limit", "50", "--json",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            cli_ms.append((time.perf_counter() - t) * 1000)
            cli_out = out.decode() if proc.returncode == 0 else err.decode()
        try:
            cli_runs = len(json.loads(cli_out)["runs"])
        except (ValueError, KeyError):
            cli_runs = -1
        res.check("the CLI lists 50 running runs", cli_runs == 50, cli_out[-500:])
        held = await loop.run_in_executor(None, scrape, port)
        rss = w.rss_mb()
    keys = None if held is None else held["grctl_state_keys"]
    api = percentiles(lat)
    res.metrics = {"fill_seconds": round(fill_s, 1), "fill_runs_per_s": round(ended / fill_s),
                   "list_running_ms": api, "list_completed_ms": percentiles(done_lat),
                   "list_running_with_counts_ms": percentiles(count_lat), "cli_wall_ms": percentiles(cli_ms),
                   "worker_rss_mb": round(rss, 1), "counts": counts, "state_keys": keys}  # fmt: skip
    res.rows += [
        Row(f"list --status running --limit 50 ({ended:,} runs retained), p50 / p99",
            f"{api['p50']:.1f} / {api['p99']:.1f}", "ms", f"< {LIST_TARGET_MS:g} ms", api["p99"] < LIST_TARGET_MS),
        Row("list --status completed --limit 50, p50", res.metrics["list_completed_ms"]["p50"], "ms"),
        Row("the same with counts by status and type, p50", res.metrics["list_running_with_counts_ms"]["p50"], "ms"),
        Row("the CLI command, whole process (Python start included), p50", res.metrics["cli_wall_ms"]["p50"], "ms"),
        Row(f"worker RSS with {ended:,} runs retained", round(rss), "MiB"),
    ]  # fmt: skip
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="time a restore of a namespace's whole changelog into empty stores")
    p.add_argument("--servers", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--dir", type=Path, required=True)
    args = ap.parse_args(argv)
    print(json.dumps(probe(args.servers, args.namespace, args.dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
