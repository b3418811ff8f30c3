"""Share groups (KIP-932) against a classic consumer group for a task queue (issue 28's evaluation).

Usage: python -m benchmarks.share_groups [HOST:PORT] [--out benchmarks/results/share_groups.json]

A queue topic of 2 partitions holds 1,000 records produced in transactions (as the engine
writes task requests), plus 200 in a transaction that is aborted. Four consumers, each handling
one record at a time with 5 ms of "work", drain it:

- classic: a consumer group (`read_committed`), offsets committed per batch. Two of the four
  consumers own a partition; two idle.
- share: a share group (confluent-kafka's `ShareConsumer`, explicit acknowledgement of each
  record). Every consumer may take records of every partition.

Reported per mode: records/s, how many of the 4 consumers got records, whether a record of the
aborted transaction was delivered (a share group reads `read_uncommitted` unless the group's
`share.isolation.level` is set), and duplicates.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, ShareConsumer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # untyped re-exports
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from ulid import ULID

RECORDS = 1000
ABORTED = 200
CONSUMERS = 4
WORK_S = 0.005
PARTITIONS = 2


def produce(servers: str, topic: str) -> None:
    p = Producer({"bootstrap.servers": servers, "transactional.id": f"bench-{ULID()}"})
    p.init_transactions(30)
    for batch in range(0, RECORDS, 100):
        p.begin_transaction()
        for i in range(batch, batch + 100):
            p.produce(topic, json.dumps({"i": i}).encode(), key=str(i).encode())
        p.commit_transaction(30)
    p.begin_transaction()
    for i in range(ABORTED):
        p.produce(topic, json.dumps({"aborted": i}).encode(), key=f"a{i}".encode())
    p.flush(30)
    p.abort_transaction(30)


def drain(make: Any, kind: str) -> dict[str, Any]:
    seen: Counter[str] = Counter()
    per_consumer = [0] * CONSUMERS
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def run(idx: int) -> None:
        try:
            c = make(idx)
        except KafkaException as exc:
            errors.append(str(exc))
            return
        try:
            while not stop.is_set():
                msgs = c.poll(0.2) if kind == "share" else c.consume(10, 0.2)
                for m in msgs or []:
                    if m.error() is not None:
                        errors.append(str(m.error()))
                        continue
                    time.sleep(WORK_S)
                    with lock:
                        seen[m.value().decode()] += 1
                        per_consumer[idx] += 1
                    if kind == "share":
                        c.acknowledge(m)
                if msgs:
                    if kind == "share":
                        c.commit_sync()
                    else:
                        c.commit(asynchronous=False)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CONSUMERS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with lock:
            done = sum(1 for k in seen if '"i"' in k) >= RECORDS
        if done or (errors and not any(t.is_alive() for t in threads)):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join(30)
    committed = sum(1 for k in seen if '"i"' in k)
    return {
        "records": committed,
        "seconds": round(elapsed, 2),
        "records_per_s": round(committed / elapsed, 1),
        "consumers_with_records": sum(1 for n in per_consumer if n),
        "aborted_delivered": sum(n for k, n in seen.items() if "aborted" in k),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "errors": errors[:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("servers", nargs="?", default=os.environ.get("GRCTL_KAFKA_SERVERS", "127.0.0.1:9092"))
    ap.add_argument("--out")
    args = ap.parse_args()
    servers = args.servers
    admin = AdminClient({"bootstrap.servers": servers})
    out: dict[str, Any] = {"records": RECORDS, "aborted": ABORTED, "consumers": CONSUMERS, "partitions": PARTITIONS,
                           "work_ms": WORK_S * 1000}  # fmt: skip
    for kind in ("classic", "share", "share_read_committed"):
        topic = f"bench-queue-{kind}-{str(ULID()).lower()[-8:]}"
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)])[topic].result(30)
        produce(servers, topic)
        group = f"bench-{kind}-{str(ULID()).lower()[-8:]}"
        if kind == "classic":

            def make(_i: int, topic: str = topic, group: str = group) -> Any:
                c = Consumer({"bootstrap.servers": servers, "group.id": group, "isolation.level": "read_committed",
                              "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
                c.subscribe([topic])
                return c

        else:
            settings = {"share.auto.offset.reset": "earliest"}
            if kind == "share_read_committed":
                settings["share.isolation.level"] = "read_committed"
            entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in settings.items()]
            res = ConfigResource("group", group, incremental_configs=entries)
            try:
                admin.incremental_alter_configs([res])[res].result(30)
            except KafkaException as exc:
                out[f"{kind}_group_config_error"] = str(exc)

            def make(_i: int, topic: str = topic, group: str = group) -> Any:
                c = ShareConsumer({"bootstrap.servers": servers, "group.id": group,
                                   "share.acknowledgement.mode": "explicit"})  # fmt: skip
                c.subscribe([topic])
                return c

        out[kind] = drain(make, "classic" if kind == "classic" else "share")
        print(kind, out[kind], flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
