"""Which modules an import loads (STYLE.md §1, issue "One room per concern").

Each check runs in a fresh interpreter: this process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("rocksdict", "grctl.worker", "grctl.state")
"""What driving runs must never load: the worker, its RocksDB state, and rocksdict."""


def loaded_after(code: str) -> set[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import grctl.workflow",
        "from grctl.workflow import Directive, HandlerConfig, Workflow, WorkflowHandle",
        "import grctl.client",
        "from grctl.client import Client, Connection, WorkflowHandle",
        "import grctl.client.client",
        "import grctl; grctl.Client; grctl.Connection; grctl.WorkflowHandle; grctl.Workflow",
        "import grctl; grctl.RunInfo; grctl.HistoryEvent; grctl.CodecRegistry; grctl.WorkflowError",
        "import grctl.codec",
        "import grctl.models",
    ],
)
def test_driving_runs_loads_no_worker(code: str) -> None:
    loaded = loaded_after(code)
    assert not {m for m in loaded if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY))}


@pytest.mark.parametrize(
    "code",
    [
        "import grctl",
        "import grctl.workflow",
        "from grctl.workflow import Workflow, WorkflowHandle",
        "import grctl.models",
    ],
)
def test_authoring_loads_no_kafka_client(code: str) -> None:
    loaded = loaded_after(code)
    assert "confluent_kafka" not in loaded
    assert not {m for m in loaded if m.startswith(("grctl.kafka", "grctl.client.client", "grctl.client._io"))}


def test_worker_loads_on_first_access() -> None:
    loaded = loaded_after("import grctl\nassert 'grctl.worker' not in sys.modules\ngrctl.Worker")
    assert {"grctl.worker.worker", "rocksdict"} <= loaded


def test_import_grctl_alone_loads_nothing_of_its_exports() -> None:
    loaded = loaded_after("import grctl")
    assert {m for m in loaded if m.startswith("grctl")} == {"grctl", "grctl._lazy"}


def test_tracing_off_loads_no_opentelemetry() -> None:
    """The `otel` extra costs nothing until `grctl.tracing.enable()` is called."""
    loaded = loaded_after(
        "import grctl.worker.worker, grctl.client.client, grctl.tracing, grctl.cli.main\n"
        "assert not grctl.tracing.enabled() and grctl.tracing.current_traceparent() is None"
    )
    assert not {m for m in loaded if m.startswith("opentelemetry")}
