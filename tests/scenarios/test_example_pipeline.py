"""`python -m examples.pipeline` (issue 17, part 5): orders and payments from topics, shipments and results to topics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_pipeline_ships_every_order_once(kafka_bootstrap: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.pipeline", "--orders", "300", "--servers", kafka_bootstrap, "--timeout", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert (
        "300 orders in" in out.stdout
        and "300 shipped, 300 completed, duplicates 0 shipments / 0 results -> OK" in out.stdout
    )
