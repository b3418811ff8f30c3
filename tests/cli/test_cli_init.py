"""`grctl init NAME`: the project it makes has its files, and its own tests pass at once (no broker)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def grctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "grctl", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_init_makes_a_project_whose_tests_pass(tmp_path: Path) -> None:
    made = grctl("init", "signup-demo", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "pip install -e '.[test]'" in made.stdout
    project = tmp_path / "signup-demo"
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert files == [
        ".dockerignore", ".gitignore", "Dockerfile", "README.md", "pyproject.toml",
        "signup_demo/__init__.py", "signup_demo/client.py", "signup_demo/worker.py", "signup_demo/workflows.py",
        "tests/__init__.py", "tests/conftest.py", "tests/test_workflows.py",
    ]  # fmt: skip
    assert "{{" not in "".join((project / f).read_text() for f in files)
    # The project's own test command; the plugin comes from grctl's pytest11 entry point once
    # grctl is installed (tests/install/test_init_template.py), named here for a checkout
    # whose editable install predates it.
    installed = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    plugin = [] if "grctl" in installed else ["-p", "grctl.testing.pytest_plugin"]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{project}"}
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout


@pytest.mark.parametrize("name", ["9lives", "my app", "class", "grctl", "a/b"])
def test_init_refuses_a_name_that_is_not_a_package_name(tmp_path: Path, name: str) -> None:
    made = grctl("init", name, cwd=tmp_path)
    assert made.returncode == 2
    assert f"project name {name!r}" in made.stderr
    assert not any(tmp_path.iterdir())


def test_init_leaves_an_existing_folder_alone(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    made = grctl("init", "taken", cwd=tmp_path)
    assert made.returncode == 1
    assert "exists and is not empty" in made.stderr
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]
