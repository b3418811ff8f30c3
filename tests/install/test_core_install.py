"""``pip install grctl`` without extras: a worker and a client run, the UI says which extra it needs.

Builds the checkout into a fresh virtual environment (`python -m venv`, then `pip install` of a
copy of the package's sources, no extras: PyPI is the only network it uses), and with that
environment's own interpreter, outside this checkout:

- the packages of the ``ui`` extra are not installed, and grctl does not require pydantic (typer
  may bring it: nothing of a worker or a client imports it, and the codec works without it);
- ``grctl ui`` and ``grctl workflow history --tui`` exit 1 naming ``pip install 'grctl[ui]'``;
- ``grctl worker`` serves a workflow module and ``grctl workflow start --wait`` gets its result
  from the real broker: nothing a worker or a client imports needs those packages.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ulid import ULID

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
#: What the ``ui`` extra brings (import names).
UI_MODULES = ("starlette", "uvicorn", "jinja2", "python_multipart", "multipart", "textual")
#: What `grctl worker` and `grctl workflow start` import.
CORE_IMPORTS = "import grctl.cli.main, grctl.worker.worker, grctl.client.client"
#: Run in the installed environment with pydantic unimportable: the codec still round-trips.
CODEC_WITHOUT_PYDANTIC = textwrap.dedent(
    """
    import dataclasses, datetime, sys
    sys.modules["pydantic"] = None  # import pydantic now raises ImportError
    from grctl.codec import default_codec

    codec = default_codec()

    @dataclasses.dataclass
    class Order:
        id: str
        at: datetime.datetime

    order = Order("A-1", datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))
    assert codec.decode(codec.encode(order), Order) == order
    assert codec.decode(codec.encode({"n": [1, 2.5, "x"]})) == {"n": [1, 2.5, "x"]}
    print("ok")
    """
)
INSTALL_HINT = "pip install 'grctl[ui]'"
VENV_TIMEOUT_S = 120
#: A first install downloads the dependencies' wheels (a few tens of MB); pip's cache makes
#: later ones quick.
PIP_TIMEOUT_S = 600
COMMAND_TIMEOUT_S = 120
WORKER_READY_TIMEOUT_S = 90

APP = textwrap.dedent(
    '''
    """A workflow module for the install test."""

    from grctl import Context, Directive, Workflow

    echo = Workflow(workflow_type="InstallEcho")


    @echo.start()
    async def start(ctx: Context, value: object = None) -> Directive:
        return ctx.next.complete({"echo": value})


    WORKFLOWS = [echo]
    '''
)


def pypi_answers() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would import the checkout instead of the install."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run(cmd: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with grctl installed from this checkout, without extras."""
    if not pypi_answers():
        pytest.skip("PyPI (https://pypi.org) does not answer: cannot install grctl's dependencies")
    root = tmp_path_factory.mktemp("core-install")
    src = root / "src"  # a copy, so that the build writes nothing into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "grctl", src / "grctl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = root / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], root, VENV_TIMEOUT_S)
    assert made.returncode == 0, made.stderr
    installed = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)], root, PIP_TIMEOUT_S)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A folder with the workflow module and nothing else (no grctl sources on the path)."""
    (tmp_path / "install_flows.py").write_text(APP)
    return tmp_path


def test_the_ui_packages_are_not_installed_and_pydantic_not_required(core_venv: Path, app_dir: Path) -> None:
    probe = (
        f"import importlib.metadata, importlib.util, json, sys, grctl; {CORE_IMPORTS}; "
        "print(json.dumps({'file': grctl.__file__, "
        f"'found': [m for m in {UI_MODULES!r} if importlib.util.find_spec(m)], "
        "'requires': importlib.metadata.requires('grctl'), "
        f"'loaded': [m for m in ({UI_MODULES!r} + ('pydantic',)) if m in sys.modules]}}))"
    )
    out = run([str(core_venv / "bin" / "python"), "-c", probe], app_dir, COMMAND_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert Path(seen["file"]).is_relative_to(core_venv), f"grctl imported from {seen['file']}, not the install"
    assert seen["found"] == []
    assert seen["loaded"] == []
    core = [r for r in seen["requires"] if "extra ==" not in r]
    assert core and not [r for r in core if r.lower().startswith(("pydantic", "starlette", "textual", "jinja2"))]
    codec = run([str(core_venv / "bin" / "python"), "-c", CODEC_WITHOUT_PYDANTIC], app_dir, COMMAND_TIMEOUT_S)
    assert codec.returncode == 0 and codec.stdout.strip() == "ok", codec.stderr


def test_the_ui_commands_name_the_extra(core_venv: Path, app_dir: Path) -> None:
    grctl = str(core_venv / "bin" / "grctl")
    ui = run([grctl, "ui", "--port", "0"], app_dir, COMMAND_TIMEOUT_S)
    assert ui.returncode == 1, ui.stdout + ui.stderr
    assert INSTALL_HINT in ui.stderr and "Traceback" not in ui.stderr
    tui = run([grctl, "workflow", "history", "some-id", "--tui"], app_dir, COMMAND_TIMEOUT_S)
    assert tui.returncode == 1, tui.stdout + tui.stderr
    assert INSTALL_HINT in tui.stderr and "Traceback" not in tui.stderr


@pytest.fixture
def namespace(core_venv: Path, app_dir: Path, kafka_bootstrap: str) -> Iterator[str]:
    """A fresh namespace of 2 partitions, created and deleted with the installed ``grctl``."""
    name = f"install-{str(ULID()).lower()[-12:]}"
    grctl = str(core_venv / "bin" / "grctl")
    created = run([grctl, "-n", name, "namespace", "create", "--partitions", "2"], app_dir, COMMAND_TIMEOUT_S)
    assert created.returncode == 0, created.stderr
    try:
        yield name
    finally:
        deleted = run([grctl, "namespace", "delete", name, "--yes"], app_dir, COMMAND_TIMEOUT_S)
        assert deleted.returncode == 0, deleted.stderr


def test_a_worker_and_a_start_run_without_extras(core_venv: Path, app_dir: Path, namespace: str) -> None:
    grctl = str(core_venv / "bin" / "grctl")
    worker = subprocess.Popen(
        [
            *(grctl, "-n", namespace, "worker", "--app", "install_flows:WORKFLOWS", "--partitions", "2"),
            *("--state-dir", str(app_dir / "state"), "--shutdown-timeout", "2"),
        ],
        cwd=app_dir,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert worker.stderr is not None
        for line in worker.stderr:
            lines.append(line.rstrip("\n"))
            if " ready" in line:
                ready.set()

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    try:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while not ready.wait(0.2):
            assert worker.poll() is None, "grctl worker exited:\n" + "\n".join(lines)
            assert time.monotonic() < deadline, "grctl worker did not get ready:\n" + "\n".join(lines)
        wf_id = f"install-{str(ULID()).lower()}"
        started = run(
            [grctl, "-n", namespace, "workflow", "start", "-t", "InstallEcho", "-i", wf_id],
            app_dir,
            COMMAND_TIMEOUT_S,
        )
        assert started.returncode == 0, started.stderr
        waited = run(
            [grctl, "-n", namespace, "workflow", "result", wf_id, "--timeout", "60s", "--json"],
            app_dir,
            COMMAND_TIMEOUT_S,
        )
        assert waited.returncode == 0, waited.stderr
        assert json.loads(waited.stdout)["result"] == {"echo": None}
        with_input = run(
            [
                *(grctl, "-n", namespace, "workflow", "start", "-t", "InstallEcho"),
                *("-I", '{"value": 7}', "--wait", "--json"),
            ],
            app_dir,
            COMMAND_TIMEOUT_S,
        )
        assert with_input.returncode == 0, with_input.stderr
        assert json.loads(with_input.stdout)["result"] == {"echo": 7}
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait(10)
        pumper.join(10)
        if worker.stderr is not None:
            worker.stderr.close()
    assert code == 0, "\n".join(lines)
