"""Shared machinery of the benchmark scenarios: namespaces, worker processes, clients, results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from ulid import ULID

from grctl import Client, Connection
from grctl.kafka.partitioner import partition_for
from grctl.kafka.topics import TopicNames, admin_client, delete_namespace

#: The folder that holds the `benchmarks` package: worker processes run from here, so a scratch
#: copy of the repository benchmarks its own `grctl`.
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVERS = "127.0.0.1:9092"

console = Console(stderr=True)
# aiokafka logs every retried produce of a freshly created topic as a warning.
logging.getLogger("aiokafka").setLevel(logging.ERROR)


def _local_listener(servers: str) -> int | None:
    """Pid of the local process listening on the first bootstrap server's port, if any."""
    host, _, port = servers.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"):
        return None
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == int(port) and c.pid:
            return int(c.pid)
    return None


def servers_from_env() -> str:
    """The broker the benchmarks use: GRCTL_KAFKA_SERVERS (or GRCTL_KAFKA_BOOTSTRAP), else localhost."""
    return os.environ.get("GRCTL_KAFKA_SERVERS") or os.environ.get("GRCTL_KAFKA_BOOTSTRAP") or DEFAULT_SERVERS


def percentiles(values_ms: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of latencies in ms (nearest-rank)."""
    v = sorted(values_ms)
    if not v:
        return {"n": 0}

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, round(p * len(v) + 0.5) - 1))], 2)

    return {
        "n": len(v),
        "p50": q(0.50),
        "p95": q(0.95),
        "p99": q(0.99),
        "mean": round(sum(v) / len(v), 2),
        "max": round(v[-1], 2),
    }


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the results table.

    Attributes:
        metric: what was measured.
        value: the measured value.
        unit: its unit.
        target: the issue's target, as text ("≥ 0.6x baseline", "≤ 15 ms").
        met: whether the target is met (None: no target or not applicable here).
        ratio: the engine/baseline ratio where one applies.
    """

    metric: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    met: bool | None = None
    ratio: float | None = None


@dataclass
class ScenarioResult:
    """What one scenario reports: its checks, metrics, table rows and notes."""

    name: str
    status: str = "ok"  # ok | failed | skipped | error
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a correctness check; a failed one fails the scenario."""
        self.checks[name] = bool(ok)
        if not ok:
            self.status = "failed"
            self.notes.append(f"CHECK FAILED: {name}{': ' + detail if detail else ''}")
        return bool(ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "params": self.params,
            "checks": self.checks,
            "metrics": self.metrics,
            "rows": [r.__dict__ for r in self.rows],
            "notes": self.notes,
            "error": self.error,
        }


@dataclass
class Bench:
    """The context every scenario gets.

    Attributes:
        servers: bootstrap servers.
        quick: the `--quick` sizes.
        results: results of the scenarios that already ran (ratios use the baseline's).
        progress: the shared progress display.
        tmp: a temporary folder for state dirs and worker logs.
        profile: attach py-spy to the worker of the chain scenario, writing here.
    """

    servers: str
    quick: bool
    progress: Progress
    tmp: Path
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    profile: Path | None = None
    keep_logs: Path | None = None
    scratch: dict[str, Any] = field(default_factory=dict)

    def size(self, full: int, quick: int) -> int:
        """A scenario size: `full`, or `quick` with --quick."""
        return quick if self.quick else full

    def baseline_rate(self) -> float | None:
        """Records-in/s of the raw loop (`baseline.CEILING`, confluent-thread-2) measured in this run: the ceiling."""
        res = self.results.get("baseline")
        if res is None:
            return None
        rate = res.metrics.get("ceiling_records_in_per_s")
        return float(rate) if rate else None

    def ratio(self, steps_per_s: float) -> float | None:
        """Engine steps/s over the baseline's records-in/s, when the baseline ran."""
        base = self.baseline_rate()
        return round(steps_per_s / base, 3) if base else None

    def broker_cpu_seconds(self) -> float | None:
        """CPU time used so far by the broker process, when it listens on this machine."""
        pid = self.scratch.get("broker_pid", 0)
        if pid == 0:
            pid = self.scratch["broker_pid"] = _local_listener(self.servers)
        if pid is None:
            return None
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        return float(t.user + t.system)

    async def settle(self, quiet: float = 0.1, window: float = 0.5, limit: float | None = None) -> float:
        """Wait until the local broker is idle (under `quiet` cores over `window` seconds).

        Deleting an earlier scenario's topics and cleaning compacted logs keep the broker busy
        for a while; a scenario measured meanwhile pays for them. Waits at most `limit`
        seconds (30, 5 with --quick); returns (and records in `scratch["settle_s"]`) how long it waited.
        """
        limit = limit if limit is not None else (5.0 if self.quick else 30.0)
        t0 = time.monotonic()
        last = self.broker_cpu_seconds()
        while last is not None and time.monotonic() - t0 < limit:
            await asyncio.sleep(window)
            now = self.broker_cpu_seconds()
            if now is None or (now - last) / window < quiet:
                break
            last = now
        waited = round(time.monotonic() - t0, 1)
        self.scratch.setdefault("settle_s", []).append(waited)
        return waited

    def task(self, description: str, total: float | None) -> TaskID:
        return self.progress.add_task(description, total=total)

    def namespace(self, label: str) -> str:
        """A namespace nobody else uses on the shared broker."""
        return f"bench-{label}-{str(ULID())[-10:].lower()}"


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


# --------------------------------------------------------------------------- namespaces


@contextlib.asynccontextmanager
async def namespace(bench: Bench, label: str, partitions: int) -> AsyncIterator[Connection]:
    """A fresh namespace with `partitions` partitions, deleted (topics and worker group) at the end."""
    ns = bench.namespace(label)
    conn = await Connection.connect(bench.servers, ns, partitions=partitions)
    try:
        yield conn
    finally:
        await asyncio.get_running_loop().run_in_executor(None, drop_namespace, conn)


def drop_namespace(conn: Connection) -> None:
    """Delete a namespace's topics and consumer groups (best effort)."""
    admin = admin_client(conn.client_config())
    with contextlib.suppress(Exception):
        delete_namespace(admin, conn.topics, timeout=30)
    drop_groups(admin, [f"grctl.{conn.namespace}.workers", f"grctl.{conn.namespace}.restore"])


def drop_groups(admin: AdminClient, groups: list[str]) -> None:
    with contextlib.suppress(Exception):
        for fut in admin.delete_consumer_groups(groups, request_timeout=10).values():
            with contextlib.suppress(Exception):
                fut.result(10)


def end_offsets(conn: Connection, roles: Iterable[str] = ("directives", "history", "state")) -> dict[str, int]:
    """Sum of the end offsets of each role's partitions (records + transaction markers)."""
    from confluent_kafka import Consumer

    c = Consumer(conn.client_config(**{"group.id": f"grctl.{conn.namespace}.offsets"}))
    out = {}
    try:
        for role in roles:
            topic = TopicNames(conn.namespace).role(role)
            total = 0
            for p in range(conn.num_partitions):
                total += c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            out[role] = total
    finally:
        c.close()
    return out


def ids_covering(prefix: str, partitions: int) -> list[str]:
    """Workflow ids that land on every partition (one each)."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < partitions:
        wf_id = f"{prefix}-{i}"
        out.setdefault(partition_for(wf_id, partitions), wf_id)
        i += 1
    return list(out.values())


# --------------------------------------------------------------------------- worker processes


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return found


_ASSIGNED = re.compile(r"partition (\d+) assigned: restored (\d+) changelog records in (\d+) ms")
_RELEASED = re.compile(r"partition (\d+) (revoked|lost)")
_TXN = re.compile(
    r"txn \d+: (\d+) records, (\d+) offsets: produce\+flush ([\d.]+) ms, offsets ([\d.]+) ms, commit ([\d.]+) ms"
)


class WorkerProc:
    """A worker process (`python -m benchmarks.workflows`) serving the benchmark workflows."""

    def __init__(
        self,
        bench: Bench,
        conn: Connection,
        name: str,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
        processes: int = 1,
        python: str | None = None,
    ) -> None:
        self.processes = processes
        #: The interpreter the worker runs on (default: the harness's); it must have grctl installed.
        self.python = python or sys.executable
        self.bench = bench
        self.env = dict(env or {})
        self.conn = conn
        self.name = name
        self.state_dir = state_dir or bench.tmp / conn.namespace / name
        self.log_path = bench.tmp / f"{conn.namespace}-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log_offset = 0

    def start(self) -> WorkerProc:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115  # handed to the child process
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        if self.bench.profile is not None:
            env["GRCTL_BENCH_WORKER_LOG"] = "DEBUG"
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [
                self.python, "-m", "benchmarks.workflows",
                "--servers", self.bench.servers,
                "--namespace", self.conn.namespace,
                "--state-dir", str(self.state_dir), "--processes", str(self.processes),
            ],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        """What this worker logged since its last start."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._log_offset)
            return fh.read().decode(errors="replace")

    def owned(self) -> set[int]:
        """Partitions this worker owns now (all its processes: the log says which process), from its log."""
        by_process: dict[str, set[int]] = {}
        for line in self.log_text().splitlines():
            fields = line.split(maxsplit=3)
            owned = by_process.setdefault(fields[2] if len(fields) > 2 else "", set())
            if m := _ASSIGNED.search(line):
                owned.add(int(m.group(1)))
            elif m := _RELEASED.search(line):
                owned.discard(int(m.group(1)))
        return set().union(*by_process.values())

    def restores(self) -> list[tuple[int, int, int]]:
        """(partition, records, ms) of every restore logged since the last start."""
        return [(int(a), int(b), int(c)) for a, b, c in _ASSIGNED.findall(self.log_text())]

    def transactions(self) -> dict[str, Any]:
        """Phases of the worker's transactions (logged at DEBUG, i.e. with --profile)."""
        rows = [tuple(float(x) for x in m) for m in _TXN.findall(self.log_text())]
        if not rows:
            return {}
        return {
            "count": len(rows),
            "records_per_txn": percentiles(r[0] for r in rows),
            "produce_flush_ms": percentiles(r[2] for r in rows),
            "send_offsets_ms": percentiles(r[3] for r in rows),
            "commit_ms": percentiles(r[4] for r in rows),
            "total_ms": percentiles(r[2] + r[3] + r[4] for r in rows),
        }

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker process and its live children have used so far (all threads)."""
        total = 0.0
        for pid in _process_tree(self.pid):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def rss_mb(self) -> float:
        """Resident set size of the worker process, MiB."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (graceful stop), then SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.bench.keep_logs is not None and self.log_path.exists():
            self.bench.keep_logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, self.bench.keep_logs / self.log_path.name)
        return self.proc.returncode


async def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def start_workers(
    bench: Bench,
    conn: Connection,
    count: int = 1,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
    processes: int = 1,
    python: str | None = None,
) -> tuple[list[WorkerProc], float]:
    """Start `count` workers (each `processes` processes under a supervisor if more than 1); return
    once they own every partition between them.

    Returns the workers and the seconds from the first start until every partition was owned.
    """
    workers = [
        WorkerProc(bench, conn, f"w{i}", env=env, processes=processes, python=python).start() for i in range(count)
    ]
    t0 = time.monotonic()

    def ready() -> bool:
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"worker {w.name} exited ({w.proc and w.proc.returncode}):\n{w.log_text()[-3000:]}")
        owned = [w.owned() for w in workers]
        union = set().union(*owned)
        disjoint = sum(len(o) for o in owned) == len(union)
        return len(union) == conn.num_partitions and disjoint and all(owned)

    await wait_for(ready, timeout, f"{count} worker(s) to own {conn.num_partitions} partitions")
    return workers, time.monotonic() - t0


