"""A set of workflow definitions, each type in one or more versions (`Workflow(..., version=2)`).

What a worker serves, and what `grctl deploy check` and the replayer compare recorded runs with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from grctl.errors import RegistrationError
from grctl.workflow.workflow import Workflow

__all__ = ["WorkflowSet"]


class WorkflowSet:
    """Workflow definitions by type and version: what a worker serves, what a deploy check or a replay compares with.

    Args:
        workflows: the definitions; a type may appear once per version.

    Raises:
        RegistrationError: two definitions of one type and version, or an invalid one (all
            problems named at once).
    """

    def __init__(self, workflows: Iterable[Workflow]) -> None:
        self._by_type: dict[str, dict[int, Workflow]] = {}
        problems: list[str] = []
        for wf in workflows:
            if not isinstance(wf, Workflow):
                problems.append(f"{wf!r} is not a Workflow")
                continue
            versions = self._by_type.setdefault(wf.workflow_type, {})
            if wf.version in versions:
                what = f"workflow type {wf.workflow_type!r}" + ("" if wf.version == 1 else f" v{wf.version}")
                problems.append(f"{what} is listed twice")
            try:
                wf.validate()
            except RegistrationError as exc:
                problems.append(str(exc))
            versions[wf.version] = wf
        self._problems = problems
        self._by_type = {t: dict(sorted(vs.items())) for t, vs in self._by_type.items()}

    @property
    def problems(self) -> list[str]:
        """What is wrong with the definitions (empty: nothing)."""
        return list(self._problems)

    def get(self, wf_type: str, version: int) -> Workflow | None:
        """The definition of that version of `wf_type` (None: not served)."""
        versions = self._by_type.get(wf_type)
        return versions.get(version) if versions is not None else None

    def versions(self, wf_type: str) -> list[int]:
        """The versions of `wf_type` served, oldest first."""
        return list(self._by_type.get(wf_type, ()))

    def types(self) -> list[str]:
        """The workflow types served."""
        return list(self._by_type)

    def __iter__(self) -> Iterator[Workflow]:
        """Every definition, by type then version."""
        for versions in self._by_type.values():
            yield from versions.values()

    def __contains__(self, wf_type: object) -> bool:
        return wf_type in self._by_type

    def describe(self) -> list[str]:
        """'Order v1, v2' per type, for logs."""
        return [f"{t} v{', v'.join(str(v) for v in vs)}" for t, vs in sorted(self._by_type.items())]
