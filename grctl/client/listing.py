"""Listing runs: the filters, the page token, and the merge of the partitions' pages.

`Client.list_workflows` asks every partition of the namespace (one `ListCmd` each, answered by
its owner from the partition's run index) and merges the answers here: newest first, cut at
the limit, never past a partition's `frontier` (how far a partition that stopped on its budget
looked). A partition that does not answer in time (moving during a rebalance, no owner) is
reported in `RunPage.unavailable_partitions`, never silently missing.

The page token carries the namespace, the filters and the position of the last run shown; a
token used with another namespace or other filters is refused with an error saying so.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from grctl.errors import InvalidArgumentError
from grctl.models.run_info import RunInfo, RunStatus

__all__ = [
    "LIST_LIMIT_MAX",
    "ListFilter",
    "RunPage",
    "VersionCount",
    "decode_page_token",
    "encode_page_token",
    "merge_pages",
    "merge_versions",
]

#: The most runs one page holds.
LIST_LIMIT_MAX = 1000
_STATUSES = [s.value for s in RunStatus]


@dataclass(frozen=True)
class ListFilter:
    """What a listing asks for (all given criteria must match)."""

    statuses: tuple[str, ...] | None = None
    wf_types: tuple[str, ...] | None = None
    started_after_ms: int | None = None
    text: str | None = None

    @classmethod
    def of(
        cls,
        status: str | RunStatus | Iterable[str | RunStatus] | None,
        workflow_type: str | Iterable[str] | None,
        started_after: datetime | None,
        text: str | None,
    ) -> ListFilter:
        """Check and normalise the arguments of `Client.list_workflows`.

        Raises:
            InvalidArgumentError: an unknown status, a naive datetime, or a wrong type.
        """
        statuses = None
        if status is not None:
            items = [status] if isinstance(status, str) else list(status)
            bad = [s for s in items if str(s) not in _STATUSES]
            if bad:
                raise InvalidArgumentError(
                    f"unknown run status {bad[0]!r}; use one of {', '.join(_STATUSES)}", argument="status"
                )
            statuses = tuple(sorted({str(s) for s in items}))
        types = None
        if workflow_type is not None:
            items_t = [workflow_type] if isinstance(workflow_type, str) else list(workflow_type)
            if not all(isinstance(t, str) and t for t in items_t):
                raise InvalidArgumentError(
                    f"workflow_type must be names, got {workflow_type!r}", argument="workflow_type"
                )
            types = tuple(sorted(set(items_t)))
        after_ms = None
        if started_after is not None:
            if not isinstance(started_after, datetime) or started_after.tzinfo is None:
                raise InvalidArgumentError(
                    f"started_after must be an aware datetime (e.g. datetime.now(UTC) - timedelta(hours=1)), "
                    f"got {started_after!r}",
                    argument="started_after",
                )
            after_ms = int(started_after.timestamp() * 1000)
        return cls(statuses, types, after_ms, text or None)


@dataclass
class RunPage:
    """One page of `Client.list_workflows`.

    Attributes:
        runs: the runs, newest first (the latest run of each workflow id).
        next_page_token: pass it to get the next page (None: this was the last).
        counts: with `counts=True`, how many latest runs have each status, by type.
        unavailable_partitions: partitions that did not answer (their runs are missing from
            this page; ask again).
        versions: with `counts=True`, the drain counts: runs not ended per type and version.
    """

    runs: list[RunInfo]
    next_page_token: str | None
    counts: dict[str, dict[str, int]] | None = None
    unavailable_partitions: list[int] = field(default_factory=list)
    versions: list[VersionCount] | None = None


@dataclass(frozen=True)
class VersionCount:
    """The drain count of one version of a workflow type: its runs not ended, exact.

    Kept by the partitions' run indexes in the same transactions as the runs' starts and ends;
    a version once started stays listed with 0 open runs.

    Attributes:
        workflow_type: the type.
        version: the version.
        open: runs of this version not ended (the sum of `by_status`).
        by_status: those runs by status ("running", "waiting", "awaiting_code", ...).
    """

    workflow_type: str
    version: int
    open: int
    by_status: dict[str, int]

    @property
    def awaiting_code(self) -> int:
        """Runs of this version parked until a worker serves their code."""
        return self.by_status.get("awaiting_code", 0)


class _Token(msgspec.Struct, array_like=True):
    namespace: str
    after: bytes
    statuses: tuple[str, ...] | None
    wf_types: tuple[str, ...] | None
    started_after_ms: int | None
    text: str | None


def encode_page_token(namespace: str, flt: ListFilter, after: bytes) -> str:
    """The token of the page after position `after`."""
    tok = _Token(namespace, after, flt.statuses, flt.wf_types, flt.started_after_ms, flt.text)
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(tok)).decode().rstrip("=")


def decode_page_token(token: str, namespace: str, flt: ListFilter) -> tuple[bytes, ListFilter]:
    """The position a page token continues from, and the filter to continue with.

    The filter is the one of the first page: its `started_after` cutoff is kept, so a listing
    asked "since one hour" pages through the same runs however long the paging takes.

    Raises:
        InvalidArgumentError: not a page token, or one of another namespace or other filters.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        tok = msgspec.msgpack.decode(raw, type=_Token)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidArgumentError(
            f"{token!r} is not a page token of grctl's run listing", argument="page_token"
        ) from None
    if tok.namespace != namespace:
        raise InvalidArgumentError(
            f"this page token belongs to a listing of namespace {tok.namespace!r}, not {namespace!r}",
            argument="page_token",
        )
    if (tok.statuses, tok.wf_types, tok.text) != (flt.statuses, flt.wf_types, flt.text) or (
        (tok.started_after_ms is None) != (flt.started_after_ms is None)
    ):
        raise InvalidArgumentError(
            "this page token was made for other filters: pass the same status, workflow_type, started_after "
            "and text as for the first page",
            argument="page_token",
        )
    return tok.after, ListFilter(tok.statuses, tok.wf_types, tok.started_after_ms, tok.text)


