"""Lazy package exports: a package's `__getattr__` imports a name's module on first access.

So `import grctl; grctl.Client` loads the client and not the worker (RocksDB), and
`import grctl.workflow` loads no Kafka client. Imports nothing of grctl.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["load"]


def load(package: str, exports: Mapping[str, str], name: str) -> Any:
    """Import `exports[name]` (a module path) and return its attribute `name`, cached on the package.

    Args:
        package: the package's `__name__`.
        exports: public name -> module that defines it.
        name: the attribute asked for.

    Returns:
        The attribute's value.

    Raises:
        AttributeError: `name` is not one of the package's lazy exports.
    """
    module = exports.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    setattr(sys.modules[package], name, value)
    return value
