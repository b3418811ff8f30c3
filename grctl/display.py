"""How values are shown to people: times, durations and compact JSON, for the CLI and the web UI.

Pure functions of their arguments (local time zone aside); they print nothing.

May import: nothing of grctl.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec

__all__ = ["fmt_duration_ms", "fmt_ms", "fmt_span_ms", "fmt_time", "json_text", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Structs, datetimes, enums, bytes → plain JSON values."""
    return msgspec.to_builtins(value, enc_hook=str, str_keys=True)


def json_text(value: Any, limit: int | None = None) -> str:
    """Compact JSON of a value for a table cell (clipped to `limit` characters)."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def fmt_ms(ms: int | None) -> str:
    """Epoch milliseconds → local ``YYYY-MM-DD HH:MM:SS.mmm`` ("-" for none)."""
    if not ms:
        return "-"
    t = dt.datetime.fromtimestamp(ms / 1000).astimezone()
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def fmt_time(value: dt.datetime | None) -> str:
    """A datetime as local time ("-" for none)."""
    if value is None:
        return "-"
    return fmt_ms(int(value.timestamp() * 1000))


def fmt_duration_ms(ms: float | None) -> str:
    """1234 → ``1.23 s``; 61000 → ``1m 1s``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.2f} s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    return f"{h}h {m}m"


def fmt_span_ms(ms: int) -> str:
    """A configured duration as people write it: 604800000 → ``7 days``, 43200000 → ``12h``, 5400000 → ``1h 30m``.

    Whole days read as days; anything else as its non-zero units (``d``, ``h``, ``m``, ``s``,
    then ``ms``), largest first, the way `--retention 36h` or `1d 12h` is typed.
    """
    if ms < 0:
        return "-" + fmt_span_ms(-ms)
    day = 86_400_000
    if ms and ms % day == 0:
        days = ms // day
        return f"{days} day" if days == 1 else f"{days} days"
    parts = []
    rest = ms
    for unit, size in (("d", day), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n}{unit}")
    if rest or not parts:
        parts.append(f"{rest}ms")
    return " ".join(parts)
