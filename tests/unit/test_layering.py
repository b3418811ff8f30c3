"""Which modules an import loads (STYLE.md §1, issue "One room per concern").

Each check runs in a fresh interpreter: this process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HEAVY = ("rocksdict", "grctl.worker", "grctl.state")
"""What driving runs must never load: the worker, its RocksDB state, and rocksdict."""


def loaded_after(code: str) -> set[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT
    )
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


ENGINE = ("grctl.worker", "grctl.state", "rocksdict", "confluent_kafka")
"""What writing a workflow must never load (issue 25): the worker, its state, RocksDB, the Kafka client."""

AUTHORING_NAMES = (
    "from grctl import (ChildOutcome, Context, Directive, ErrorDetails, GrctlError, InvalidArgumentError, "
    "NonDeterminismError, RetryPolicy, RunInfo, RunStatus, StoreKeyNotFoundError, Workflow, WorkflowError, "
    "WorkflowHandle, task)\n"
    "from grctl.workflow import (ChildHandle, ChildOutcome, Context, Directive, HandlerConfig, NextBuilder, "
    "QueryContext, RetryPolicy, RunInfo, Store, StoreKeyNotFoundError, Workflow, WorkflowHandle, task)\n"
    "from grctl.workflow.emit import EmitBuffer\n"
    "from grctl.workflow.runtime import StepPort, StepRuntime, get_step_runtime\n"
    "from grctl.errors import NotAvailableInStepError, PayloadTooLargeError, WorkflowNotFoundError"
)


@pytest.mark.parametrize(
    "code",
    [AUTHORING_NAMES, f"{AUTHORING_NAMES}\nimport examples.workflows"],
    ids=["every authoring name", "and a module of workflows"],
)
def test_writing_a_workflow_loads_no_engine(code: str) -> None:
    loaded = loaded_after(code)
    assert not {m for m in loaded if m in ENGINE or m.startswith(tuple(f"{e}." for e in ENGINE))}


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


def test_the_task_decorator_stays_a_function_whatever_is_imported_first() -> None:
    """`grctl.worker.task` is both a compat module and the decorator `grctl.worker` exports:
    importing the module after the package must not turn the package's `task` into it."""
    code = (
        "import types, grctl.worker, grctl.worker.task\n"
        "from grctl.worker import task\n"
        "assert callable(task) and not isinstance(task, types.ModuleType), task"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=ROOT)


def test_the_replayer_and_the_pytest_plugin_load_no_worker() -> None:
    """`from grctl.testing import assert_replays` and pytest's loading of the plugin stay light;
    the in-process environment loads the engine when it is asked for."""
    loaded = loaded_after("import grctl.testing, grctl.testing.pytest_plugin\nfrom grctl.testing import assert_replays")
    assert not {m for m in loaded if m in HEAVY or m.startswith(tuple(f"{h}." for h in HEAVY))}
    assert "grctl.worker.worker" in loaded_after("from grctl.testing import WorkflowEnvironment")
