"""`ctx.store`: the key-value store of one run, buffered until the step's directive commits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from grctl.codec import CodecRegistry
from grctl.errors import InvalidArgumentError, PayloadTooLargeError, ReadOnlyStoreError, StoreKeyNotFoundError

__all__ = ["Store", "StoreKeyNotFoundError"]

T = TypeVar("T")


class Store:
    """Key-value store scoped to one run.

    `put` encodes at once (an unserializable value fails at the `put` line) and buffers the
    bytes; they are published atomically with the step's directive. `get` reads the step's own
    writes first, then the last committed value.

    Args:
        read_committed: returns the committed encoded value of a key, or None.
        codec: the codec of the worker.
        read_only: refuse `put` (a query handler's view).
        max_value_bytes: the largest encoded value `put` accepts (None: no bound).
    """

    def __init__(
        self,
        read_committed: Callable[[str], bytes | None],
        codec: CodecRegistry,
        *,
        read_only: bool = False,
        max_value_bytes: int | None = None,
    ) -> None:
        self._read = read_committed
        self._codec = codec
        self._writes: dict[str, bytes] = {}
        self._read_only = read_only
        self._max_value_bytes = max_value_bytes

    def put(self, key: str, value: Any) -> None:
        """Write `value` under `key` (visible to later steps once this step's directive commits).

        Raises:
            PayloadTooLargeError: the encoded value is over the value limit (nothing is written).
            CodecError: the value cannot be encoded.
        """
        if self._read_only:
            raise ReadOnlyStoreError("the store is read-only in a query handler: queries must not change state")
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(f"store keys must be non-empty strings, got {key!r}", argument="key")
        data = self._codec.encode(value)
        limit = self._max_value_bytes
        if limit is not None and len(data) > limit:
            raise PayloadTooLargeError(f"store value {key!r}", size=len(data), limit=limit)
        self._writes[key] = data

    @overload
    async def get(self, key: str) -> Any: ...

    @overload
    async def get(self, key: str, ty: type[T]) -> T: ...

    async def get(self, key: str, ty: Any = None) -> Any:
        """Read `key`.

        Args:
            key: the key.
            ty: convert the value to this type (dataclass, Struct, pydantic model, ...).

        Returns:
            The value; with no `ty`, msgpack builtins, and None for a missing key.

        Raises:
            StoreKeyNotFoundError: `ty` was given and the key has no value.
        """
        raw = self._writes.get(key)
        if raw is None:
            raw = self._read(key)
        if raw is None:
            if ty is None:
                return None
            raise StoreKeyNotFoundError(key)
        return self._codec.decode(raw, ty)

    def pending_writes(self) -> dict[str, bytes]:
        """The encoded values written by this step (published with its directive)."""
        return dict(self._writes)

    def get_pending_updates(self) -> dict[str, Any] | None:
        """The step's writes as decoded values (compatibility with the original SDK)."""
        if not self._writes:
            return None
        return {k: self._codec.decode(v) for k, v in self._writes.items()}
