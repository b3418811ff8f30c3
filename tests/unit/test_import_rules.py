"""Who may import whom inside grctl: the table of docs/architecture.md, checked on the source.

Every `import grctl.x` / `from grctl.x import ...` of every module (type-checking-only imports
included: they are still a dependency of the design) must go to a room its own room may use.
Inside `grctl/worker/` each private package is a room of its own (`worker._session`,
`worker._partition`, `worker._observe`, `worker._edges`), and the worker's modules import one
another without a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
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
    # display (which imports nothing): error messages state durations as people write them.
    "kafka": {*BASE, "settings", "display"},
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
        "worker._session",
        "worker._partition",
        "worker._observe",
        "worker._edges",
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
    # One group membership: the session and its loops, commit, clients, rebalance, restore,
    # executor, queries, timers, topic directory.
    "worker._session": {
        *BASE,
        "settings",
        "models",
        "codec",
        "engine",
        "kafka",
        "state",
        "workflow",
        "formats",
        "tracing",
        "worker._partition",
        "worker._observe",
        "worker._edges",
    },
    # One partition's runs: the processor and what it stages; served and seen through its ports.
    "worker._partition": {*BASE, "models", "engine", "kafka", "state", "workflow.runtime"},
    # Metrics, the session view, run spans, the HTTP endpoint: nothing of the session.
    "worker._observe": {*BASE, "models", "engine", "tracing", "worker._partition.ports"},
    # Kafka edges: sources and the schema registry.
    "worker._edges": {
        *BASE,
        "settings",
        "models",
        "codec",
        "formats",
        "engine",
        "kafka",
        "_check",
        "worker._partition",
    },
    # Users' test harness (issue 30). The replayer needs only the authoring package; the
    # in-process environment runs the real engine, so it composes the worker's parts (the
    # processor, the committer, the executor, the query answerer, the served catalog) and the
    # real Client over an in-memory transport instead of re-implementing them; the Kafka
    # environment starts a real Worker. Nothing in the engine imports `testing` back.
    "testing": {
        *BASE,
        "models",
        "codec",
        "workflow",
        "_lazy",
        "settings",
        "engine",
        "state",
        "kafka",
        "client",
        "worker",
        "worker._session",
        "worker._partition",
        "worker._edges",
    },
    # Remote task workers (issue 28): a Kafka client of a queue; nothing of the engine's worker.
    "taskworker": {*BASE, "kafka", "models", "codec", "logging_setup"},
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


#: The worker's rooms below `grctl/worker/` (each a private package).
WORKER_ROOMS = ("_session", "_partition", "_observe", "_edges")


def room_of_module(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    if rel.parts[0] == "worker" and len(rel.parts) > 2 and rel.parts[1] in WORKER_ROOMS:
        return f"worker.{rel.parts[1]}"
    return rel.parts[0]


def room_of_import(name: str) -> tuple[str, str]:
    """(room, the import with its first part below the room) for `grctl.a.b` -> ("a", "a.b").

    Inside the worker: `grctl.worker._session.commit` -> ("worker._session", "worker._session.commit").
    """
    parts = name.split(".")[1:]
    if len(parts) > 1 and parts[0] == "worker" and parts[1] in WORKER_ROOMS:
        return f"worker.{parts[1]}", ".".join(parts[:3])
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


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts
    return ".".join(parts)


def _imported_modules(path: Path) -> list[str]:
    """`imports_of`, plus the modules a `from package import module` names."""
    out = imports_of(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grctl") and node.level == 0:
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


def _cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """The cycles a depth-first walk of `graph` meets (each as the path that closes it)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Iterator[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                yield [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                yield from visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            yield from visit(node)


def test_the_worker_modules_import_one_another_without_a_circle() -> None:
    """Type-checking imports count: a circle through them is still a circle in the design."""
    worker = [p for p in MODULES if p.relative_to(PACKAGE).parts[0] == "worker"]
    names = {_module_name(p) for p in worker}
    graph: dict[str, set[str]] = {}
    for p in worker:
        me = _module_name(p)
        targets = set()
        for name in _imported_modules(p):
            while name not in names and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in names and name != me and name != "grctl.worker":
                targets.add(name)
        graph[me] = targets
    found = list(_cycles(graph))
    assert not found, f"import circles inside grctl.worker: {found}"
