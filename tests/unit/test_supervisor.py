"""The worker supervisor (`grctl worker --processes N`): restarts, signal forwarding, the merged endpoint.

Real child processes (small Python scripts instead of workers: no broker needed here; the crash
test tests/crash/test_supervisor_crash.py runs real workers under the supervisor).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from grctl.errors import InvalidArgumentError
from grctl.worker import supervisor as sup
from grctl.worker.supervisor import (
    Supervisor,
    child_command,
    free_port,
    merge_metrics,
    resolve_processes,
    usable_cores,
)
from tests.support.wait import wait_until

#: A child: writes `<dir>/<index>.<pid>` when it starts; on SIGTERM writes `<pid>.stopped` and
#: exits 0 (unless `stubborn`: it ignores SIGTERM).
CHILD = """
import os, signal, sys
folder, index, stubborn = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
def stop(signum, frame):
    open(os.path.join(folder, f"{os.getpid()}.stopped"), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if stubborn else stop)
open(os.path.join(folder, f"{index}.{os.getpid()}"), "w").close()
while True:
    signal.pause()
"""


def started(folder: Path) -> list[tuple[int, int]]:
    """(index, pid) of every child start, from the files the children wrote."""
    return sorted(
        (int(p.name.split(".")[0]), int(p.name.split(".")[1])) for p in folder.iterdir() if "stopped" not in p.name
    )


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., tuple[Supervisor, threading.Thread, list[int]]]]:
    """Start a supervisor of script children in a thread; stopped at the end whatever happened."""
    made: list[tuple[Supervisor, threading.Thread]] = []

    def start(n: int = 2, *, stubborn: bool = False, **kw: object) -> tuple[Supervisor, threading.Thread, list[int]]:
        def argv(index: int, _port: int) -> list[str]:
            return [sys.executable, "-c", CHILD, str(tmp_path), str(index), "1" if stubborn else "0"]

        s = Supervisor(n, argv, **kw)  # type: ignore[arg-type]
        codes: list[int] = []
        t = threading.Thread(target=lambda: codes.append(s.run(install_signal_handlers=False)), daemon=True)
        t.start()
        made.append((s, t))
        return s, t, codes

    yield start
    for s, t in made:
        if t.is_alive():
            s.stop()
            s.stop()
            t.join(30)
        for pid in s.pids:
            if pid is not None:
                os.kill(pid, signal.SIGKILL)


def test_a_child_killed_is_restarted_and_a_stop_is_forwarded(
    running: Callable[..., tuple[Supervisor, threading.Thread, list[int]]], tmp_path: Path
) -> None:
    s, t, codes = running(2)
    first = wait_until("both children started", lambda: len(started(tmp_path)) == 2 and started(tmp_path), 30)
    victim_index, victim = first[0]
    os.kill(victim, signal.SIGKILL)
    after = wait_until(
        "the killed child was started again", lambda: len(started(tmp_path)) == 3 and started(tmp_path), 30
    )
    (new_index, new_pid) = next(e for e in after if e not in first)
    assert new_index == victim_index and new_pid != victim and s.restarts == 1
    assert s.pids[victim_index] == new_pid
    s.stop()
    t.join(30)
    assert not t.is_alive() and codes == [0]
    # SIGTERM reached both children running at the stop: each wrote its file and exited 0.
    assert {p.name for p in tmp_path.glob("*.stopped")} == {f"{pid}.stopped" for _i, pid in after if pid != victim}


def test_a_child_that_ignores_the_stop_is_killed_after_the_grace(
    running: Callable[..., tuple[Supervisor, threading.Thread, list[int]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sup, "STOP_GRACE_S", 0.5)
    s, t, codes = running(1, stubborn=True, shutdown_timeout=0.0)
    wait_until("the child started", lambda: started(tmp_path), 30)
    s.stop()
    t.join(30)
    assert not t.is_alive() and codes == [1]  # not a clean stop: it had to be killed
    assert s.pids == [None]


def test_the_endpoint_serves_its_own_metrics_and_is_not_ready_while_a_child_is_not(
    running: Callable[..., tuple[Supervisor, threading.Thread, list[int]]], tmp_path: Path
) -> None:
    port = free_port()
    _s, _t, _codes = running(2, metrics_port=port, metrics_host="127.0.0.1")
    wait_until("both children started", lambda: len(started(tmp_path)) == 2, 30)

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    code, text = wait_until("the endpoint answers", lambda: _try(lambda: get("/metrics")), 30)
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["grctl_worker_processes"].samples[0].value == 2
    assert {x.labels["process"] for x in families["grctl_worker_process_restarts"].samples} == {"0", "1"}
    # These children serve no endpoint: not ready, and it says which.
    code, text = get("/ready")
    assert code == 503 and "process 0" in text and "process 1" in text
    assert get("/live")[0] == 200 and get("/nope")[0] == 404


def _try(call: Callable[[], tuple[int, str]]) -> tuple[int, str] | None:
    try:
        return call()
    except OSError:
        return None


def test_metrics_of_processes_are_merged_by_family_with_a_process_label() -> None:
    one = (
        "# HELP grctl_steps_total Steps.\n# TYPE grctl_steps_total counter\ngrctl_steps_total 3.0\n"
        "# HELP grctl_lat_seconds L.\n# TYPE grctl_lat_seconds histogram\n"
        'grctl_lat_seconds_bucket{le="1.0"} 1.0\ngrctl_lat_seconds_bucket{le="+Inf"} 2.0\n'
        "grctl_lat_seconds_count 2.0\ngrctl_lat_seconds_sum 1.5\n"
    )
    two = one.replace("grctl_steps_total 3.0", "grctl_steps_total 4.0")
    text = merge_metrics({0: one, 1: two}).decode()
    assert text.count("# TYPE grctl_steps_total counter") == 1  # one family, not one per process
    families = {f.name: f for f in text_string_to_metric_families(text)}
    steps = {x.labels["process"]: x.value for x in families["grctl_steps"].samples}
    assert steps == {"0": 3.0, "1": 4.0}
    buckets = [x for x in families["grctl_lat_seconds"].samples if x.name.endswith("_bucket")]
    assert sorted((x.labels["process"], x.labels["le"]) for x in buckets) == [
        ("0", "+Inf"), ("0", "1.0"), ("1", "+Inf"), ("1", "1.0"),
    ]  # fmt: skip


def test_processes_argument() -> None:
    assert resolve_processes("3") == 3 and resolve_processes(2) == 2
    assert resolve_processes("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "many", ""):
        with pytest.raises(InvalidArgumentError, match="--processes"):
            resolve_processes(bad)


def test_auto_counts_the_cgroup_quota(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == cores
    cpu_max.write_text("150000 100000\n")  # 1.5 cores: 2 processes (at most the affinity)
    assert usable_cores(cpu_max) == min(cores, 2)
    cpu_max.write_text("50000 100000\n")
    assert usable_cores(cpu_max) == 1
    assert usable_cores(tmp_path / "missing") == cores


def test_children_do_not_inherit_the_processes_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRCTL_WORKER_PROCESSES", "4")
    s = Supervisor(1, lambda _i, _p: ["true"])
    assert "GRCTL_WORKER_PROCESSES" not in s._env and s._env["GRCTL_SUPERVISOR_PID"] == str(os.getpid())


def test_each_child_gets_its_own_state_slot_and_loopback_endpoint(tmp_path: Path) -> None:
    argv = child_command(["--servers", "k:9092", "-n", "orders"], ["--app", "m:W"], tmp_path, 30.0)(1, 4567)
    assert argv[:3] == [sys.executable, "-m", "grctl"]
    assert argv[3:8] == ["--servers", "k:9092", "-n", "orders", "worker"]
    assert argv[argv.index("--state-dir") + 1] == str(tmp_path / "p1")
    assert argv[argv.index("--metrics-port") + 1] == "4567"
    assert argv[argv.index("--metrics-host") + 1] == "127.0.0.1"
    assert "--state-dir" not in child_command([], ["--app", "m:W"], None, 30.0)(0, 1)
