"""The documentation's example programs run against the real broker and print what the pages say.

Each runs as its own process (as a reader would run it: `python docs/examples/NAME.py`), with
`GRCTL_KAFKA_SERVERS` set to the session's broker and a namespace of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ulid import ULID

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"

#: Example -> lines its output must hold, in order.
EXPECTED: dict[str, list[str]] = {
    "readme": ["Hello, World!"],
    "hello": ["Hello, World!"],
    "approval": ["waiting for a decision", "{'paid': False, 'reason': 'not a business expense'}"],
    "retries": [
        "{'receipt': 'receipt-A-1', 'items': 2}",
        "2 failed attempts before the receipt",
        "WorkflowError - ValueError: unicorn is not sold here",
    ],
    "children": [
        "{'label': 'label: tracking A-9-label', 'parcels': ['book: tracking A-9-book', 'pen: tracking A-9-pen']}"
    ],
    "sources": ["{'shipped': True, 'paid': 30}"],
    "remote_tasks": ["{'applicant': 'ada', 'approved': True}", "{'applicant': 'bob', 'approved': False}"],
    "versions": ["1 emailed to ada", "2 uploaded to the portal of bob", "sms to +1 555"],
    "flow_control": [
        "receipt-c-1-500",
        "receipt-c-2-700",
        "receipt-c-9-300",
        "payments-api: concurrency 20, 50/s (burst 50), 2 per key; granted 3, in use 0",
    ],
}


def test_every_example_program_is_checked() -> None:
    programs = {p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("test_")}
    assert programs == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_example_prints_what_the_page_says(name: str, kafka_bootstrap: str) -> None:
    namespace = f"docs-{name}-{str(ULID()).lower()[-10:]}"
    env = {**os.environ, "GRCTL_KAFKA_SERVERS": kafka_bootstrap, "GRCTL_NAMESPACE": namespace,
           "PYTHONPATH": str(REPO)}  # fmt: skip
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines == EXPECTED[name], run.stdout + run.stderr
