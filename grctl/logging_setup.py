"""Logging helpers: `setup_logging` (text or JSON lines), `JsonFormatter`, `get_logger`.

`setup_logging(level, log_format="json")` writes one JSON object per line, for log
collectors: `ts`, `level`, `logger`, `message`, and, where known, `wf_id`, `run_id`, `step`,
`wf_type` and `partition` as fields of their own (`exc` with the traceback). Inside a step
those come from the running step, whichever logger the user code logs with: the worker
registers a field provider (`add_field_provider`) that reads them from the step's context when
a record is formatted, so nothing is paid on the hot path. Records of `ctx.logger` carry them
as attributes too. librdkafka's lines (`grctl.librdkafka`) add `kafka_client` and
`kafka_facility`.

May import: nothing of grctl.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

FORMAT = "%(levelname)s %(asctime)s.%(msecs)03d [%(module)s.%(funcName)s:%(lineno)d] %(message)s"

LOG_FORMATS: tuple[str, ...] = ("text", "json")

#: Record attributes that become JSON fields of their own when a record has them.
FIELDS = ("wf_id", "run_id", "step", "wf_type", "partition", "kafka_client", "kafka_facility")

_providers: list[Callable[[], dict[str, Any] | None]] = []


def add_field_provider(provider: Callable[[], dict[str, Any] | None]) -> None:
    """Add fields to every JSON record formatted while `provider` returns some (e.g. the running step).

    A provider runs in the thread and context that logs, when the record is formatted; it
    must be cheap and must not log.
    """
    if provider not in _providers:
        _providers.append(provider)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for provider in _providers:
            fields = provider()
            if fields:
                for k, v in fields.items():
                    out.setdefault(k, v)
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter_for(log_format: str, text_format: str = FORMAT, datefmt: str | None = "%H:%M:%S") -> logging.Formatter:
    """The formatter of a `--log-format` value ("text" or "json").

    Raises:
        ValueError: another value.
    """
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(text_format, datefmt=datefmt)
    raise ValueError(f"log format {log_format!r}: use 'text' or 'json'")


def setup_logging(level: int = logging.INFO, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Log to `stream` (default stdout) as text or JSON lines.

    Args:
        level: the root logger's level.
        log_format: "text" (the original's compact format) or "json" (one object per line).
        stream: where to write (default sys.stdout).

    Raises:
        ValueError: `log_format` is neither "text" nor "json".
    """
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter_for(log_format))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    """A logger set to DEBUG."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    return logger
