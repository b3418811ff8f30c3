"""Local Kafka start times and the cost of small Kafka transactions, per client.

Measures, against a broker of its own (fresh temporary home, cluster ``bench``):

a. first start: jar fetch + storage format + JVM start + readiness;
b. warm start: jars cached, storage formatted;
c. one transaction (begin, produce 1 record, commit), p50/p99 over N iterations, for
   confluent-kafka's plain Producer (librdkafka defaults, and retry.backoff.ms=5) and aiokafka;
d. consume-transform-produce: per-batch cost (consume B records, produce B, send offsets,
   commit) for both clients.

Prints a table and writes JSON to benchmarks/results/txn_latency.json.

    python benchmarks/txn_latency.py [--iterations 200] [--cold-maven]

``--cold-maven`` points Maven at an empty local repository, so (a) includes downloading the
jars from Maven Central (about 45 MB) rather than copying them from ~/.m2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiokafka
import confluent_kafka
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from grctl.dev import kafka as local_kafka

RESULTS = Path(__file__).resolve().parent / "results" / "txn_latency.json"
CLUSTER = "bench"
WARMUP = 10


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "n": len(ms),
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(ms[-1], 2),
    }


def create_topic(admin: AdminClient, name: str) -> str:
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    return name


def fill(bootstrap: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, key=f"k{i}".encode(), value=b"x" * 100)
    assert producer.flush(30) == 0


# --------------------------------------------------------------------------------------------
# (c) one small transaction


def confluent_txn(bootstrap: str, topic: str, iterations: int, extra: dict[str, Any]) -> list[float]:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-txn", "linger.ms": 0, **extra})
    producer.init_transactions(30)
    samples = []
    for i in range(WARMUP + iterations):
        t0 = time.perf_counter()
        producer.begin_transaction()
        producer.produce(topic, value=b"x" * 100)
        producer.commit_transaction(30)
        if i >= WARMUP:
            samples.append(time.perf_counter() - t0)
    return samples


async def aiokafka_txn(bootstrap: str, topic: str, iterations: int) -> list[float]:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-txn")
    await producer.start()
    samples = []
    try:
        for i in range(WARMUP + iterations):
            t0 = time.perf_counter()
            async with producer.transaction():
                await producer.send(topic, value=b"x" * 100)
            if i >= WARMUP:
                samples.append(time.perf_counter() - t0)
    finally:
        await producer.stop()
    return samples


# --------------------------------------------------------------------------------------------
# (d) consume-transform-produce


def confluent_ctp(
    bootstrap: str, src: str, dst: str, batches: int, size: int, extra: dict[str, Any]
) -> tuple[list[float], float]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{src}-group",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{src}-txn", "linger.ms": 1, **extra})
    producer.init_transactions(30)
    consumer.subscribe([src])
    samples: list[float] = []
    done = 0
    started = time.perf_counter()
    try:
        while done < batches * size:
            batch = consumer.consume(num_messages=size, timeout=1.0)
            if not batch:
                continue
            t0 = time.perf_counter()
            producer.begin_transaction()
            for msg in batch:
                producer.produce(dst, key=msg.key(), value=msg.value())
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(30)
            samples.append(time.perf_counter() - t0)
            done += len(batch)
    finally:
        consumer.close()
    return samples, done / (time.perf_counter() - started)


async def aiokafka_ctp(bootstrap: str, src: str, dst: str, batches: int, size: int) -> tuple[list[float], float]:
    group = f"{src}-group"
    consumer = aiokafka.AIOKafkaConsumer(
        src,
        bootstrap_servers=bootstrap,
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{src}-txn")
    await producer.start()
    await consumer.start()
    samples: list[float] = []
    done = 0
    started = time.perf_counter()
    try:
        while done < batches * size:
            batch = await consumer.getmany(timeout_ms=1000, max_records=size)
            if not batch:
                continue
            t0 = time.perf_counter()
            async with producer.transaction():
                offsets = {}
                for tp, msgs in batch.items():
                    for msg in msgs:
                        await producer.send(dst, key=msg.key, value=msg.value)
                    offsets[tp] = msgs[-1].offset + 1
                    done += len(msgs)
                await producer.send_offsets_to_transaction(offsets, group)
            samples.append(time.perf_counter() - t0)
    finally:
        await consumer.stop()
        await producer.stop()
    return samples, done / (time.perf_counter() - started)


# --------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--port", type=int, default=49092)
    parser.add_argument("--cold-maven", action="store_true", help="empty Maven repository: real download")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="grctl-bench-") as tmp:
        home = Path(tmp) / "home"
        if args.cold_maven:
            os.environ["MAVEN_OPTS"] = f"{os.environ.get('MAVEN_OPTS', '')} -Dmaven.repo.local={tmp}/m2".strip()
        try:
            results = run(args, home)
        finally:
            local_kafka.stop(CLUSTER, home=home)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"\nwritten to {args.output}")


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    _, fetch_s = timed(lambda: local_kafka.ensure_jars(home))
    first, first_start_s = timed(lambda: local_kafka.ensure_running(1, args.port, name=CLUSTER, home=home))
    bootstrap = first.bootstrap
    _, stop_s = timed(lambda: local_kafka.stop(CLUSTER, home=home))
    _, warm_start_s = timed(lambda: local_kafka.ensure_running(1, args.port, name=CLUSTER, home=home))
    _, running_s = timed(lambda: local_kafka.ensure_running(1, args.port, name=CLUSTER, home=home))

    admin = AdminClient({"bootstrap.servers": bootstrap})
    n = args.iterations
    txn: dict[str, Any] = {}
    txn["confluent (defaults)"] = percentiles(confluent_txn(bootstrap, create_topic(admin, "txn-c1"), n, {}))
    txn["confluent (retry.backoff.ms=5)"] = percentiles(
        confluent_txn(bootstrap, create_topic(admin, "txn-c2"), n, {"retry.backoff.ms": 5})
    )
    txn["aiokafka"] = percentiles(asyncio.run(aiokafka_txn(bootstrap, create_topic(admin, "txn-a1"), n)))

    ctp: dict[str, Any] = {}
    total = args.batches * args.batch_size
    for label, make in (
        (
            "confluent (defaults)",
            lambda s, d: confluent_ctp(bootstrap, s, d, args.batches, args.batch_size, {}),
        ),
        (
            "confluent (retry.backoff.ms=5)",
            lambda s, d: confluent_ctp(bootstrap, s, d, args.batches, args.batch_size, {"retry.backoff.ms": 5}),
        ),
        (
            "aiokafka",
            lambda s, d: asyncio.run(aiokafka_ctp(bootstrap, s, d, args.batches, args.batch_size)),
        ),
    ):
        slug = "".join(c for c in label if c.isalnum())[:20].lower()
        src, dst = create_topic(admin, f"ctp-{slug}-in"), create_topic(admin, f"ctp-{slug}-out")
        fill(bootstrap, src, total)
        samples, rate = make(src, dst)
        ctp[label] = {**percentiles(samples), "records_per_s": round(rate), "batch_size": args.batch_size}

    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {
            "kafka": local_kafka.kafka_version(),
            "confluent_kafka": confluent_kafka.__version__,
            "librdkafka": confluent_kafka.libversion()[0],
            "aiokafka": aiokafka.__version__,
        },
        "maven_repository": "empty (download)" if args.cold_maven else "~/.m2 as found",
        "start_s": {
            "jar_fetch": round(fetch_s, 2),
            "first_start_after_fetch": round(first_start_s, 2),
            "first_start_total": round(fetch_s + first_start_s, 2),
            "stop": round(stop_s, 2),
            "warm_start": round(warm_start_s, 2),
            "already_running": round(running_s, 3),
        },
        "one_record_transaction": txn,
        "consume_transform_produce_per_batch": ctp,
    }


def print_table(results: dict[str, Any]) -> None:
    s = results["start_s"]
    print(f"\nKafka {results['versions']['kafka']} local broker, {results['machine']['cpus']} CPUs")
    print(f"  jar fetch ({results['maven_repository']}): {s['jar_fetch']:.2f} s")
    print(f"  first start (format + JVM + ready):     {s['first_start_after_fetch']:.2f} s")
    print(f"  first start total:                       {s['first_start_total']:.2f} s")
    print(f"  stop:                                    {s['stop']:.2f} s")
    print(f"  warm start:                              {s['warm_start']:.2f} s")
    print(f"  start when already running:              {s['already_running']:.3f} s")
    print(f"\n{'one-record transaction':34} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for label, p in results["one_record_transaction"].items():
        print(f"  {label:32} {p['p50_ms']:8.2f} {p['p99_ms']:8.2f} {p['mean_ms']:8.2f}")
    ctp = results["consume_transform_produce_per_batch"]
    size = next(iter(ctp.values()))["batch_size"] if ctp else 0
    print(f"\n{f'consume-transform-produce, {size}/batch':34} {'p50 ms':>8} {'p99 ms':>8} {'rec/s':>8}")
    for label, p in ctp.items():
        print(f"  {label:32} {p['p50_ms']:8.2f} {p['p99_ms']:8.2f} {p['records_per_s']:8d}")


if __name__ == "__main__":
    main()
