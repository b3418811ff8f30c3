"""Compatibility: the readers of runs and history moved to `grctl.client.reader` (issue 25).

The CLI, the TUI and the web UI share them; they are not the CLI's own. Import from
`grctl.client.reader`.
"""

from __future__ import annotations

from grctl.client.reader import (
    ALL_STATUSES,
    FIRST_CHUNK,
    LIST_TIMEOUT_S,
    MAX_CHUNK,
    READ_STALL_S,
    TERMINAL_STATUSES,
    Page,
    RunFilter,
    RunLister,
    RunRow,
    StateScanner,
    admin_for,
    check_page_token,
    find_run,
    iter_history,
    list_filter,
    list_runs,
    read_consumer,
    run_info_from_record,
)

__all__ = [
    "ALL_STATUSES",
    "FIRST_CHUNK",
    "LIST_TIMEOUT_S",
    "MAX_CHUNK",
    "READ_STALL_S",
    "TERMINAL_STATUSES",
    "Page",
    "RunFilter",
    "RunLister",
    "RunRow",
    "StateScanner",
    "admin_for",
    "check_page_token",
    "find_run",
    "iter_history",
    "list_filter",
    "list_runs",
    "read_consumer",
    "run_info_from_record",
]
