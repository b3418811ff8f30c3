"""The code a worker serves: its workflow types, each in one or more versions, and the state machine's view of it.

`Served` maps (type, version) to the `Workflow` whose handlers execute that version's steps,
queries and events; `ServedCatalog` is what the state machine asks of it (`grctl.engine.machine.Catalog`),
plus the namespace's settings (run retention) that the worker refreshes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from grctl.errors import RegistrationError
from grctl.kafka.settings_topic import NamespaceSettings
from grctl.workflow.workflow import Workflow

__all__ = ["Served", "ServedCatalog"]


class Served:
    """The workflow definitions of a worker, by type and version.

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


class ServedCatalog:
    """The state machine's view of the served code (`grctl.engine.machine.Catalog`), and the namespace's settings.

    Args:
        served: the definitions.
    """

    def __init__(self, served: Served) -> None:
        self._served = served
        #: The namespace's settings (run retention), read at every session start and refreshed.
        self.settings = NamespaceSettings()

    def retention_ms(self, wf_type: str) -> int:
        return self.settings.retention_ms(wf_type)

    def has_type(self, wf_type: str) -> bool:
        return wf_type in self._served

    def versions(self, wf_type: str) -> list[int]:
        return self._served.versions(wf_type)

    def upgrade_auto(self, wf_type: str, version: int) -> bool:
        wf = self._served.get(wf_type, version)
        return wf is not None and wf.upgrade == "auto"

    def has_step(self, wf_type: str, version: int, step: str) -> bool:
        wf = self._served.get(wf_type, version)
        return wf is not None and wf.handler_for(step) is not None

    def step_timeout_ms(self, wf_type: str, version: int, step: str) -> int | None:
        wf = self._served.get(wf_type, version)
        return wf.timeout_ms_for(step) if wf is not None else None

    def has_event(self, wf_type: str, version: int, name: str) -> bool | None:
        wf = self._served.get(wf_type, version)
        return None if wf is None else wf.has_event(name)

    def events(self, wf_type: str, version: int) -> list[str]:
        wf = self._served.get(wf_type, version)
        return wf.event_names if wf is not None else []

    def results_topic(self, wf_type: str) -> str | None:
        versions = self._served.versions(wf_type)
        wf = self._served.get(wf_type, versions[-1]) if versions else None
        return wf.results_topic if wf is not None else None
