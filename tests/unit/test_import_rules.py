"""Who may import whom inside grctl: the table of docs/architecture.md, checked on the source.

Every `import grctl.x` / `from grctl.x import ...` of every module (type-checking-only imports
included: they are still a dependency of the design) must go to a room its own room may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "grctl"

# room -> rooms it may import (besides itself). A room is a top-level module or package of grctl.
BASE = {"errors", "defaults"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "defaults": set(),
    "settings": {"errors", "defaults"},
    "models": BASE,
    "codec": {"errors"},
    "future": {"errors", "defaults", "models"},
    "engine": {*BASE, "models"},
    "kafka": {*BASE, "settings"},
    "state": {"errors", "engine"},
    # The authoring package (issue 25): what a workflow module imports; never the worker, the
    # state, the Kafka client or the client's Kafka side.
    "workflow": {*BASE, "models", "codec", "future", "formats", "_check", "tracing", "logging_setup", "engine.retry"},
    "formats": {"errors", "codec"},
    "client": {
        *BASE,
        "workflow.handle",
        "settings",
        "models",
        "codec",
        "future",
        "engine",
        "kafka",
        "_lazy",
        "_fork",
        "logging_setup",
        "_check",
        "tracing",
    },
    "worker": {
        *BASE,
        "formats",
        "settings",
        "models",
        "codec",
        "future",
        "engine",
        "kafka",
        "state",
        "workflow",
        "client.handle",
        "_fork",
        "_check",
        "logging_setup",
        "tracing",
    },
    "cli": {"*"},
    "dev": {"errors", "settings"},
    # The web UI reads with the client's readers (grctl.client.reader) and acts through a Client.
    "ui": {*BASE, "settings", "models", "codec", "engine", "kafka", "client", "display", "logging_setup"},
    # How values are shown (times, durations, compact JSON): the CLI's and the UI's.
    "display": set(),
    "_lazy": set(),
    "_check": {"errors"},
    "logging_setup": set(),
    "tracing": {"errors", "models"},
    "_fork": {"errors"},
    "__init__": {"*"},
    "__main__": {"cli"},
}


def room_of_module(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def room_of_import(name: str) -> tuple[str, str]:
    """(room, the import with its first part below grctl) for `grctl.a.b` -> ("a", "a.b")."""
    parts = name.split(".")[1:]
    return (parts[0] if parts else "__init__"), ".".join(parts[:2])


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "grctl":
                out += [f"grctl.{a.name}" for a in node.names]
            elif node.module.startswith("grctl."):
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("grctl.")]
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_import_stays_in_the_rooms_its_room_may_use(path: Path) -> None:
    room = room_of_module(path)
    allowed = ALLOWED[room]
    bad = []
    for name in imports_of(path):
        target, detail = room_of_import(name)
        if "*" in allowed or target == room or target in allowed or detail in allowed:
            continue
        bad.append(name)
    assert not bad, (
        f"{path.relative_to(PACKAGE)} ({room}) imports {bad}; docs/architecture.md says it may use {sorted(allowed)}"
    )


def test_every_room_is_in_the_table() -> None:
    rooms = {room_of_module(p) for p in MODULES}
    assert rooms <= set(ALLOWED), f"rooms missing from the table: {sorted(rooms - set(ALLOWED))}"
