"""A rolling deploy of new workflow code over real worker processes while runs are in flight (issue 26).

2 `grctl worker` processes serve v1 (`tests.crash.deploy_code:V1`) while about two thousand
runs are in flight: waiting for an event, sleeping on durable timers, in the middle of chains,
awaiting children, and auto-upgrading `Memo` runs. Before the deploy, `grctl deploy check`
refuses the v2-only code (naming the version the runs need) and passes v1+v2. The workers are
replaced one at a time by workers serving v1 and v2; a worker serving only v2 joins for a while
and every waiting run gets its event: the v1 runs whose partition it owns park (visible in
`grctl workflow versions`) and resume once it leaves. Then:

- every pinned run ends with the result of the code it started on, every `Memo` with its patch
  branch on v2; no run or step failed, none is left;
- `grctl workflow versions` reports 0 open v1 runs, `grctl deploy check` now passes the v2-only
  code, the workers are replaced by v2-only ones, new runs complete, and `grctl verify` is clean.

`GRCTL_TEST_DEPLOY_RUNS` sets the number of `Deal` runs (default 1,600; the Memo runs are an
eighth of it).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from grctl import Client, Connection
from grctl.client.verify import verify_namespace
from grctl.kafka.topics import admin_client, delete_namespace
from tests.cli.conftest import WorkerProcess, start_worker
from tests.support.wait import wait_until_async

pytestmark = [pytest.mark.kafka, pytest.mark.crash]

REPO = Path(__file__).resolve().parents[2]
APP = "tests.crash.deploy_code"
DEALS = int(os.environ.get("GRCTL_TEST_DEPLOY_RUNS", "1600"))
KINDS = ("event", "sleep", "chain", "child")
RESULT_TIMEOUT_S = 300


async def grctl(namespace: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "grctl", "-n", namespace, *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode or 0, out.decode()


def expected_deal(kind: str, version: int, wf_id: str) -> dict[str, Any]:
    middle = {
        "event": ["confirm:ops"],
        "sleep": ["nap"],
        "chain": ["link5", "link4", "link3", "link2", "link1"],
        "child": ["child:42"],
    }[kind]
    if version == 1:
        return {"version": 1, "trail": ["start@v1", *middle, "settle"]}
    return {"version": 2, "trail": ["start@v2", *middle, "close"], "audit": f"audited:{wf_id}"}


async def test_rolling_deploy_of_a_new_version_with_runs_in_flight(kafka_bootstrap: str, tmp_path: Path) -> None:
    ns = f"deploy-{str(ULID()).lower()[-10:]}"
    conn = await Connection.connect(kafka_bootstrap, ns, partitions=4)
    client = Client(conn)
    workers: dict[str, WorkerProcess] = {}

    def worker(name: str, code: str) -> WorkerProcess:
        workers[name] = start_worker(ns, tmp_path / name, f"{APP}:{code}")
        return workers[name]

    async def start_in(name: str, code: str) -> WorkerProcess:
        return await asyncio.to_thread(worker, name, code)

    async def stop(name: str) -> None:
        code = await asyncio.to_thread(workers.pop(name).stop)
        assert code == 0, f"worker {name} exited with {code}"

    async def versions() -> dict[tuple[str, int], Any]:
        return {(v.workflow_type, v.version): v for v in await client.workflow_versions()}

    try:
        await start_in("a", "V1")
        await start_in("b", "V1")
        # About two thousand runs in flight on v1.
        sem = asyncio.Semaphore(200)

        async def start_deal(i: int) -> tuple[str, str, Any]:
            kind = KINDS[i % len(KINDS)]
            async with sem:
                handle = await client.start_workflow("Deal", f"deal-{i}", {"kind": kind})
            return f"deal-{i}", kind, handle

        async def start_memo(i: int) -> tuple[str, Any]:
            async with sem:
                return f"memo-{i}", await client.start_workflow("Memo", f"memo-{i}", None)

        deals = await asyncio.gather(*(start_deal(i) for i in range(DEALS)))
        memos = await asyncio.gather(*(start_memo(i) for i in range(DEALS // 8)))
        in_flight = await versions()
        assert in_flight[("Deal", 1)].open >= DEALS // 2, in_flight  # the chains and children take seconds

        # The check before the deploy: v2 alone strands the v1 runs; v1 and v2 together serve them.
        code, text = await grctl(ns, "deploy", "check", "--app", f"{APP}:V2", "--no-replay")
        assert code == 1, text
        assert "Deal v1: the version is not served" in text and "run(s) need it" in text
        code, text = await grctl(ns, "deploy", "check", "--app", f"{APP}:V1V2", "--json")
        assert code == 0, text
        report = json.loads(text)
        assert report["ok"] and report["replay"]["diverged"] == [], report["replay"]
        print(f"deploy check replayed {report['replay']['runs']} runs at {report['replay']['runs_per_second']} runs/s")

        # The rolling deploy, one worker at a time; new runs start meanwhile.
        await stop("a")
        await start_in("c", "V1V2")
        late = [await client.start_workflow("Deal", f"late-{i}", {"kind": "event"}) for i in range(40)]
        await stop("b")
        await start_in("d", "V1V2")
        newer = [await client.start_workflow("Deal", f"new-{i}", {"kind": "event"}) for i in range(40)]

        # A worker with only v2 joins, and every waiting run gets its event: the v1 runs whose
        # partition it owns park (visibly), and resume once it leaves.
        await start_in("e", "V2")
        for wf_id, kind, _ in deals:
            if kind == "event":
                await client.send_event(wf_id, "confirm", {"by": "ops"})
        for handle in [*late, *newer]:
            await client.send_event(handle.run_info.wf_id, "confirm", {"by": "ops"})

        async def parked() -> bool:
            return (await versions())[("Deal", 1)].awaiting_code > 0

        await wait_until_async("a v1 run parked on the v2-only worker", parked, timeout=60, interval=0.5)
        code, text = await grctl(ns, "workflow", "versions", "Deal")
        assert code == 0 and "parked awaiting code" in text, text
        await stop("e")
        for wf_id, _ in memos:
            await client.send_event(wf_id, "note", {"text": "seen"})

        # Each run ends with the result of the code it started on (or its patch branch).
        results = await asyncio.gather(*(h.result(timeout=RESULT_TIMEOUT_S) for _, _, h in deals))
        started_on: Counter[int] = Counter()
        for (wf_id, kind, handle), result in zip(deals, results, strict=True):
            assert result == expected_deal(kind, handle.run_info.version, wf_id), (wf_id, result)
            started_on[handle.run_info.version] += 1
        assert started_on == {1: DEALS}
        for handle in [*late, *newer]:
            wf_id = handle.run_info.wf_id
            assert await handle.result(timeout=RESULT_TIMEOUT_S) == expected_deal(
                "event", handle.run_info.version, wf_id
            )
        assert {h.run_info.version for h in newer} == {2}  # both workers serve v2 by then
        for wf_id, handle in memos:
            assert await handle.result(timeout=RESULT_TIMEOUT_S) == {
                "trail": ["start@v1", "seen", "stamp"], "filed_on": 2
            }, wf_id  # fmt: skip

        # Nothing failed, nothing is left: v1 can go.
        page = await client.list_workflows(counts=True, limit=1)
        assert not page.unavailable_partitions
        statuses = {status: sum(by_type.values()) for status, by_type in (page.counts or {}).items()}
        assert statuses == {"completed": DEALS + DEALS // 4 + DEALS // 8 + 80}, statuses
        drained = await versions()
        assert drained[("Deal", 1)].open == 0 and drained[("Memo", 1)].open == 0, drained
        code, text = await grctl(ns, "workflow", "versions", "Deal")
        assert "Deal v1: 0 runs open — its code can be removed" in text, text
        code, text = await grctl(ns, "deploy", "check", "--app", f"{APP}:V2")
        assert code == 0, text

        # The v1 code removed: v2-only workers, new runs complete.
        await stop("c")
        await start_in("f", "V2")
        await stop("d")
        await start_in("g", "V2")
        last = [await client.start_workflow("Deal", f"last-{i}", {"kind": k}) for i, k in enumerate(KINDS)]
        await client.send_event("last-0", "confirm", {"by": "ops"})
        for i, handle in enumerate(last):
            assert await handle.result(timeout=RESULT_TIMEOUT_S) == expected_deal(KINDS[i], 2, f"last-{i}")

        report = await asyncio.to_thread(verify_namespace, conn)
        assert report.clean, report.to_dict()
    finally:
        await client.close()
        for w in workers.values():
            w.stop()
        await conn.close()
        delete_namespace(admin_client(conn.client_config()), conn.topics, timeout=10)
