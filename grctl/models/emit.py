"""`Emit`: a record a transition produces to a topic outside the namespace (`ctx.emit`, a results topic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["EMIT_RECORD_OVERHEAD", "Emit"]


@dataclass(frozen=True, slots=True)
class Emit:
    """A record for a topic outside the namespace (`ctx.emit`, a results topic), in its transition."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None

    @property
    def size(self) -> int:
        """Key, value and headers plus a record's overhead, for the size checks."""
        head = sum(len(k) + len(v) for k, v in self.headers) if self.headers else 0
        return len(self.key or b"") + len(self.value) + head + EMIT_RECORD_OVERHEAD


#: Bytes a record takes besides key, value and headers (batch and record headers), for size checks.
EMIT_RECORD_OVERHEAD: Final = 512