def stop_workers(workers: list[WorkerProc]) -> None:
    for w in workers:
        if w.alive() and w.proc is not None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        w.stop()


async def warm_up(client: Client, conn: Connection) -> None:
    """One `OneStep` run per partition: every partition processor and the client are warm."""
    ids = ids_covering(f"warmup-{ULID()}", conn.num_partitions)
    results = await asyncio.gather(*(client.run_workflow("OneStep", i, None, timeout=None) for i in ids))
    if any(r != "ok" for r in results):
        raise RuntimeError(f"warm-up runs returned {results}")


async def run_many(
    client: Client,
    specs: list[tuple[str, str, Any]],
    concurrency: int,
    on_done: Callable[[], None] | None = None,
    result_timeout: float = 900.0,
) -> tuple[list[Any], list[float]]:
    """Run (type, wf_id, input) with at most `concurrency` runs in flight.

    Returns each run's result (or the exception it raised) in input order, and each run's
    start→result latency in ms.
    """
    results: list[Any] = [None] * len(specs)
    lat: list[float] = [0.0] * len(specs)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        wf_type, wf_id, inp = specs[i]
        async with sem:
            t0 = time.perf_counter()
            try:
                handle = await client.start_workflow(wf_type, wf_id, inp)
                results[i] = await handle.result(timeout=result_timeout)
            except Exception as exc:
                results[i] = exc
            lat[i] = (time.perf_counter() - t0) * 1000
        if on_done is not None:
            on_done()

    await asyncio.gather(*(one(i) for i in range(len(specs))))
    return results, lat


async def gather_limited(coros: Iterable[Awaitable[Any]], concurrency: int) -> list[Any]:
    """Await coroutines with at most `concurrency` at once; exceptions are returned, not raised."""
    sem = asyncio.Semaphore(concurrency)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            try:
                return await c
            except Exception as exc:
                return exc

    return await asyncio.gather(*(one(c) for c in coros))


def temp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="grctl-bench-"))
