"""Fixtures of the CLI tests: a runner, and a namespace served by a real ``grctl worker`` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from ulid import ULID

from grctl.cli.main import app

REPO = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT_S = 90


@dataclass
class Run:
    """What one CLI invocation did."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def jsonl(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def invoke(*args: str, input: str | None = None) -> Run:
    """Run ``grctl ARGS...`` in-process with Typer's test runner."""
    result = CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli() -> Any:
    """`cli("workflow", "list", ...)` → `Run` (exit code, stdout, stderr)."""
    return invoke


@dataclass
class WorkerProcess:
    """A ``grctl worker`` subprocess and the lines it logged."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    pumper: threading.Thread | None = None

    def pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if " ready" in line:
                self.ready.set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if self.pumper is not None:
            self.pumper.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


def start_worker(
    namespace: str, state_dir: Path, app_spec: str = "tests.cli.flows:WORKFLOWS", global_args: Sequence[str] = ()
) -> WorkerProcess:
    """Start ``grctl [GLOBAL_ARGS] -n NAMESPACE worker --app APP`` and wait until it has joined its group."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "grctl.cli.main", *global_args, "-n", namespace, "worker", "--app", app_spec),
            *("--partitions", "4", "--state-dir", str(state_dir), "--shutdown-timeout", "2"),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    worker = WorkerProcess(proc)
    worker.pumper = threading.Thread(target=worker.pump, daemon=True)
    worker.pumper.start()
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while not worker.ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            worker.stop(signal.SIGKILL)
            raise AssertionError("grctl worker did not get ready:\n" + "\n".join(worker.lines))
    return worker


@dataclass
class ServedNamespace:
    """A namespace with a running worker of `tests.cli.flows`."""

    name: str
    worker: WorkerProcess

    def new_id(self, prefix: str = "wf") -> str:
        return f"{prefix}-{str(ULID()).lower()}"


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNamespace]:
    """A fresh namespace (created with ``grctl namespace create``) served by a ``grctl worker`` process."""
    name = f"cli-{str(ULID()).lower()[-12:]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRCTL_NAMESPACE", name)
        created = invoke("namespace", "create", "--partitions", "4", "--json")
        assert created.exit_code == 0, created.stderr
        worker = start_worker(name, tmp_path_factory.mktemp("cli-worker"))
        try:
            yield ServedNamespace(name, worker)
        finally:
            code = worker.stop()
            assert code == 0, "\n".join(worker.lines)
            deleted = invoke("namespace", "delete", name, "--yes")
            assert deleted.exit_code == 0, deleted.stderr
