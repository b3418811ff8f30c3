"""A running worker's garbage collector (issue 32): tuned while workers run, Python's own after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from grctl import Workflow, settings
from grctl.errors import InvalidArgumentError
from grctl.worker import gc_tuning
from grctl.worker.worker import Worker


@pytest.fixture(autouse=True)
def _python_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    assert gc_tuning._users == 0, "a test left the collector tuned"
    gc.set_threshold(*before)


@pytest.mark.parametrize(("raw", "mode"), [(None, "tuned"), ("", "tuned"), (" Tuned ", "tuned"), ("python", "python")])
def test_the_gc_setting(raw: str | None, mode: str) -> None:
    assert settings.gc_mode({} if raw is None else {"GRCTL_GC": raw}) == mode


def test_an_unknown_gc_setting_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match=r"GRCTL_GC must be one of tuned, python \(or unset\), got 'off'"):
        settings.gc_mode({"GRCTL_GC": "off"})


def test_the_first_worker_tunes_and_the_last_one_puts_python_s_settings_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRCTL_GC", raising=False)
    frozen_before = gc.get_freeze_count()
    first = gc_tuning.tune()
    assert first and gc.get_threshold() == gc_tuning.THRESHOLDS
    assert gc.get_freeze_count() > frozen_before  # what the process held is out of the collector's walks
    second = gc_tuning.tune()  # a second worker in the same process
    gc_tuning.untune(first)
    assert gc.get_threshold() == gc_tuning.THRESHOLDS, "one worker still runs"
    gc_tuning.untune(second)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_grctl_gc_python_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRCTL_GC", "python")
    tuned = gc_tuning.tune()
    assert not tuned and gc.get_threshold() == (700, 10, 10)
    gc_tuning.untune(tuned)
    assert gc.get_threshold() == (700, 10, 10)


def test_cyclic_garbage_is_still_collected_by_itself_while_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRCTL_GC", raising=False)

    class Node:
        other: object = None

    made = gc_tuning.THRESHOLDS[0] * 2  # nodes: twice the young threshold in net allocations
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collections.append(info["collected"])

    tuned = gc_tuning.tune()
    gc.callbacks.append(seen)
    try:
        for _ in range(made // 2):
            a, b = Node(), Node()
            a.other, b.other = b, a  # a cycle: reference counting alone never frees it
        del a, b
        alive = sum(1 for o in gc.get_objects() if isinstance(o, Node))
    finally:
        gc.callbacks.remove(seen)
        gc_tuning.untune(tuned)
    assert collections, "no collection ran by itself"
    assert sum(collections) >= gc_tuning.THRESHOLDS[0] // 2, "the cycles made before a collection were not freed"
    assert alive < made


async def test_a_worker_with_an_unknown_gc_setting_fails_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRCTL_GC", "off")
    wf = Workflow(workflow_type="GcCheck")

    @wf.start()
    async def start(ctx):  # type: ignore[no-untyped-def]
        return ctx.next.complete(None)

    worker = Worker([wf])  # no connection: the check comes before the worker connects
    with pytest.raises(InvalidArgumentError, match="GRCTL_GC"):
        await worker.run()
