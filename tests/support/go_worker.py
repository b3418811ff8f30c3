"""The Go task worker of `workers/go` (issue 28), built once per source change and cached.

The binary goes to `<dev home>/go/grctl-taskworker-<hash of the sources>` (the dev home of
`grctl.dev.kafka`: $GRCTL_DEV_HOME, else ~/.cache/grctl), so a second test session reuses it.
A machine without Go fails the test that needs it, with what to install: CI machines have Go,
and a skip there would hide a broken worker.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from grctl.dev.kafka import resolve_home

SOURCE = Path(__file__).resolve().parents[2] / "workers" / "go"
#: `go build` on a cold module cache fetches franz-go through the Go module proxy: minutes at worst.
BUILD_TIMEOUT_S = 600


def sources_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and (path.suffix == ".go" or path.name in ("go.mod", "go.sum")):
            h.update(str(path.relative_to(SOURCE)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build_go_worker() -> Path:
    """The path of the built `grctl-taskworker` binary (built now if its sources changed)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            "the Go toolchain is missing (no `go` on PATH): the Go task worker test builds workers/go with it. "
            "Install Go 1.22+ (e.g. apt-get install golang-go, or /usr/local/go/bin on PATH)",
            pytrace=False,
        )
    out_dir = resolve_home() / "go"
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / f"grctl-taskworker-{sources_hash()}"
    if binary.exists():
        return binary
    tmp = binary.with_suffix(f".tmp{os.getpid()}")
    proc = subprocess.run(
        [go, "build", "-o", str(tmp), "./cmd/grctl-taskworker"],
        cwd=SOURCE,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"go build of workers/go failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    tmp.replace(binary)
    return binary
