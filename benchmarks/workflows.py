"""Workflows used by the benchmarks, and a worker process serving them.

Each workflow's result is a function of its input, so every scenario can check that each run
ended with the right output (a fast wrong answer is a failure):

- `OneStep`: start -> complete("ok").
- `Chain10`: `steps` steps chained through the store ("left" counts down) -> complete(1).
- `StoreHeavy`: every step reads the 10 x 1 KiB values the previous step wrote, checks them,
  writes 10 new ones -> complete(number of values verified).
- `TaskRetry`: `calls` task calls per run, each failing `fails` times before it succeeds
  (RetryPolicy, 1 ms back-off) -> complete(list of task results).
- `FanIn`: waits for `expected` `ping(n)` events (sent concurrently by the client; the ones
  that arrive while a handler runs queue in the inbox) -> complete(sum of n).
- `TimerWait`: waits for an event with a timeout that expires at `fire_at_ms` (wall clock),
  `on_timeout` -> complete("expired").
- `Restore`: writes `keys` values of `size` bytes, waits; event `finish` reads them back ->
  complete(checksum).
- `Soak3`: three steps through the store (a 200-byte value, a number doubled) -> complete(3n + 200).
- `FanOut`: starts `children` `Child` runs (`ctx.start_child`) and awaits them all in the same
  step -> complete(sum of 2 * i); `Child(n)` -> complete(2 * n).

Run a worker: ``python -m benchmarks.workflows --servers HOST:PORT --namespace NS --state-dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import platform
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from grctl import Connection, Context, Directive, RetryPolicy, Worker, Workflow
from grctl.worker import Source, StartRun, event_loop, task

# --------------------------------------------------------------------------- OneStep

one = Workflow(workflow_type="OneStep")


@one.start()
async def one_start(ctx: Context) -> Directive:
    return ctx.next.complete("ok")


# --------------------------------------------------------------------------- Chain10

chain = Workflow(workflow_type="Chain10")


@chain.start()
async def chain_start(ctx: Context, steps: int = 10) -> Directive:
    ctx.store.put("left", steps - 1)
    return ctx.next.step(link) if steps > 1 else ctx.next.complete(0)


@chain.step()
async def link(ctx: Context) -> Directive:
    left = await ctx.store.get("left", int)
    if left <= 1:
        return ctx.next.complete(left)
    ctx.store.put("left", left - 1)
    return ctx.next.step(link)


# --------------------------------------------------------------------------- StoreHeavy

STORE_KEYS = 10
STORE_VALUE_BYTES = 1024


def store_value(wf_id: str, step: int, key: int) -> str:
    """The value step `step` of run `wf_id` writes under key `key` (1 KiB, distinct per key)."""
    seed = f"{wf_id}:{step}:{key}:"
    return (seed * (STORE_VALUE_BYTES // len(seed) + 1))[:STORE_VALUE_BYTES]


store_heavy = Workflow(workflow_type="StoreHeavy")


@store_heavy.start()
async def store_start(ctx: Context, steps: int) -> Directive:
    for k in range(STORE_KEYS):
        ctx.store.put(f"k{k}", store_value(ctx.run.wf_id, 0, k))
    ctx.store.put("step", 0)
    ctx.store.put("steps", steps)
    ctx.store.put("verified", 0)
    return ctx.next.step(store_step)


@store_heavy.step()
async def store_step(ctx: Context) -> Directive:
    step = await ctx.store.get("step", int)
    steps = await ctx.store.get("steps", int)
    verified = await ctx.store.get("verified", int)
    for k in range(STORE_KEYS):
        if await ctx.store.get(f"k{k}", str) == store_value(ctx.run.wf_id, step, k):
            verified += 1
    step += 1
    if step >= steps:
        return ctx.next.complete(verified)
    for k in range(STORE_KEYS):
        ctx.store.put(f"k{k}", store_value(ctx.run.wf_id, step, k))
    ctx.store.put("step", step)
    ctx.store.put("verified", verified)
    return ctx.next.step(store_step)


# --------------------------------------------------------------------------- TaskRetry

#: attempts per (wf_id, call): a task fails until it has been called `fails` times.
_attempts: dict[str, int] = {}


@task(retry_policy=RetryPolicy(max_attempts=5, initial_delay_ms=1, backoff_multiplier=1.0))
async def flaky(key: str, fails: int) -> str:
    n = _attempts.get(key, 0) + 1
    _attempts[key] = n
    if n <= fails:
        raise ConnectionError(f"{key}: transient failure {n}")
    return f"{key}:ok"


task_retry = Workflow(workflow_type="TaskRetry")


@task_retry.start()
async def task_retry_start(ctx: Context, calls: int, fails: int) -> Directive:
    out = [await flaky(f"{ctx.run.wf_id}/{i}", fails) for i in range(calls)]
    return ctx.next.complete(out)


# --------------------------------------------------------------------------- FanIn

fan_in = Workflow(workflow_type="FanIn")


@fan_in.start()
async def fan_in_start(ctx: Context, expected: int) -> Directive:
    ctx.store.put("expected", expected)
    ctx.store.put("count", 0)
    ctx.store.put("sum", 0)
    return ctx.next.wait()


@fan_in.event()
async def ping(ctx: Context, n: int) -> Directive:
    count = await ctx.store.get("count", int) + 1
    total = await ctx.store.get("sum", int) + n
    if count >= await ctx.store.get("expected", int):
        return ctx.next.complete(total)
    ctx.store.put("count", count)
    ctx.store.put("sum", total)
    return ctx.next.wait()


# --------------------------------------------------------------------------- TimerWait

timer_wait = Workflow(workflow_type="TimerWait")


@timer_wait.start()
async def timer_start(ctx: Context, fire_at_ms: int) -> Directive:
    # The wall clock outside ctx.now() keeps the journal out of this benchmark; on a
    # re-execution the timer would be re-armed for the same absolute time anyway.
    remaining = max(1, fire_at_ms - int(time.time() * 1000))
    return ctx.next.wait(timeout=timedelta(milliseconds=remaining), on_timeout=timer_expired)


@timer_wait.step()
async def timer_expired(ctx: Context) -> Directive:
    return ctx.next.complete("expired")


@timer_wait.event()
async def timer_cancel(ctx: Context) -> Directive:
    return ctx.next.complete("event")


# --------------------------------------------------------------------------- Restore


def restore_checksum(wf_id: str, keys: int, size: int) -> str:
    """What a `Restore` run completes with when every value survived."""
    h = hashlib.sha1(usedforsecurity=False)
    for k in range(keys):
        h.update(restore_value(wf_id, k, size).encode())
    return h.hexdigest()


def restore_value(wf_id: str, key: int, size: int) -> str:
    seed = f"{wf_id}/{key}/"
    return (seed * (size // len(seed) + 1))[:size]


restore = Workflow(workflow_type="Restore")


@restore.start()
async def restore_start(ctx: Context, keys: int, size: int) -> Directive:
    for k in range(keys):
        ctx.store.put(f"k{k}", restore_value(ctx.run.wf_id, k, size))
    ctx.store.put("keys", keys)
    return ctx.next.wait()


@restore.event()
async def finish(ctx: Context) -> Directive:
    keys = await ctx.store.get("keys", int)
    h = hashlib.sha1(usedforsecurity=False)
    for k in range(keys):
        h.update((await ctx.store.get(f"k{k}", str)).encode())
    return ctx.next.complete(h.hexdigest())


# --------------------------------------------------------------------------- FanOut / Child

fan_out = Workflow(workflow_type="FanOut")


@fan_out.start()
async def fan_out_start(ctx: Context, children: int) -> Directive:
    handles = [await ctx.start_child("Child", f"{ctx.run.wf_id}-c{i}", {"n": i}) for i in range(children)]
    results = await asyncio.gather(*(h.result() for h in handles))
    return ctx.next.complete(sum(results))


child = Workflow(workflow_type="Child")


@child.start()
async def child_start(ctx: Context, n: int) -> Directive:
    return ctx.next.complete(2 * n)


# --------------------------------------------------------------------------- Soak3

SOAK_BLOB = "s" * 200

soak3 = Workflow(workflow_type="Soak3")


@soak3.start()
async def soak3_start(ctx: Context, n: int) -> Directive:
    ctx.store.put("n", n)
    ctx.store.put("blob", SOAK_BLOB)
    return ctx.next.step(soak3_double)


@soak3.step()
async def soak3_double(ctx: Context) -> Directive:
    n = await ctx.store.get("n", int)
    ctx.store.put("n", 2 * n)
    ctx.store.put("was", n)
    return ctx.next.step(soak3_finish)


@soak3.step()
async def soak3_finish(ctx: Context) -> Directive:
    n = await ctx.store.get("n", int)
    was = await ctx.store.get("was", int)
    blob = await ctx.store.get("blob", str)
    return ctx.next.complete(n + was + len(blob))


def soak3_result(n: int) -> int:
    """What a `Soak3` run with input `n` completes with."""
    return 3 * n + len(SOAK_BLOB)


# --------------------------------------------------------------------------- Ingress (issue 17)

#: The ingress scenario's worker: records of this topic start `Ingress` runs, which end with a
#: record on the results topic; `Emitter` runs emit to the emit topic.
SOURCE_TOPIC = os.environ.get("GRCTL_BENCH_SOURCE_TOPIC")
RESULTS_TOPIC = os.environ.get("GRCTL_BENCH_RESULTS_TOPIC")
EMIT_TOPIC = os.environ.get("GRCTL_BENCH_EMIT_TOPIC", "unused-emit-topic")

ingress = Workflow(workflow_type="Ingress", results_topic=RESULTS_TOPIC)


@ingress.start()
async def ingress_start(ctx: Context) -> Directive:
    return ctx.next.complete("ok")


emitter = Workflow(workflow_type="Emitter")


@emitter.start()
async def emitter_start(ctx: Context, n: int = 10) -> Directive:
    for _ in range(n):
        ctx.emit(EMIT_TOPIC, b"x" * 100, key=ctx.run.wf_id, format="raw")
    return ctx.next.complete(n)


WORKFLOWS = [one, chain, store_heavy, task_retry, fan_in, timer_wait, restore, fan_out, child, soak3, ingress, emitter]


#: With the process id: several worker processes of one supervisor share a log (the harness
#: tells their partitions apart by it).
LOG_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"


async def serve(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--max-concurrent-steps", type=int, default=1000)
    ap.add_argument("--processes", type=int, default=1)  # 1 here; more: `supervise`
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    # The harness reads "partition N assigned: restored K changelog records in T ms" lines.
    # GRCTL_BENCH_WORKER_LOG=DEBUG adds one line per transaction (its phases), for --profile.
    logging.getLogger("grctl.worker").setLevel(os.environ.get("GRCTL_BENCH_WORKER_LOG", "INFO"))
    conn = await Connection.connect(args.servers, args.namespace)
    kwargs: dict[str, Any] = {"state_dir": args.state_dir, "max_concurrent_steps": args.max_concurrent_steps}
    # GRCTL_BENCH_METRICS=1: the metrics endpoint on, scraped every second (Prometheus' default
    # interval is 15 s), to measure what metrics cost (docs/tutorials/operating.md, "Observe").
    scraping = os.environ.get("GRCTL_BENCH_METRICS") == "1"
    if scraping:
        kwargs["metrics_port"] = 0
        kwargs["metrics_host"] = "127.0.0.1"
    # GRCTL_BENCH_METRICS_PORT=N: the metrics endpoint on that port, scraped by the scenario (soak).
    if port := os.environ.get("GRCTL_BENCH_METRICS_PORT"):
        kwargs["metrics_port"] = int(port)
        kwargs["metrics_host"] = "127.0.0.1"
    # GRCTL_BENCH_STATE_MEMORY_MB=N: the worker's RocksDB memory budget (soak).
    if mb := os.environ.get("GRCTL_BENCH_STATE_MEMORY_MB"):
        kwargs["state_memory_mb"] = int(mb)
    # GRCTL_BENCH_PIPELINE_STEPS=0: steps start only after the commit that dispatched them
    # (the engine before pipelining), to measure pipelining in the same run (chain scenario).
    if os.environ.get("GRCTL_BENCH_PIPELINE_STEPS") == "0":
        kwargs["pipeline_steps"] = False
    if SOURCE_TOPIC:  # the ingress scenario: each record starts an Ingress run (id from the record)
        kwargs["sources"] = [Source(SOURCE_TOPIC, lambda rec: StartRun("Ingress"), format="raw")]
    worker = Worker(WORKFLOWS, conn, **kwargs)
    worker.install_signal_handlers()
    # The harness checks the runtime a scenario asked for (the runtimes scenario).
    logging.getLogger("grctl.worker").info(
        "benchmark worker: Python %s, event loop %s", platform.python_version(), event_loop.running_loop_name()
    )
    if path := os.environ.get("GRCTL_BENCH_TRACEMALLOC"):  # where the heap grows (a soak investigation)
        threading.Thread(target=_trace_heap, args=(Path(path),), daemon=True).start()
    if scraping:
        threading.Thread(target=_scrape_every_second, args=(worker,), daemon=True).start()
    if path := os.environ.get("GRCTL_BENCH_GC_LOG"):  # the garbage collector's pauses (a soak investigation)
        _log_gc_pauses(Path(path))
    if path := os.environ.get("GRCTL_BENCH_LOOP_LAG_LOG"):  # the event loop held (a soak investigation)
        asyncio.get_running_loop().create_task(log_loop_lag(Path(path)))
    await worker.run()


async def log_loop_lag(path: Path, tick_s: float = 0.01, report_ms: float = 20.0) -> None:
    """Append a line (wall time, ms late) whenever a `tick_s` sleep wakes `report_ms` or more late."""
    out = path.open("a", buffering=1)
    while True:
        t = time.perf_counter()
        await asyncio.sleep(tick_s)  # the probe itself: how late the loop wakes it
        late = (time.perf_counter() - t - tick_s) * 1000
        if late >= report_ms:
            out.write(f"{time.time():.3f} {late:.1f}\n")


def _log_gc_pauses(path: Path) -> None:
    """Append one line per collection of generation 1 or 2: time, generation, pause ms, the
    thread's CPU ms in it (less than the pause: the thread waited for a core), objects collected."""
    import gc

    started: list[float] = [0.0, 0.0]
    out = path.open("a", buffering=1)

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter(), time.thread_time()]
        elif info["generation"] >= 1:
            ms = (time.perf_counter() - started[0]) * 1000
            cpu = (time.thread_time() - started[1]) * 1000
            out.write(
                f"{time.time():.3f} gen{info['generation']} {ms:.1f}ms cpu={cpu:.1f}ms collected={info['collected']}\n"
            )

    gc.callbacks.append(on_gc)

    def census() -> None:  # once, in steady state: which objects the collector walks
        time.sleep(90.0)  # a diagnostic's sampling moment, not a synchronisation
        from collections import Counter

        objs = gc.get_objects()
        kinds = Counter(type(o).__qualname__ for o in objs)
        out.write(f"census {sum(kinds.values())} tracked: {kinds.most_common(25)}\n")
        sizes = Counter()
        for o in objs:
            if isinstance(o, (list, dict, set, tuple)):
                sizes[type(o).__qualname__] += len(o)
        big = sorted((o for o in objs if isinstance(o, (list, dict, set)) and len(o) > 5000), key=len, reverse=True)
        out.write(f"census elements: {dict(sizes)}; big: {[(type(o).__qualname__, len(o)) for o in big[:15]]}\n")
        # Who holds the most common small containers (a sample of 200 of each kind).
        for kind in ("list", "dict", "tuple"):
            same = [o for o in objs if type(o).__name__ == kind][:: max(1, kinds[kind] // 200)][:200]
            holders: Counter[str] = Counter()
            for o in same:
                for r in gc.get_referrers(o):
                    if r is not same and r is not objs:
                        holders[type(r).__qualname__ + (f"[{len(r)}]" if isinstance(r, (list, dict)) else "")] += 1
            out.write(f"census {kind} holders: {holders.most_common(12)}; e.g. {[repr(o)[:80] for o in same[:5]]}\n")
        del objs, big
        t0 = time.perf_counter()
        gc.collect()
        out.write(f"census full collect {(time.perf_counter() - t0) * 1000:.1f} ms\n")

    # Only when asked: the census holds the interpreter lock for seconds (600 get_referrers walks of
    # every tracked object and a full collection), so the latencies of the soak's window around
    # 90 s then measure the census (seen in the tail work of issue 32: runs ending at 89 s had a
    # median latency of 358 ms, against 35 ms in the seconds before).
    if os.environ.get("GRCTL_BENCH_GC_CENSUS"):
        threading.Thread(target=census, daemon=True).start()


def _trace_heap(path: Path, first_s: float = 40.0, every_s: float = 40.0) -> None:
    """Every `every_s`, write the allocations grown since `first_s` into the run (top 25 lines)."""
    import tracemalloc

    tracemalloc.start(1)
    time.sleep(first_s)  # a pace, not a synchronisation: a diagnostic's sampling interval
    base = tracemalloc.take_snapshot()
    n = 0
    while True:
        time.sleep(every_s)  # the sampling interval
        n += 1
        top = tracemalloc.take_snapshot().compare_to(base, "lineno")[:25]
        with path.open("a") as f:
            f.write(f"--- {first_s + n * every_s:.0f}s, traced {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB\n")
            f.writelines(f"{stat}\n" for stat in top)


def _scrape_every_second(worker: Worker) -> None:
    while True:
        time.sleep(1.0)
        address = worker.metrics_address
        if address is None:
            continue
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{address[1]}/metrics") as r:
            r.read()


def supervise(argv: list[str]) -> int:
    """`--processes N` (N > 1): N worker processes of this module under grctl's supervisor
    (`grctl.worker.supervisor`, what `grctl worker --processes N` runs), each on `<state dir>/p<i>`."""
    from grctl.worker.supervisor import Supervisor

    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--state-dir", required=True)
    args, rest = ap.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)

    def child(index: int, _port: int) -> list[str]:
        return [sys.executable, "-m", "benchmarks.workflows", *rest, "--state-dir", f"{args.state_dir}/p{index}"]

    return Supervisor(args.processes, child).run()


if __name__ == "__main__":
    if "--processes" in sys.argv and sys.argv[sys.argv.index("--processes") + 1] != "1":
        sys.exit(supervise(sys.argv[1:]))
    # GRCTL_EVENT_LOOP (asyncio or uvloop), as `grctl worker` runs it.
    event_loop.run(serve(sys.argv[1:]))
