"""The worker's Prometheus endpoint, scraped over HTTP after real runs on the broker.

The values must match what ran: runs started and ended by status, steps completed and failed
by workflow type, the step duration histogram's count, commits, a run failed by a value over
the size limit, partitions owned and their lag, and the probes `/ready` and `/live`.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from grctl import Client, Context, Directive, Worker, Workflow
from grctl.errors import MetricsPortInUseError, PayloadTooLargeError, WorkflowError
from tests.support.wait import wait_until_async

pytestmark = pytest.mark.kafka

counted = Workflow(workflow_type="Counted")


@counted.start()
async def start(ctx: Context, mode: str) -> Directive:
    if mode == "fail":
        raise RuntimeError("asked to fail")
    if mode == "big":
        return ctx.next.complete("x" * 2_000_000)  # over the value limit: PayloadTooLargeError
    return ctx.next.step(finish)


@counted.step()
async def finish(ctx: Context) -> Directive:
    return ctx.next.complete("done")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def status_of(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_metrics_after_runs_match_what_ran(workers, client: Client) -> None:
    worker = await workers.start([counted], metrics_port=0)
    assert worker.metrics_address is not None
    port = worker.metrics_address[1]
    loop = asyncio.get_running_loop()

    handles = [await client.start_workflow("Counted", f"ok-{i}", {"mode": "ok"}) for i in range(5)]
    for h in handles:
        assert await h.result(timeout=30) == "done"
    failing = await client.start_workflow("Counted", "bad-1", {"mode": "fail"}, timeout=timedelta(seconds=30))
    with pytest.raises(WorkflowError):
        await failing.result(timeout=30)
    big = await client.start_workflow("Counted", "big-1", {"mode": "big"})
    with pytest.raises(WorkflowError) as raised:
        await big.result(timeout=30)
    assert PayloadTooLargeError.__name__ in str(raised.value)

    async def settled() -> Samples | None:
        # The run ends are counted when staged; the scrape may race the last commit's counters.
        samples = await loop.run_in_executor(None, scrape, port)
        ended = sum(v for (n, _l), v in samples.items() if n == "grctl_runs_ended_total")
        return samples if ended >= 7 else None

    samples = await wait_until_async("the scrape counts 7 ended runs", settled, 15)
    assert samples is not None
    t = "Counted"
    assert value(samples, "grctl_runs_started_total", workflow_type=t) == 7
    assert value(samples, "grctl_runs_ended_total", workflow_type=t, status="completed") == 5
    assert value(samples, "grctl_runs_ended_total", workflow_type=t, status="failed") == 2
    assert value(samples, "grctl_runs_failed_payload_too_large_total", workflow_type=t) == 1
    # 5 runs x 2 steps, and two starts that raised (RuntimeError, PayloadTooLargeError at complete).
    assert value(samples, "grctl_steps_started_total", workflow_type=t) == 12
    assert value(samples, "grctl_steps_completed_total", workflow_type=t) == 10
    assert value(samples, "grctl_steps_failed_total", workflow_type=t, reason="error") == 2
    assert value(samples, "grctl_step_duration_seconds_count", workflow_type=t) == 12
    assert value(samples, "grctl_step_duration_seconds_bucket", workflow_type=t, le="+Inf") == 12
    assert value(samples, "grctl_commit_duration_seconds_count") >= 1
    assert value(samples, "grctl_commit_batch_size_count") == value(samples, "grctl_commit_duration_seconds_count")
    assert value(samples, "grctl_transactions_failed_total") == 0
    assert value(samples, "grctl_partitions_owned") == 4
    assert value(samples, "grctl_rebalances_total", kind="assign") >= 1
    assert value(samples, "grctl_worker_ready") == 1
    assert value(samples, "grctl_worker_loop_responsive") == 1
    # Runs by status come from the partitions' run indexes, RocksDB's memory from the budget.
    assert value(samples, "grctl_runs", workflow_type=t, status="completed") == 5
    assert value(samples, "grctl_runs", workflow_type=t, status="failed") == 2
    assert value(samples, "grctl_state_memory_limit_bytes") == 256 * 2**20
    assert 0 < value(samples, "grctl_state_memory_bytes") <= 256 * 2**20

    async def caught_up() -> Samples | None:
        # Lag comes from librdkafka's statistics (every 5 s): every partition, all processed.
        got = await loop.run_in_executor(None, scrape, port)
        lags = [got.get(("grctl_consumer_lag", (("partition", str(p)),))) for p in range(4)]
        return got if lags == [0, 0, 0, 0] else None

    last: list[Samples] = []

    async def caught_up_seen() -> Samples | None:
        got = await caught_up()
        if got is None:
            last[:] = [await loop.run_in_executor(None, scrape, port)]
        return got

    def lags_seen() -> object:
        return {k: v for k, v in (last[0] if last else {}).items() if k[0] == "grctl_consumer_lag"}

    assert await wait_until_async("every partition reports a consumer lag of 0", caught_up_seen, 20, seen=lags_seen)
    assert value(samples, "grctl_worker_info", worker_id=worker.worker_id, namespace=client.connection.namespace) == 1

    assert await loop.run_in_executor(None, status_of, port, "/ready") == (200, "ready\n")
    assert await loop.run_in_executor(None, status_of, port, "/live") == (200, "live\n")
    code, text = await loop.run_in_executor(None, status_of, port, "/nope")
    assert code == 404 and "/metrics" in text


async def test_ready_turns_false_when_the_worker_stops(workers, client: Client) -> None:
    worker = await workers.start([counted], metrics_port=0)
    assert worker.metrics_address is not None
    port = worker.metrics_address[1]
    loop = asyncio.get_running_loop()
    assert (await loop.run_in_executor(None, status_of, port, "/ready"))[0] == 200
    await worker.stop(shutdown_timeout=2)
    assert worker.metrics_address is None
    with pytest.raises(OSError):  # the port is released with the worker
        await loop.run_in_executor(None, status_of, port, "/ready")


async def test_a_metrics_port_in_use_is_a_clear_error(connection, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = Worker([counted], connection, state_dir=tmp_path / "w", metrics_port=port, metrics_host="127.0.0.1")
        with pytest.raises(MetricsPortInUseError) as raised:
            await worker.run()
    err = raised.value
    assert err.port == port and err.host == "127.0.0.1"
    assert f"127.0.0.1:{port}" in str(err) and "metrics-port" in str(err)
    # The state folder was released: another worker can use it.
    again = Worker([counted], connection, state_dir=tmp_path / "w", metrics_port=0, metrics_host="127.0.0.1")
    task = asyncio.create_task(again.run())
    await again.wait_until_ready(60)
    await again.stop(shutdown_timeout=1)
    await task


async def test_schedule_metrics_count_ticks_and_their_lateness(workers, client: Client) -> None:
    """Issue 27: ticks fired and missed, and the lateness histogram (fired time - tick time)."""
    worker = await workers.start([counted], metrics_port=0)
    assert worker.metrics_address is not None
    port = worker.metrics_address[1]
    loop = asyncio.get_running_loop()
    # Each run ends within the second: every tick fires (overlap skip never skips here).
    await client.create_schedule("fires", workflow_type="Counted", interval="1s", input={"mode": "ok"})

    async def counted_ticks() -> Samples | None:
        samples = await loop.run_in_executor(None, scrape, port)
        fired = value(samples, "grctl_schedule_ticks_fired_total")
        return samples if fired >= 3 else None

    samples = await wait_until_async("three ticks counted", counted_ticks, 30)
    fired = value(samples, "grctl_schedule_ticks_fired_total")
    assert value(samples, "grctl_schedule_tick_lateness_seconds_count") == fired
    assert value(samples, "grctl_schedule_tick_lateness_seconds_bucket", le="+Inf") == fired
    # Lateness is the firing's delay after the tick: well under a second on an idle worker.
    assert value(samples, "grctl_schedule_tick_lateness_seconds_sum") / fired < 1.0
    assert value(samples, "grctl_schedule_ticks_missed_total") == 0
    await client.get_schedule_handle("fires").pause()
