"""The worker's event loop (GRCTL_EVENT_LOOP): asyncio's own or uvloop, and a clear error without uvloop (issue 32)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grctl import Workflow, settings
from grctl.errors import EventLoopNotInstalledError, InvalidArgumentError
from grctl.worker import event_loop
from grctl.worker.worker import Worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "loop"),
    [(None, "asyncio"), ("", "asyncio"), ("asyncio", "asyncio"), ("uvloop", "uvloop"), (" UVLOOP ", "uvloop")],
)
def test_the_event_loop_setting(raw: str | None, loop: str) -> None:
    assert settings.event_loop({} if raw is None else {"GRCTL_EVENT_LOOP": raw}) == loop


def test_an_unknown_event_loop_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match=r"GRCTL_EVENT_LOOP must be one of asyncio, uvloop.*'trio'") as info:
        settings.event_loop({"GRCTL_EVENT_LOOP": "trio"})
    assert info.value.argument == "GRCTL_EVENT_LOOP"


async def loop_name() -> str:
    return event_loop.running_loop_name()


def test_run_uses_the_loop_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")  # the dev extras install it (grctl[uvloop])
    assert event_loop.run(loop_name(), loop="asyncio") == "asyncio"
    assert event_loop.run(loop_name(), loop="uvloop") == "uvloop"
    monkeypatch.setenv("GRCTL_EVENT_LOOP", "uvloop")
    assert event_loop.run(loop_name()) == "uvloop"
    monkeypatch.delenv("GRCTL_EVENT_LOOP")
    assert event_loop.run(loop_name()) == "asyncio"


def test_uvloop_asked_for_but_not_installed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` meets without the package
    coro = loop_name()
    with pytest.raises(EventLoopNotInstalledError, match=r"GRCTL_EVENT_LOOP=uvloop, but uvloop is not installed"):
        event_loop.run(coro, loop="uvloop")
    assert coro.cr_frame is None  # closed, so no "never awaited" warning follows the error
    with pytest.raises(ImportError, match=r"pip install 'grctl\[uvloop\]'"):
        event_loop.loop_factory("uvloop")


async def test_a_worker_started_with_uvloop_asked_for_but_missing_fails_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    monkeypatch.setenv("GRCTL_EVENT_LOOP", "uvloop")
    wf = Workflow(workflow_type="LoopCheck")

    @wf.start()
    async def start(ctx):  # type: ignore[no-untyped-def]
        return ctx.next.complete(None)

    worker = Worker([wf])  # no connection: the check comes before the worker connects
    with pytest.raises(EventLoopNotInstalledError) as info:
        await worker.run()
    assert info.value.loop == "uvloop"


def test_grctl_worker_says_what_to_install(tmp_path: Path) -> None:
    """`grctl worker` with GRCTL_EVENT_LOOP=uvloop and no uvloop: one error line, before any broker is asked."""
    script = (
        "import sys; sys.modules['uvloop'] = None\n"
        "from grctl.cli.main import main\n"
        "sys.argv = ['grctl', '--servers', '127.0.0.1:1', 'worker', '--app', 'examples.demo:WORKFLOWS',"
        f" '--state-dir', {str(tmp_path)!r}]\n"
        "main()\n"
    )
    env = dict(os.environ, GRCTL_EVENT_LOOP="uvloop", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "GRCTL_EVENT_LOOP=uvloop, but uvloop is not installed" in proc.stderr, proc.stderr
    assert "pip install 'grctl[uvloop]'" in proc.stderr


def test_asyncio_stays_the_default() -> None:
    assert settings.event_loop({}) == "asyncio"
    assert asyncio.run(loop_name()) == "asyncio"
