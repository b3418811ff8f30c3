"""`grctl init demo && cd demo && pytest` passes in a fresh virtual environment.

grctl is installed from a copy of this checkout (as `test_core_install.py` does), then the
test extra the template names (pytest, pytest-asyncio, from PyPI); the project's tests find
the `grctl_env` fixture through grctl's `pytest11` entry point, nothing else.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.install.test_core_install import PIP_TIMEOUT_S, REPO, VENV_TIMEOUT_S, pypi_answers, run

pytestmark = pytest.mark.timeout(900)


def test_a_new_project_passes_its_own_tests_right_after_init(tmp_path: Path) -> None:
    if not pypi_answers():
        pytest.skip("PyPI (https://pypi.org) does not answer: cannot install grctl's dependencies")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "grctl", src / "grctl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], tmp_path, VENV_TIMEOUT_S).returncode == 0
    python = str(venv / "bin" / "python")
    installed = run([python, "-m", "pip", "install", "-q", str(src)], tmp_path, PIP_TIMEOUT_S)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    work = tmp_path / "work"
    work.mkdir()
    made = run([str(venv / "bin" / "grctl"), "init", "demo"], work, 60)
    assert made.returncode == 0, made.stdout + made.stderr
    project = work / "demo"
    # The README's commands: an editable install with the test extra, then pytest.
    extra = run([python, "-m", "pip", "install", "-q", "-e", ".[test]"], project, PIP_TIMEOUT_S)
    assert extra.returncode == 0, extra.stdout + extra.stderr
    tests = run([python, "-m", "pytest", "-q"], project, 300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout
