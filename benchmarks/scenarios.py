"""The scenarios: the raw Kafka baseline, then the engine, each checking its own results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks import workflows as wf
from benchmarks.baseline import CEILING, TRANSACTIONAL, VARIANTS, run_variant
from benchmarks.harness import (
    Bench,
    Row,
    ScenarioResult,
    WorkerProc,
    end_offsets,
    gather_limited,
    namespace,
    percentiles,
    run_many,
    start_workers,
    stop_workers,
    wait_for,
    warm_up,
)
from benchmarks.light_client import client_cpu
from benchmarks.purge import purge, timer_burst
from benchmarks.rebalance import join
from benchmarks.schedules import schedules
from benchmarks.soak import listing, soak
from grctl import Client, Connection, WorkflowHandle
from grctl.kafka.partitioner import partition_for

Scenario = Callable[[Bench], Awaitable[ScenarioResult]]

STEPS = 10
LATENCY_P50_MS = 7.0
LATENCY_P99_MS = 25.0
RATIO_TARGET = 0.8
PARTITION_RATIO_TARGET = 0.9  # 1,000 runs in flight
RESTORE_TARGET = 200_000
RSS_TARGET_MB = 300.0
RSS_RUNS = 100_000


# --------------------------------------------------------------------------- engine fixture


@dataclass
class Engine:
    conn: Connection
    client: Client
    workers: list[WorkerProc]
    ready_s: float


@contextlib.asynccontextmanager
async def engine(
    bench: Bench,
    label: str,
    partitions: int = 12,
    workers: int = 1,
    env: dict[str, str] | None = None,
    prepare: Callable[[Connection], None] | None = None,
    processes: int = 1,
    python: str | None = None,
) -> AsyncIterator[Engine]:
    """A namespace, `workers` workers owning all its partitions (each `processes` worker processes
    under grctl's supervisor if more than 1), a warm client.

    A worker that dies while the scenario runs cancels the scenario (it fails with the
    worker's log tail) instead of leaving it waiting for results that never come.
    """
    loop = asyncio.get_running_loop()
    async with namespace(bench, label, partitions) as conn:
        if prepare is not None:  # settings and topic configs the workers must find at their start
            await loop.run_in_executor(None, prepare, conn)
        procs, ready_s = await start_workers(bench, conn, workers, env=env, processes=processes, python=python)
        client = Client(conn)
        main = asyncio.current_task()
        dead: list[WorkerProc] = []
        expected_stop = False

        async def watch() -> None:
            while True:
                await asyncio.sleep(1.0)
                for w in procs:
                    if not w.alive() and not getattr(w, "expected_exit", False) and not expected_stop:
                        dead.append(w)
                        if main is not None:
                            main.cancel()
                        return

        watcher = asyncio.create_task(watch())
        try:
            await warm_up(client, conn)
            yield Engine(conn, client, procs, ready_s)
        except asyncio.CancelledError:
            if dead:
                w = dead[0]
                if main is not None:
                    main.uncancel()
                code = w.proc and w.proc.returncode
                raise RuntimeError(f"worker {w.name} died (exit {code}):\n{w.log_text()[-3000:]}") from None
            raise
        finally:
            expected_stop = True
            watcher.cancel()
            await client.close()
            await loop.run_in_executor(None, stop_workers, procs)


def _exc_summary(values: list[Any]) -> str:
    errs = [v for v in values if isinstance(v, BaseException)]
    return f"{len(errs)} raised, e.g. {errs[0]!r}" if errs else ""


def _wrong(values: list[Any], expected: Callable[[int], Any]) -> list[int]:
    return [i for i, v in enumerate(values) if v != expected(i)]


def _detail(values: list[Any], expected: Callable[[int], Any]) -> str:
    bad = _wrong(values, expected)
    if not bad:
        return ""
    i = bad[0]
    return (
        f"{len(bad)}/{len(values)} wrong; run {i}: got {values[i]!r}, expected {expected(i)!r}. {_exc_summary(values)}"
    )


# --------------------------------------------------------------------------- baseline


async def baseline(bench: Bench) -> ScenarioResult:
    """The raw consume-transform-produce loops (see benchmarks/baseline.py); confluent-thread-2 is the ceiling."""
    res = ScenarioResult("baseline")
    runs, conc = bench.size(20_000, 1000), bench.size(1000, 500)
    res.params = {"runs": runs, "steps_per_run": STEPS, "concurrent_runs": conc, "partitions": 12,
                  "records_out_per_step": "2 history + 2 state (+1 history and 1 start per run end); "
                                          f"{CEILING}: 2 history + 1 state", "ceiling": CEILING}  # fmt: skip
    rates: dict[str, float] = {}
    # Warm the broker up first (a JVM runs its first minute interpreted and compiling): on a
    # freshly started broker the first loop measured 16k records/s against 21-26k warm, which
    # would flatter every ratio to the ceiling.
    warm_runs = bench.size(5_000, 500)
    warm_task = bench.task("baseline warm-up (not measured)", warm_runs * STEPS)
    async with namespace(bench, "warm", 12) as conn:
        warm = await run_variant(CEILING, conn, warm_runs, STEPS, conc, lambda n: bench.progress.advance(warm_task, n))
    res.metrics["warm_up_records_in_per_s"] = round(warm.measured_records / warm.seconds) if warm.seconds else None
    for variant in VARIANTS:
        task = bench.task(f"baseline {variant}", runs * STEPS)
        try:
            await bench.settle()
            async with namespace(bench, "base", 12) as conn:
                broker0 = bench.broker_cpu_seconds()
                st = await run_variant(variant, conn, runs, STEPS, conc, lambda n, t=task: bench.progress.advance(t, n))
                broker1 = bench.broker_cpu_seconds()
        except Exception as exc:
            res.check(f"{variant}: ran", False, repr(exc))
            continue
        rate = st.measured_records / st.seconds if st.seconds else 0.0
        rates[variant] = rate
        txn = percentiles(st.txn_ms)
        res.metrics[variant] = {
            "records_in_per_s": round(rate),
            "records_out_per_s": round(rate * st.records_out / max(1, st.records_in)),
            "seconds": round(st.seconds, 2),
            "transactions": st.txns,
            "records_in_per_txn": round(st.records_in / st.txns, 1) if st.txns else None,
            "txn_ms": txn,
            "cpu_us_per_record_in": round(st.cpu_seconds / max(1, st.measured_records) * 1e6, 1),
            "cpu_utilisation": round(st.cpu_seconds / st.seconds, 2) if st.seconds else None,
            # the whole variant (connect and warm-up included), per record in
            "broker_cpu_us_per_record_in": None
            if broker0 is None or broker1 is None
            else round((broker1 - broker0) / max(1, st.records_in) * 1e6, 1),
        }
        if st.phases_ms:
            res.metrics[variant]["txn_phases_ms"] = {
                name: percentiles(ph[i] for ph in st.phases_ms)
                for i, name in enumerate(("produce", "send_offsets", "commit"))
            }
        res.check(
            f"{variant}: every run completed all its steps",
            st.runs_done == runs and st.records_in == runs * STEPS,
            f"{st.runs_done}/{runs} runs, {st.records_in}/{runs * STEPS} steps",
        )
        res.check(f"{variant}: no step applied twice", st.duplicates == 0, f"{st.duplicates} duplicates")
        label = "transactional" if variant in TRANSACTIONAL else "no transactions"
        label += ", 2 steps of a run per transaction: the raw loop, ceiling" if variant == CEILING else ""
        res.rows.append(Row(f"{variant} ({label}): records in/s", round(rate), "rec/s"))
        broker_cpu = res.metrics[variant]["broker_cpu_us_per_record_in"]
        res.rows.append(
            Row(
                f"{variant}: CPU per record in, loop process / broker",
                f"{res.metrics[variant]['cpu_us_per_record_in']} / {'-' if broker_cpu is None else broker_cpu}",
                "µs",
            )
        )
    # One raw loop is the ceiling of every ratio (the pairs and the partition scenario run it too).
    if CEILING in rates:
        res.metrics["ceiling_variant"] = CEILING
        res.metrics["ceiling_records_in_per_s"] = round(rates[CEILING])
        res.rows.append(Row("ceiling (the raw loop of every ratio)", round(rates[CEILING]), "rec/s", CEILING))
        if "confluent-no-txn" in rates:
            cost = rates["confluent-thread"] / rates["confluent-no-txn"] if "confluent-thread" in rates else None
            if cost is not None:
                res.metrics["txn_over_no_txn"] = round(cost, 3)
                res.rows.append(Row("transactional / non-transactional (confluent-thread / confluent-no-txn)",
                                    round(cost, 2), "x"))  # fmt: skip
    return res


# --------------------------------------------------------------------------- 1-step latency and runs/s


async def latency(bench: Bench) -> ScenarioResult:
    """1-step runs: start→complete latency one at a time (light load), then runs/s under load.

    The light-load latency is measured again on workers that start a step only after the
    commit that dispatched it (`pipeline_steps=False`), in the same run: what pipelining gains.
    """
    res = ScenarioResult("latency")
    n_seq, n_load, conc = bench.size(300, 60), bench.size(5000, 1000), bench.size(1000, 500)
    res.params = {"sequential_runs": n_seq, "load_runs": n_load, "concurrent_runs": conc, "partitions": 12}
    async with engine(bench, "lat") as eng:
        lat, outs = await _sequential(bench, eng, n_seq, "1-step latency (sequential)")
        res.check("sequential runs returned 'ok'", not _wrong(outs, lambda i: "ok"), _detail(outs, lambda i: "ok"))
        task = bench.task("1-step runs under load", n_load)
        specs = [("OneStep", f"load-{i}", None) for i in range(n_load)]
        t0 = time.perf_counter()
        outs, lat_load = await run_many(eng.client, specs, conc, lambda: bench.progress.advance(task))
        elapsed = time.perf_counter() - t0
        res.check("loaded runs returned 'ok'", not _wrong(outs, lambda i: "ok"), _detail(outs, lambda i: "ok"))
    async with engine(bench, "latnp", env={"GRCTL_BENCH_PIPELINE_STEPS": "0"}) as eng_np:
        lat_np, outs = await _sequential(bench, eng_np, n_seq, "1-step latency, steps after commit")
        res.check("sequential runs (steps after commit) returned 'ok'", not _wrong(outs, lambda i: "ok"),
                  _detail(outs, lambda i: "ok"))  # fmt: skip
    p, pl, pn = percentiles(lat), percentiles(lat_load), percentiles(lat_np)
    rate = n_load / elapsed
    bench.scratch["one_step_runs_per_s"] = rate  # the children scenario compares with it
    res.metrics = {
        "latency_ms": p,
        "latency_samples_ms": [round(x, 2) for x in lat],
        "latency_steps_after_commit_ms": pn,
        "runs_per_s": round(rate, 1),
        "latency_under_load_ms": pl,
        "worker_ready_s": round(eng.ready_s, 2),
    }
    res.rows += [
        Row("1-step latency p50 (light load)", p["p50"], "ms", f"≤ {LATENCY_P50_MS:g} ms", p["p50"] <= LATENCY_P50_MS),
        Row("1-step latency p95 (light load)", p["p95"], "ms"),
        Row("1-step latency p99 (light load)", p["p99"], "ms", f"≤ {LATENCY_P99_MS:g} ms", p["p99"] <= LATENCY_P99_MS),
        Row("1-step latency p50 / p99, steps only after their dispatch's commit (same run)",
            f"{pn['p50']:.1f} / {pn['p99']:.1f}", "ms"),
        Row(f"1-step runs/s ({conc} in flight)", round(rate), "runs/s", ratio=bench.ratio(rate)),
        Row("1-step latency p50 / p99 under load", f"{pl['p50']:.0f} / {pl['p99']:.0f}", "ms"),
    ]  # fmt: skip
    return res


async def _sequential(bench: Bench, eng: Engine, n: int, label: str) -> tuple[list[float], list[Any]]:
    """`n` 1-step runs one after the other: their start→result latencies (ms) and results."""
    task = bench.task(label, n)
    lat: list[float] = []
    outs: list[Any] = []
    for i in range(n):
        t0 = time.perf_counter()
        try:
            outs.append(await eng.client.run_workflow("OneStep", f"lat-{i}", None))
        except Exception as exc:
            outs.append(exc)
        lat.append((time.perf_counter() - t0) * 1000)
        bench.progress.advance(task)
    return lat, outs


# --------------------------------------------------------------------------- 10-step chain


async def chain_run(
    bench: Bench,
    res: ScenarioResult,
    label: str,
    *,
    partitions: int,
    workers: int,
    runs: int,
    conc: int,
    env: dict[str, str] | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """`runs` 10-step chains, `conc` in flight; checks every result; returns the metrics."""
    async with engine(bench, label, partitions, workers, env=env, processes=processes) as eng:
        before = await asyncio.get_running_loop().run_in_executor(None, end_offsets, eng.conn)
        task = bench.task(f"{label}: {runs} x {STEPS}-step chains", runs)
        specs = [("Chain10", f"chain-{i}", {"steps": STEPS}) for i in range(runs)]
        spy = start_profiler(bench, eng.workers[0]) if bench.profile is not None and label == "chain" else None
        await bench.settle()
        cpu0 = sum(w.cpu_seconds() for w in eng.workers)
        broker0 = bench.broker_cpu_seconds()
        t0 = time.perf_counter()
        outs, lat = await run_many(eng.client, specs, conc, lambda: bench.progress.advance(task))
        elapsed = time.perf_counter() - t0
        cpu = sum(w.cpu_seconds() for w in eng.workers) - cpu0
        broker1 = bench.broker_cpu_seconds()
        if spy is not None:
            stop_profiler(spy)
        txns = eng.workers[0].transactions()
        after = await asyncio.get_running_loop().run_in_executor(None, end_offsets, eng.conn)
        rss = eng.workers[0].rss_mb()
    res.check(f"{label}: every chain completed with 1", not _wrong(outs, lambda i: 1), _detail(outs, lambda i: 1))
    steps = runs * STEPS
    return {
        "partitions": partitions,
        "workers": workers,
        "processes_per_worker": processes,
        "runs": runs,
        "concurrent_runs": conc,
        "seconds": round(elapsed, 2),
        "steps_per_s": round(steps / elapsed, 1),
        "runs_per_s": round(runs / elapsed, 1),
        "run_latency_ms": percentiles(lat),
        "worker_cpu_us_per_step": round(cpu / steps * 1e6, 1),
        "worker_cpu_utilisation": round(cpu / elapsed, 2),
        "broker_cpu_us_per_step": None
        if broker0 is None or broker1 is None
        else round((broker1 - broker0) / steps * 1e6, 1),
        "offsets_per_step": {k: round((after[k] - before[k]) / steps, 2) for k in after},
        "worker_ready_s": round(eng.ready_s, 2),
        "worker_rss_mb": round(rss, 1),
        **({"worker_transactions": txns} if txns else {}),
    }


async def chain(bench: Bench) -> ScenarioResult:
    """10-step chains with 1,000 runs in flight: steps/s against the baseline's records-in/s."""
    res = ScenarioResult("chain")
    runs, conc = bench.size(10_000, 1000), bench.size(1000, 500)
    res.params = {"runs": runs, "steps_per_run": STEPS, "concurrent_runs": conc, "partitions": 12, "workers": 1}
    m = await chain_run(bench, res, "chain", partitions=12, workers=1, runs=runs, conc=conc)
    res.metrics = m
    ratio = bench.ratio(m["steps_per_s"])
    # One ceiling run against one chain run moves with the machine (ceilings of 18.6k-30.2k
    # records/s on the same day): interleaved pairs, each raw loop right before its chain,
    # give the ratio the target is judged on.
    # Each pair also runs the chain on workers that start a step only after the commit that
    # dispatched it (no pipelining): what pipelining gains, in the same run.
    pairs: list[dict[str, Any]] = []
    for i in range(bench.size(3, 0)):
        raw = await raw_loop(bench, 12, runs // 2, conc, f"pair{i + 1}")
        mp = await chain_run(bench, res, f"pair{i + 1}", partitions=12, workers=1, runs=runs // 2, conc=conc)
        mn = await chain_run(bench, res, f"pair{i + 1}-after-commit", partitions=12, workers=1, runs=runs // 2,
                             conc=conc, env={"GRCTL_BENCH_PIPELINE_STEPS": "0"})  # fmt: skip
        pairs.append({
            "raw_loop_records_in_per_s": round(raw),
            "chain_steps_per_s": mp["steps_per_s"],
            "ratio": round(mp["steps_per_s"] / raw, 3) if raw else 0.0,
            "worker_cpu_us_per_step": mp["worker_cpu_us_per_step"],
            "chain_steps_after_commit_per_s": mn["steps_per_s"],
            "ratio_after_commit": round(mn["steps_per_s"] / raw, 3) if raw else 0.0,
            "worker_cpu_us_per_step_after_commit": mn["worker_cpu_us_per_step"],
        })  # fmt: skip
    m["pairs"] = pairs
    paired = sorted(pr["ratio"] for pr in pairs)
    median = paired[len(paired) // 2] if paired else None
    m["paired_ratio_median"] = median
    unpiped = sorted(pr["ratio_after_commit"] for pr in pairs)
    m["paired_ratio_after_commit_median"] = unpiped[len(unpiped) // 2] if unpiped else None
    # The target is judged on the paired median when there are pairs, else on the ceiling ratio.
    judged_here = median is None and ratio is not None
    res.rows += [
        Row(f"10-step chain steps/s ({conc} runs in flight)", m["steps_per_s"], "steps/s",
            f"≥ {RATIO_TARGET}x baseline" if median is None else "",
            ratio >= RATIO_TARGET if judged_here and ratio is not None else None, ratio),
        Row("chain run latency p50 / p99 (start→complete, 10 steps)",
            f"{m['run_latency_ms']['p50']:.0f} / {m['run_latency_ms']['p99']:.0f}", "ms"),
        Row("worker CPU per step (user + system, all threads)", m["worker_cpu_us_per_step"], "µs"),
        Row("broker CPU per step (local broker process)", m["broker_cpu_us_per_step"], "µs"),
        Row("offsets per step (directives / history / state, incl. txn markers)",
            " / ".join(f"{m['offsets_per_step'][k]:.2f}" for k in ("directives", "history", "state")), ""),
    ]  # fmt: skip
    if median is not None:
        res.rows += [
            Row(f"chain / raw loop, {len(pairs)} interleaved pairs (raw loop right before each chain)",
                " / ".join(f"{pr['ratio']:.2f}" for pr in pairs), "x"),
            Row("chain / raw loop, median of the pairs", median, "x", f"≥ {RATIO_TARGET}x", median >= RATIO_TARGET),
            Row("the same, steps only after their dispatch's commit (no pipelining), median",
                m["paired_ratio_after_commit_median"], "x"),
            Row("worker CPU per step in the pairs, pipelined / after commit",
                " / ".join(f"{pr['worker_cpu_us_per_step']:.0f}|{pr['worker_cpu_us_per_step_after_commit']:.0f}"
                           for pr in pairs), "µs"),
        ]  # fmt: skip
    if ratio is None:
        res.notes.append("no baseline in this run: the ratio needs `--scenario baseline`")
    return res


# --------------------------------------------------------------------------- store-heavy


async def store(bench: Bench) -> ScenarioResult:
    """Steps that read and write 10 keys x 1 KiB each."""
    res = ScenarioResult("store")
    runs, conc, steps = bench.size(1000, 200), bench.size(500, 200), bench.size(5, 3)
    res.params = {"runs": runs, "verifying_steps_per_run": steps, "keys_per_step": wf.STORE_KEYS,
                  "value_bytes": wf.STORE_VALUE_BYTES, "concurrent_runs": conc}  # fmt: skip
    async with engine(bench, "store") as eng:
        task = bench.task(f"store-heavy: {runs} runs", runs)
        specs = [("StoreHeavy", f"store-{i}", {"steps": steps}) for i in range(runs)]
        t0 = time.perf_counter()
        outs, _ = await run_many(eng.client, specs, conc, lambda: bench.progress.advance(task))
        elapsed = time.perf_counter() - t0
    expected = wf.STORE_KEYS * steps
    res.check(
        "every run verified each value it read", not _wrong(outs, lambda i: expected), _detail(outs, lambda i: expected)
    )
    total_steps = runs * (steps + 1)
    rate = total_steps / elapsed
    mib = rate * wf.STORE_KEYS * wf.STORE_VALUE_BYTES / 2**20
    res.metrics = {"seconds": round(elapsed, 2), "steps_per_s": round(rate, 1)}
    res.metrics["store_mib_written_per_s"] = round(mib, 2)
    res.rows += [
        Row("store-heavy steps/s (10 keys x 1 KiB read + written)", round(rate), "steps/s", ratio=bench.ratio(rate)),
        Row("store values written", res.metrics["store_mib_written_per_s"], "MiB/s"),
    ]
    return res


# --------------------------------------------------------------------------- tasks with retries


async def tasks(bench: Bench) -> ScenarioResult:
    """Each run calls 3 tasks that fail twice before succeeding (RetryPolicy, 1 ms back-off)."""
    res = ScenarioResult("tasks")
    runs, conc, calls, fails = bench.size(2000, 200), bench.size(1000, 200), 3, 2
    res.params = {"runs": runs, "task_calls_per_run": calls, "failures_per_call": fails, "concurrent_runs": conc}
    async with engine(bench, "tasks") as eng:
        task = bench.task(f"tasks with retries: {runs} runs", runs)
        specs = [("TaskRetry", f"task-{i}", {"calls": calls, "fails": fails}) for i in range(runs)]
        t0 = time.perf_counter()
        outs, lat = await run_many(eng.client, specs, conc, lambda: bench.progress.advance(task))
        elapsed = time.perf_counter() - t0

    def expected(i: int) -> list[str]:
        return [f"task-{i}/{c}:ok" for c in range(calls)]

    res.check("every run returned its task results", not _wrong(outs, expected), _detail(outs, expected))
    attempts = runs * calls * (fails + 1)
    res.metrics = {"seconds": round(elapsed, 2), "runs_per_s": round(runs / elapsed, 1),
                   "task_attempts_per_s": round(attempts / elapsed, 1), "run_latency_ms": percentiles(lat)}  # fmt: skip
    res.rows += [
        Row(f"runs/s with {calls} tasks x {fails + 1} attempts each", round(runs / elapsed), "runs/s"),
        Row("task attempts/s (each journaled)", round(attempts / elapsed), "attempts/s"),
    ]
    return res


# --------------------------------------------------------------------------- events fan-in


async def events(bench: Bench) -> ScenarioResult:
    """Many concurrent `handle.send` into each waiting run; the handler sums what it got."""
    res = ScenarioResult("events")
    runs, per_run, conc = bench.size(200, 40), bench.size(50, 10), 1000
    res.params = {"runs": runs, "events_per_run": per_run, "concurrent_sends": conc}
    async with engine(bench, "events") as eng:
        client = eng.client
        handles = await gather_limited(
            (client.start_workflow("FanIn", f"fan-{i}", {"expected": per_run}) for i in range(runs)), conc
        )
        ok = res.check("every run started", all(isinstance(h, WorkflowHandle) for h in handles), _exc_summary(handles))
        if not ok:
            return res
        task = bench.task(f"events: {runs} runs x {per_run} sends", runs * per_run)

        async def send(h: WorkflowHandle, n: int) -> None:
            await h.send("ping", {"n": n})
            bench.progress.advance(task)

        t0 = time.perf_counter()
        sent = await gather_limited((send(h, n) for n in range(per_run) for h in handles), conc)
        t_sent = time.perf_counter() - t0
        outs = await gather_limited((h.result(timeout=300) for h in handles), len(handles))
        elapsed = time.perf_counter() - t0
    total = runs * per_run
    expected = per_run * (per_run - 1) // 2
    res.check("every send was accepted", not any(isinstance(s, BaseException) for s in sent), _exc_summary(sent))
    res.check(
        "every run summed all its events", not _wrong(outs, lambda i: expected), _detail(outs, lambda i: expected)
    )
    rate = total / elapsed
    res.metrics = {"seconds": round(elapsed, 2), "sends_accepted_s": round(t_sent, 2), "events_per_s": round(rate, 1),
                   "steps_per_s": round((total + runs) / elapsed, 1)}  # fmt: skip
    res.rows += [
        Row(f"events handled/s ({per_run} concurrent senders per run)", round(rate), "events/s",
            ratio=bench.ratio((total + runs) / elapsed)),
    ]  # fmt: skip
    return res


# --------------------------------------------------------------------------- timers and RSS


async def _all_waiting(client: Client, last_per_partition: dict[int, str], timeout: float) -> None:
    """Wait until the last run started on each partition waits (runs of a partition start in order)."""
    pending = dict(last_per_partition)
    deadline = time.monotonic() + timeout
    while pending:
        for p, wf_id in list(pending.items()):
            info = await client.describe(wf_id)
            if info.waiting_for_event or info.status.is_terminal:
                del pending[p]
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs still not waiting after {timeout:.0f}s: {sorted(pending.values())[:5]}")
            await asyncio.sleep(0.5)


async def timers(bench: Bench) -> ScenarioResult:
    """Many runs wait with a timeout; a burst of chains runs meanwhile; then the timers fire.

    Also the RSS figure: the worker's resident memory with every run waiting.
    """
    res = ScenarioResult("timers")
    n, burst_runs, conc = bench.size(RSS_RUNS, 5000), bench.size(2000, 300), 2000
    res.params = {"waiting_runs": n, "burst_chain_runs": burst_runs, "start_concurrency": conc}
    lat = bench.results.get("latency")
    est_rate = 0.4 * float(lat.metrics.get("runs_per_s", 0)) if lat is not None else 0.0
    est_rate = est_rate or 800.0
    budget_s = n / est_rate * 1.5 + burst_runs * STEPS / 2000 * 2 + 20
    async with engine(bench, "timers") as eng:
        w = eng.workers[0]
        client = eng.client
        rss_idle = w.rss_mb()
        fire_at = time.time() + budget_s
        fire_at_ms = int(fire_at * 1000)
        task = bench.task(f"timers: start {n} waiting runs", n)
        done_at: dict[int, float] = {}
        last_per_partition: dict[int, str] = {}

        async def start(i: int) -> WorkflowHandle:
            wf_id = f"tw-{i}"
            h = await client.start_workflow("TimerWait", wf_id, {"fire_at_ms": fire_at_ms})
            last_per_partition[partition_for(wf_id, eng.conn.num_partitions)] = wf_id
            h.future.add_done_callback(lambda _f, i=i: done_at.setdefault(i, time.time()))
            bench.progress.advance(task)
            return h

        t0 = time.perf_counter()
        handles = await gather_limited((start(i) for i in range(n)), conc)
        if not res.check("every timer run started", all(isinstance(h, WorkflowHandle) for h in handles),
                         _exc_summary(handles)):  # fmt: skip
            return res
        await _all_waiting(client, last_per_partition, timeout=max(60.0, budget_s))
        fill_s = time.perf_counter() - t0
        await asyncio.sleep(2.0)
        rss_full = w.rss_mb()
        slack_s = fire_at - time.time()
        # A burst of chains while every timer is pending.
        btask = bench.task(f"timers: burst of {burst_runs} chains", burst_runs)
        specs = [("Chain10", f"burst-{i}", {"steps": STEPS}) for i in range(burst_runs)]
        tb = time.perf_counter()
        bouts, _ = await run_many(client, specs, 1000, lambda: bench.progress.advance(btask))
        burst_s = time.perf_counter() - tb
        res.check("burst chains completed with 1", not _wrong(bouts, lambda i: 1), _detail(bouts, lambda i: 1))
        early = len(done_at)
        ftask = bench.task(f"timers: {n} firing", n)
        before = 0

        def progress() -> None:
            nonlocal before
            bench.progress.advance(ftask, len(done_at) - before)
            before = len(done_at)

        remaining = fire_at - time.time()
        outs: list[Any] = []
        collector = asyncio.ensure_future(gather_limited((h.result(timeout=remaining + 600) for h in handles), n))
        while not collector.done():
            progress()
            await asyncio.sleep(0.5)
        outs = collector.result()
        progress()
        rss_after = w.rss_mb()
    res.check("every timer fired its on_timeout step", not _wrong(outs, lambda i: "expired"),
              _detail(outs, lambda i: "expired"))  # fmt: skip
    too_early = sum(1 for t in done_at.values() if t < fire_at - 0.01)
    res.check("no timer fired before it was due", too_early == 0, f"{too_early} runs ended before the due time")
    if early:
        res.notes.append(f"{early} timer runs ended during the burst")
    if slack_s < 0:
        res.notes.append(f"the runs took {-slack_s:.0f}s longer to start than budgeted: timers fired during the burst")
    fired = sorted(done_at.values())
    drain_s = (fired[-1] - fire_at) if fired else 0.0
    lags = [(t - fire_at) * 1000 for t in fired]
    chain_res = bench.results.get("chain")
    chain_rate = chain_res.metrics.get("steps_per_s") if chain_res is not None else None
    burst_rate = burst_runs * STEPS / burst_s
    per_run_kib = (rss_full - rss_idle) * 1024 / n
    rss_100k = rss_idle + (rss_full - rss_idle) * RSS_RUNS / n
    res.metrics = {
        "fill_seconds": round(fill_s, 2),
        "fill_runs_per_s": round(n / fill_s, 1),
        "slack_before_due_s": round(slack_s, 1),
        "burst_steps_per_s": round(burst_rate, 1),
        "burst_vs_chain": round(burst_rate / chain_rate, 3) if chain_rate else None,
        "timers_fired_per_s": round(n / drain_s, 1) if drain_s > 0 else None,
        "fire_lag_ms": percentiles(lags),
        "fire_lag_samples_ms": [round(x) for x in lags[:: max(1, len(lags) // 2000)]],
        "rss_idle_mb": round(rss_idle, 1),
        "rss_waiting_mb": round(rss_full, 1),
        "rss_after_fired_mb": round(rss_after, 1),
        "rss_per_waiting_run_kib": round(per_run_kib, 2),
        "rss_100k_mb": round(rss_100k, 1),
        "rss_100k_extrapolated": n < RSS_RUNS,
    }
    rss_label = f"worker RSS with {n:,} waiting runs" + ("" if n >= RSS_RUNS else f" (→ {RSS_RUNS:,}: extrapolated)")
    res.rows += [
        Row(f"start {n:,} waiting runs (timer armed)", round(n / fill_s), "runs/s"),
        Row(f"chain steps/s with {n:,} timers pending", round(burst_rate), "steps/s", ratio=bench.ratio(burst_rate)),
        Row(f"timers fired/s ({n:,} due at once)", res.metrics["timers_fired_per_s"], "timers/s"),
        Row("timer fire lag p50 / p99 (due → run completed)",
            f"{res.metrics['fire_lag_ms'].get('p50', 0):.0f} / {res.metrics['fire_lag_ms'].get('p99', 0):.0f}", "ms"),
        Row(rss_label, round(rss_100k, 1), "MiB", f"≤ {RSS_TARGET_MB:g} MB", rss_100k <= RSS_TARGET_MB),
        Row("worker RSS idle / per waiting run", f"{rss_idle:.0f} MiB / {per_run_kib:.2f} KiB", ""),
    ]  # fmt: skip
    return res


# --------------------------------------------------------------------------- partitions, workers


#: The raw loop the chain's pairs and the partition scenario compare with: the ceiling of every
#: ratio (benchmarks/baseline.py `CEILING`).
PAIR_VARIANT = CEILING


async def raw_loop(bench: Bench, partitions: int, runs: int, conc: int, label: str) -> float:
    """Steps/s of the `PAIR_VARIANT` transactional loop on `partitions` partitions."""
    task = bench.task(f"{label}: raw loop, {partitions} partitions", runs * STEPS)
    async with namespace(bench, f"raw{partitions}", partitions) as conn:
        st = await run_variant(PAIR_VARIANT, conn, runs, STEPS, conc, lambda n: bench.progress.advance(task, n))
    if st.runs_done != runs or st.duplicates:
        raise RuntimeError(f"raw loop on {partitions} partitions: {st.runs_done}/{runs} runs, {st.duplicates} dups")
    phases = {
        name: percentiles(ph[i] for ph in st.phases_ms) for i, name in enumerate(("produce", "send_offsets", "commit"))
    }
    bench.scratch[f"raw{partitions}"] = {"txn_ms": percentiles(st.txn_ms), "txn_phases_ms": phases,
                                         "records_in_per_txn": round(st.records_in / max(1, st.txns), 1)}  # fmt: skip
    return st.measured_records / st.seconds if st.seconds else 0.0


async def partitions(bench: Bench) -> ScenarioResult:
    """The chain on 4 and on 64 partitions (one worker), and the raw loop on both for reference."""
    res = ScenarioResult("partitions")
    runs, conc = bench.size(3000, 1000), bench.size(1000, 500)
    res.params = {"runs": runs, "concurrent_runs": conc}
    m4 = await chain_run(bench, res, "p4", partitions=4, workers=1, runs=runs, conc=conc)
    m64 = await chain_run(bench, res, "p64", partitions=64, workers=1, runs=runs, conc=conc)
    raw4 = await raw_loop(bench, 4, runs, conc, "p4")
    raw64 = await raw_loop(bench, 64, runs, conc, "p64")
    ratio = m64["steps_per_s"] / m4["steps_per_s"]
    raw_ratio = raw64 / raw4 if raw4 else 0.0
    # Many runs in flight: every partition active in every transaction.
    wide, wide_conc = bench.size(10_000, 2_000), bench.size(10_000, 2_000)
    w4 = await chain_run(bench, res, "p4w", partitions=4, workers=1, runs=wide, conc=wide_conc)
    w64 = await chain_run(bench, res, "p64w", partitions=64, workers=1, runs=wide, conc=wide_conc)
    wide_ratio = w64["steps_per_s"] / w4["steps_per_s"]
    res.metrics = {"p4": m4, "p64": m64, "p64_over_p4": round(ratio, 3),
                   "p4_wide": w4, "p64_wide": w64, "p64_over_p4_wide": round(wide_ratio, 3),
                   "raw_loop_p4_records_in_per_s": round(raw4), "raw_loop_p64_records_in_per_s": round(raw64),
                   "raw_p64_over_p4": round(raw_ratio, 3),
                   "raw_loop_p4": bench.scratch.get("raw4"), "raw_loop_p64": bench.scratch.get("raw64")}  # fmt: skip
    res.rows += [
        Row("chain steps/s, 4 partitions", m4["steps_per_s"], "steps/s", ratio=round(m4["steps_per_s"] / raw4, 3)),
        Row("chain steps/s, 64 partitions", m64["steps_per_s"], "steps/s", ratio=round(m64["steps_per_s"] / raw64, 3)),
        Row("64 / 4 partitions", round(ratio, 2), "x", f"≥ {PARTITION_RATIO_TARGET}", ratio >= PARTITION_RATIO_TARGET),
        Row(f"raw loop ({PAIR_VARIANT}) steps/s, 4 / 64 partitions", f"{raw4:,.0f} / {raw64:,.0f}", "rec/s"),
        Row("raw loop 64 / 4 partitions", round(raw_ratio, 2), "x"),
        Row(f"chain steps/s with {wide_conc:,} runs in flight, 4 / 64 partitions",
            f"{w4['steps_per_s']:,.0f} / {w64['steps_per_s']:,.0f}", "steps/s"),
        Row(f"64 / 4 partitions, {wide_conc:,} runs in flight", round(wide_ratio, 2), "x", "≥ 0.6",
            wide_ratio >= 0.6),
        Row("worker ready (owns all partitions), 4 / 64 partitions",
            f"{m4['worker_ready_s']:.1f} / {m64['worker_ready_s']:.1f}", "s"),
    ]  # fmt: skip
    res.notes.append("the engine/baseline column compares with the raw loop on the same partition count")
    return res


async def workers(bench: Bench) -> ScenarioResult:
    """The chain with 1 and with 2 worker processes (12 partitions)."""
    res = ScenarioResult("workers")
    runs, conc = bench.size(3000, 1000), bench.size(1000, 500)
    res.params = {"runs": runs, "concurrent_runs": conc, "partitions": 12}
    m1 = await chain_run(bench, res, "w1", partitions=12, workers=1, runs=runs, conc=conc)
    m2 = await chain_run(bench, res, "w2", partitions=12, workers=2, runs=runs, conc=conc)
    ratio = m2["steps_per_s"] / m1["steps_per_s"]
    res.metrics = {"w1": m1, "w2": m2, "w2_over_w1": round(ratio, 3)}
    res.rows += [
        Row("chain steps/s, 1 worker process", m1["steps_per_s"], "steps/s", ratio=bench.ratio(m1["steps_per_s"])),
        Row("chain steps/s, 2 worker processes", m2["steps_per_s"], "steps/s", ratio=bench.ratio(m2["steps_per_s"])),
        Row("2 / 1 workers", round(ratio, 2), "x"),
    ]
    res.notes.append(
        "2 cores for the broker, the client and the workers: a second worker process can add at most what the "
        "broker and the client leave of them"
    )
    return res


# --------------------------------------------------------------------------- event loops and interpreters

#: GRCTL_BENCH_RUNTIMES: the worker runtimes the `runtimes` scenario compares, space-separated,
#: each `LOOP` (on the harness's interpreter) or `LOOP@PYTHON` (an interpreter with grctl
#: installed, e.g. build/venv313/bin/python); the first is the reference of the "vs first" ratios.
DEFAULT_RUNTIMES = "asyncio uvloop"


@dataclass(frozen=True)
class Runtime:
    loop: str
    python: str | None  # None: the harness's interpreter
    version: str

    @property
    def label(self) -> str:
        return f"Python {self.version}, {self.loop}"


def runtimes_from_env() -> list[Runtime]:
    """The runtimes GRCTL_BENCH_RUNTIMES names (see `DEFAULT_RUNTIMES`)."""
    out = []
    for spec in (os.environ.get("GRCTL_BENCH_RUNTIMES") or DEFAULT_RUNTIMES).split():
        loop, _, python = spec.partition("@")
        if loop not in ("asyncio", "uvloop"):
            raise ValueError(f"GRCTL_BENCH_RUNTIMES: {spec!r}: the loop is asyncio or uvloop")
        exe = python or sys.executable
        version = subprocess.run(
            [exe, "-c", "import platform, grctl; print(platform.python_version())"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        out.append(Runtime(loop, python or None, version))
    return out


async def runtimes(bench: Bench) -> ScenarioResult:
    """Worker runtimes (event loop, Python): chain and 1-step latency in interleaved rounds, each with the raw loop."""
    res = ScenarioResult("runtimes")
    rts = runtimes_from_env()
    rounds = int(os.environ.get("GRCTL_BENCH_ROUNDS") or bench.size(3, 1))
    runs, conc, n_seq = bench.size(5000, 300), bench.size(1000, 300), bench.size(300, 40)
    res.params = {"runtimes": [rt.__dict__ for rt in rts], "rounds": rounds, "chain_runs": runs,
                  "steps_per_run": STEPS, "concurrent_runs": conc, "sequential_1_step_runs": n_seq,
                  "partitions": 12, "raw_loop": PAIR_VARIANT}  # fmt: skip
    per_round: list[dict[str, Any]] = []
    for r in range(rounds):
        raw = await raw_loop(bench, 12, runs, conc, f"round {r + 1}")
        # The machine's load when the round began: a shared machine's rounds differ (other people's tests).
        entry: dict[str, Any] = {"raw_loop_records_in_per_s": round(raw), "load_average_1m": os.getloadavg()[0],
                                 "runtimes": {}}  # fmt: skip
        # Each round starts with the next runtime, so none is always measured first or last.
        for k in range(len(rts)):
            i = (r + k) % len(rts)
            rt = rts[i]
            m = await _runtime_round(bench, res, rt, f"rt{i}r{r + 1}", runs, conc, n_seq)
            m["ratio_to_raw_loop"] = round(m["steps_per_s"] / raw, 3) if raw else None
            entry["runtimes"][rt.label] = m
        per_round.append(entry)
    res.metrics["rounds"] = per_round

    def med(values: list[float]) -> float:
        v = sorted(values)
        return v[len(v) // 2]

    first = rts[0].label
    summary: dict[str, Any] = {}
    for rt in rts:
        ms = [e["runtimes"][rt.label] for e in per_round]
        refs = [e["runtimes"][first] for e in per_round]
        summary[rt.label] = s = {
            "steps_per_s": med([m["steps_per_s"] for m in ms]),
            "ratio_to_raw_loop": med([m["ratio_to_raw_loop"] or 0.0 for m in ms]),
            "worker_cpu_us_per_step": med([m["worker_cpu_us_per_step"] for m in ms]),
            "worker_cpu_utilisation": med([m["worker_cpu_utilisation"] for m in ms]),
            "latency_p50_ms": med([m["latency_ms"]["p50"] for m in ms]),
            "latency_p99_ms": med([m["latency_ms"]["p99"] for m in ms]),
            "steps_per_s_vs_first": med([m["steps_per_s"] / f["steps_per_s"] for m, f in zip(ms, refs, strict=True)]),
            "cpu_per_step_vs_first": med(
                [m["worker_cpu_us_per_step"] / f["worker_cpu_us_per_step"] for m, f in zip(ms, refs, strict=True)]
            ),
        }
        n = len(ms)
        res.rows += [
            Row(f"{rt.label}: chain steps/s (median of {n}) / over the raw loop", f"{s['steps_per_s']:,.0f} / "
                f"{s['ratio_to_raw_loop']:.2f}x", "", ratio=s["ratio_to_raw_loop"]),
            Row(f"{rt.label}: worker CPU per chain step (median)", s["worker_cpu_us_per_step"], "µs"),
            Row(f"{rt.label}: 1-step latency p50 / p99, light load (medians)",
                f"{s['latency_p50_ms']:.1f} / {s['latency_p99_ms']:.1f}", "ms"),
            Row(f"{rt.label}: steps/s / CPU per step vs {first} (median of the rounds' ratios)",
                f"{s['steps_per_s_vs_first']:.2f} / {s['cpu_per_step_vs_first']:.2f}", "x"),
        ]  # fmt: skip
    res.metrics["summary"] = summary
    res.notes.append(f"rounds interleaved, each opening with the raw loop ({PAIR_VARIANT}); ratios within a round")
    return res


async def _runtime_round(
    bench: Bench, res: ScenarioResult, rt: Runtime, label: str, runs: int, conc: int, n_seq: int
) -> dict[str, Any]:
    """One runtime's worker: `n_seq` 1-step runs one at a time, then `runs` 10-step chains."""
    async with engine(bench, label, env={"GRCTL_EVENT_LOOP": rt.loop}, python=rt.python) as eng:
        log = eng.workers[0].log_text()
        res.check(f"{label}: the worker ran on {rt.label}", f"Python {rt.version}, event loop {rt.loop}" in log,
                  log[-500:])  # fmt: skip
        await bench.settle()
        lat, outs = await _sequential(bench, eng, n_seq, f"{label} ({rt.label}): 1-step latency")
        res.check(
            f"{label}: 1-step runs returned 'ok'", not _wrong(outs, lambda i: "ok"), _detail(outs, lambda i: "ok")
        )
        task = bench.task(f"{label} ({rt.label}): {runs} x {STEPS}-step chains", runs)
        specs = [("Chain10", f"chain-{i}", {"steps": STEPS}) for i in range(runs)]
        await bench.settle()
        cpu0 = sum(w.cpu_seconds() for w in eng.workers)
        t0 = time.perf_counter()
        outs, run_lat = await run_many(eng.client, specs, conc, lambda: bench.progress.advance(task))
        elapsed = time.perf_counter() - t0
        cpu = sum(w.cpu_seconds() for w in eng.workers) - cpu0
    res.check(f"{label}: every chain completed with 1", not _wrong(outs, lambda i: 1), _detail(outs, lambda i: 1))
    steps = runs * STEPS
    return {
        "steps_per_s": round(steps / elapsed, 1),
        "worker_cpu_us_per_step": round(cpu / steps * 1e6, 1),
        "worker_cpu_utilisation": round(cpu / elapsed, 2),
        "chain_run_latency_ms": percentiles(run_lat),
        "latency_ms": percentiles(lat),
    }


async def processes(bench: Bench) -> ScenarioResult:
    """The chain on one worker process, and on two under the supervisor (`--processes 2`), in interleaved pairs."""
    res = ScenarioResult("processes")
    runs, conc = bench.size(5000, 300), bench.size(1000, 200)
    pairs = 1 if bench.quick else int(os.environ.get("GRCTL_BENCH_PAIRS", "3"))
    res.params = {"runs": runs, "concurrent_runs": conc, "partitions": 12, "pairs": pairs}
    one: list[dict[str, Any]] = []
    two: list[dict[str, Any]] = []
    for k in range(pairs):
        one.append(await chain_run(bench, res, f"p1-{k}", partitions=12, workers=1, runs=runs, conc=conc))
        two.append(await chain_run(bench, res, f"p2-{k}", partitions=12, workers=1, runs=runs, conc=conc, processes=2))
    ratios = [b["steps_per_s"] / a["steps_per_s"] for a, b in zip(one, two, strict=True)]
    median = sorted(ratios)[len(ratios) // 2]
    res.metrics = {"one_process": one, "two_processes": two, "ratios": [round(r, 3) for r in ratios]}
    res.rows += [
        Row("chain steps/s, 1 worker process (each pair)", " / ".join(f"{m['steps_per_s']:,.0f}" for m in one),
            "steps/s"),
        Row("chain steps/s, --processes 2 (each pair)", " / ".join(f"{m['steps_per_s']:,.0f}" for m in two),
            "steps/s"),
        Row("2 processes / 1, per pair", " / ".join(f"{r:.2f}" for r in ratios), "x"),
        Row("2 processes / 1, median of the pairs", round(median, 2), "x", ">= 1.3x", median >= 1.3),
        Row("worker CPU per step, 1 / 2 processes (median)", " / ".join(
            str(_median(m["worker_cpu_us_per_step"] for m in ms)) for ms in (one, two)), "µs"),
    ]  # fmt: skip
    res.notes.append(
        "each pair runs the chain on one worker process, then on `--processes 2` (grctl.worker.supervisor "
        "starting two worker processes in the namespace's group, each on its own state slot); 2 cores are shared by "
        "the broker, the client and the workers"
    )
    return res


def _median(values: Iterable[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if v else 0.0


# --------------------------------------------------------------------------- restore


async def restore(bench: Bench) -> ScenarioResult:
    """Changelog restore on assign: build state, stop the worker, wipe its RocksDB, start it again."""
    res = ScenarioResult("restore")
    runs, keys, size, conc = bench.size(20_000, 2_000), 10, 100, 2000
    res.params = {"runs": runs, "keys_per_run": keys, "value_bytes": size}
    loop = asyncio.get_running_loop()
    async with engine(bench, "restore") as eng:
        client = eng.client
        task = bench.task(f"restore: build {runs} runs x {keys} keys", runs)
        last_per_partition: dict[int, str] = {}

        async def start(i: int) -> WorkflowHandle:
            wf_id = f"rs-{i}"
            h = await client.start_workflow("Restore", wf_id, {"keys": keys, "size": size})
            last_per_partition[partition_for(wf_id, eng.conn.num_partitions)] = wf_id
            bench.progress.advance(task)
            return h

        handles = await gather_limited((start(i) for i in range(runs)), conc)
        started = all(isinstance(h, WorkflowHandle) for h in handles)
        if not res.check("every run started", started, _exc_summary(handles)):
            return res
        await _all_waiting(client, last_per_partition, timeout=300)
        changelog = (await loop.run_in_executor(None, end_offsets, eng.conn, ("state",)))["state"]
        w = eng.workers[0]
        w.expected_exit = True  # type: ignore[attr-defined]  # read by the engine() watchdog
        code = await loop.run_in_executor(None, w.stop)
        res.check("worker stopped cleanly (SIGTERM)", code == 0, f"exit code {code}")
        # Keep instance.id (static membership: the restarted worker takes its partitions back
        # at once); delete every partition's RocksDB.
        wiped = 0
        for child in w.state_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
                wiped += 1
        t0 = time.perf_counter()
        w.start()
        w.expected_exit = False  # type: ignore[attr-defined]
        await wait_for(lambda: len(w.owned()) == eng.conn.num_partitions, 300, "the restarted worker's partitions")
        ready_s = time.perf_counter() - t0
        restores = w.restores()
        ftask = bench.task(f"restore: finish {runs} runs", runs)

        async def finish(h: WorkflowHandle) -> Any:
            await h.send("finish")
            out = await h.result(timeout=300)
            bench.progress.advance(ftask)
            return out

        outs = await gather_limited((finish(h) for h in handles), conc)
    expected = [wf.restore_checksum(f"rs-{i}", keys, size) for i in range(runs)]
    res.check("every run read back all its values after the restore", not _wrong(outs, lambda i: expected[i]),
              _detail(outs, lambda i: expected[i]))  # fmt: skip
    records = sum(r for _, r, _ in restores)
    ms = sum(t for _, _, t in restores)
    res.check("every partition restored from the changelog", len(restores) == eng.conn.num_partitions and wiped > 0,
              f"{len(restores)} restores logged, {wiped} folders wiped")  # fmt: skip
    rate = records / (ms / 1000) if ms else 0.0
    per_part = sorted(r / (t / 1000) for _, r, t in restores if t > 0)
    median = per_part[len(per_part) // 2] if per_part else 0.0
    res.metrics = {
        "changelog_offsets": changelog,
        "records_restored": records,
        "restore_ms_total": ms,
        "records_per_s": round(rate),
        "worker_ready_after_wipe_s": round(ready_s, 2),
        "median_partition_records_per_s": round(median),
        "slowest_partition_ms": max((t for _, _, t in restores), default=0),
        "per_partition": [{"partition": p, "records": r, "ms": t} for p, r, t in sorted(restores)],
    }
    res.rows += [
        Row(f"changelog restore ({records:,} records, {len(restores)} partitions, one after another)", round(rate),
            "records/s", f"≥ {RESTORE_TARGET:,}", rate >= RESTORE_TARGET),
        Row("restore rate of the median partition / slowest partition's time",
            f"{median:,.0f} rec/s / {res.metrics['slowest_partition_ms']:,} ms", ""),
        Row("restarted worker owns every partition after", round(ready_s, 1), "s"),
    ]  # fmt: skip
    return res


# --------------------------------------------------------------------------- children


async def children(bench: Bench) -> ScenarioResult:
    """Child fan-out: each parent starts N children in one step and awaits them all."""
    res = ScenarioResult("children")
    parents, per_parent, conc = bench.size(200, 20), bench.size(20, 10), bench.size(200, 20)
    res.params = {"parents": parents, "children_per_parent": per_parent, "concurrent_parents": conc}
    async with engine(bench, "children") as eng:
        task = bench.task(f"children: {parents} parents x {per_parent} children", parents)
        specs = [("FanOut", f"fan-{i}", {"children": per_parent}) for i in range(parents)]
        t0 = time.perf_counter()
        outs, lat = await run_many(eng.client, specs, conc, lambda: bench.progress.advance(task))
        elapsed = time.perf_counter() - t0
    expected = sum(2 * i for i in range(per_parent))
    res.check(
        "every parent summed all its children's results",
        not _wrong(outs, lambda i: expected),
        _detail(outs, lambda i: expected),
    )
    kids = parents * per_parent
    res.metrics = {"seconds": round(elapsed, 2), "children_per_s": round(kids / elapsed, 1),
                   "parent_latency_ms": percentiles(lat)}  # fmt: skip
    res.rows += [
        Row(f"child runs/s ({per_parent} children per parent, awaited in one step)", round(kids / elapsed), "runs/s",
            ratio=bench.ratio((kids + parents) / elapsed)),
        Row("child runs/s / 1-step runs/s (latency scenario, same run)",
            round(kids / elapsed / one, 2) if (one := bench.scratch.get("one_step_runs_per_s")) else "-", "x",
            "≥ 0.8", kids / elapsed / one >= 0.8 if one else None),
        Row("parent latency p50 / p99 (start -> all children done)",
            f"{res.metrics['parent_latency_ms']['p50']:.0f} / {res.metrics['parent_latency_ms']['p99']:.0f}", "ms"),
    ]  # fmt: skip
    return res


# --------------------------------------------------------------------------- profiler


def start_profiler(bench: Bench, worker: WorkerProc) -> subprocess.Popen[bytes]:
    """Attach py-spy to a worker: raw collapsed stacks, per thread, only the thread holding the GIL.

    The worker is one Python process, so the GIL is the resource its threads (event loop,
    consumer, producer) share: `--gil` shows what holds it.
    """
    assert bench.profile is not None
    bench.profile.mkdir(parents=True, exist_ok=True)
    out = bench.profile / "chain-worker.collapsed.txt"
    spy = shutil.which("py-spy") or str(Path(__import__("sys").executable).parent / "py-spy")
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(worker.pid), "--rate", "250", "--format", "raw", "--threads", "--gil",
         "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=open(bench.profile / "py-spy.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    time.sleep(1.0)  # py-spy needs a moment to attach
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


# --------------------------------------------------------------------------- ingress (issue 17)


def _create_topics(servers: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": servers})
    for fut in admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    ).values():
        fut.result(30)
    deadline = time.monotonic() + 30
    while not all(
        (m := admin.list_topics(topic=n, timeout=10).topics.get(n)) is not None and m.error is None
        and all(p.leader >= 0 for p in m.partitions.values())
        for n in names
    ):  # fmt: skip
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {names} have no leaders after 30 s")
        time.sleep(0.1)


def _produce_raw(servers: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": servers, "enable.idempotence": True, "linger.ms": 20})
    for i in range(n):
        while True:
            try:
                producer.produce(topic, b"r", str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError(f"{topic}: records unacknowledged after 120 s")


def _read_committed(servers: str, topic: str, partitions: int, n: int, timeout: float) -> list[bytes]:
    """The values of `n` committed records of `topic` (fails after `timeout` s), then a 2 s look for more."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"{topic}-bench", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[bytes] = []
    deadline, extra_until = time.monotonic() + timeout, None
    try:
        while True:
            out += [m.value() or b"" for m in consumer.consume(5000, 0.2) if m.error() is None]
            now = time.monotonic()
            if len(out) >= n:
                extra_until = extra_until or now + 2.0  # a duplicate would show up here
                if now > extra_until:
                    return out
            elif now > deadline:
                raise RuntimeError(f"{topic}: {len(out)} of {n} records within {timeout:.0f} s")
    finally:
        consumer.close()


async def ingress(bench: Bench) -> ScenarioResult:
    """Source records turned into completed 1-step runs, and records emitted from steps (`ctx.emit`).

    Ingress: the records are produced before the worker starts; the rate is records over the
    span from the first run's start to the last run's end (from the results topic, one record
    per run, so the worker's start-up is not counted). Emits: `Emitter` runs of one step that
    emits 10 records of 100 bytes each, started by the client.
    """
    res = ScenarioResult("ingress")
    records, emit_runs, per_run, parts = bench.size(20_000, 2_000), bench.size(2_000, 300), 10, 12
    res.params = {"source_records": records, "emit_runs": emit_runs, "emits_per_run": per_run, "partitions": parts}
    prefix = bench.namespace("ingress")
    source, results, emits = f"{prefix}-source", f"{prefix}-results", f"{prefix}-emits"
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _create_topics, bench.servers, [source, results, emits], parts)
    await loop.run_in_executor(None, _produce_raw, bench.servers, source, records)
    env = {"GRCTL_BENCH_SOURCE_TOPIC": source, "GRCTL_BENCH_RESULTS_TOPIC": results, "GRCTL_BENCH_EMIT_TOPIC": emits}
    try:
        async with engine(bench, "ingress", partitions=parts, env=env) as eng:
            got = await loop.run_in_executor(None, _read_committed, bench.servers, results, parts, records, 600)
            outcomes = [msgspec.json.decode(v) for v in got]
            span_ms = max(o["ended_ms"] for o in outcomes) - min(o["started_ms"] for o in outcomes)
            in_rate = records / (span_ms / 1000) if span_ms > 0 else 0.0
            task = bench.task(f"ingress: {emit_runs} Emitter runs x {per_run} emits", emit_runs)
            specs = [("Emitter", f"emit-{i}", {"n": per_run}) for i in range(emit_runs)]
            t0 = time.perf_counter()
            outs, _ = await run_many(eng.client, specs, bench.size(500, 200), lambda: bench.progress.advance(task))
            emit_s = time.perf_counter() - t0
            emitted = await loop.run_in_executor(
                None, _read_committed, bench.servers, emits, parts, emit_runs * per_run, 120
            )
    finally:
        AdminClient({"bootstrap.servers": bench.servers}).delete_topics([source, results, emits])
    ids = {o["wf_id"] for o in outcomes}
    res.check(
        "one run per source record, one result each",
        len(outcomes) == records == len(ids),
        f"{len(outcomes)} results, {len(ids)} ids",
    )
    res.check("every Emitter run completed", all(o == per_run for o in outs), str(outs[:3]))
    res.check("exactly one committed record per emit", len(emitted) == emit_runs * per_run, f"{len(emitted)} records")
    emit_rate = emit_runs * per_run / emit_s
    res.metrics = {"source_records_per_s": round(in_rate, 1), "span_s": round(span_ms / 1000, 2),
                   "emits_per_s": round(emit_rate, 1), "emit_runs_per_s": round(emit_runs / emit_s, 1)}  # fmt: skip
    res.rows += [
        Row("source records -> completed 1-step runs", round(in_rate), "records/s", ratio=bench.ratio(in_rate)),
        Row(
            f"records emitted from steps ({per_run} per step)",
            round(emit_rate),
            "records/s",
            ratio=bench.ratio(emit_rate),
        ),
    ]
    res.notes.append("ratios: over the raw loop's records-in/s (confluent-thread-2) measured in the same run")
    return res


SCENARIOS: dict[str, Scenario] = {
    "baseline": baseline,
    "latency": latency,
    "chain": chain,
    "store": store,
    "tasks": tasks,
    "events": events,
    "timers": timers,
    "partitions": partitions,
    "workers": workers,
    "processes": processes,
    "runtimes": runtimes,
    "join": join,
    "restore": restore,
    "children": children,
    "soak": soak,
    "listing": listing,
    "client_cpu": client_cpu,
    "ingress": ingress,
    "purge": purge,
    "timer_burst": timer_burst,
    "schedules": schedules,
}
#: `rss` is measured by the timers scenario (the worker with every timer run waiting).
ALIASES = {"rss": "timers"}
#: Long scenarios (tens of minutes in full) that run only when selected with -s.
ON_REQUEST = ("soak", "listing", "purge", "timer_burst", "schedules", "processes", "join", "runtimes")
#: Scenarios whose headline is a ratio to the baseline: selecting one runs the baseline first.
NEEDS_BASELINE = ("chain", "partitions", "workers", "ingress", "schedules", "processes")
