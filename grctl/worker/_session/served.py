"""The state machine's view of the code a worker serves (`grctl.engine.machine.Catalog`).

The code is a `WorkflowSet` (`grctl.workflow.registry`: each type in one or more versions);
`ServedCatalog` answers the machine's questions about it, with the namespace's settings (run
retention) that the worker refreshes.
"""

from __future__ import annotations

from grctl.kafka.settings_topic import NamespaceSettings
from grctl.workflow.registry import WorkflowSet

# The set of served workflows, as the worker's parts name it.
Served = WorkflowSet

__all__ = ["Served", "ServedCatalog"]


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
