"""Sources: topics whose records start runs or deliver events (`Worker(sources=[...])`).

The public names; the implementation is the worker's Kafka edge, `grctl.worker._edges.sources`.
"""

from grctl.worker._edges.sources import (
    SendEvent,
    Source,
    SourceFormat,
    SourceRecord,
    StartRun,
)

__all__ = [
    "SendEvent",
    "Source",
    "SourceFormat",
    "SourceRecord",
    "StartRun",
]