def merge_pages(
    answers: Mapping[int, Mapping[str, Any]], limit: int
) -> tuple[list[tuple[bytes, dict[str, Any]]], bytes | None, bool]:
    """Merge the partitions' pages.

    Args:
        answers: per partition that answered, its `list_page` payload.
        limit: the page size.

    Returns:
        (the page's (position, run info) rows newest first, the position to continue after,
        whether there may be more).
    """
    frontiers = [a["frontier"] for a in answers.values() if a.get("frontier") is not None]
    frontier = min(frontiers) if frontiers else None
    rows = [(pos, info) for a in answers.values() for pos, info in a["runs"]]
    if frontier is not None:
        rows = [r for r in rows if r[0] <= frontier]
    rows.sort(key=lambda r: r[0])
    page = rows[:limit]
    more = len(rows) > limit or frontier is not None or any(a.get("full") for a in answers.values())
    if not more:
        return page, None, False
    cursor = page[-1][0] if page else frontier
    return page, cursor, cursor is not None


def merge_counts(answers: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """The partitions' counts, summed."""
    out: dict[str, dict[str, int]] = {}
    for a in answers:
        for status, by_type in (a.get("counts") or {}).items():
            for wf_type, n in by_type.items():
                out.setdefault(status, {})[wf_type] = out.get(status, {}).get(wf_type, 0) + n
    return out


def merge_versions(answers: Iterable[Mapping[str, Any]]) -> list[VersionCount]:
    """The partitions' drain counts, summed, by type then version."""
    sums: dict[tuple[str, int], dict[str, int]] = {}
    for a in answers:
        for wf_type, by_version in (a.get("versions") or {}).items():
            for version, by_status in by_version.items():
                into = sums.setdefault((wf_type, int(version)), {})
                for status, n in by_status.items():
                    into[status] = into.get(status, 0) + int(n)
    return [
        VersionCount(wf_type, version, sum(by.values()), {s: n for s, n in sorted(by.items()) if n})
        for (wf_type, version), by in sorted(sums.items())
    ]
