"""Handler inspection (at decoration time) and argument binding (at call time).

A handler is ``async def name(ctx, p1: T1, p2: T2 = default, ...)``. When it is decorated,
`inspect_handler` checks the signature and resolves the parameter annotations once. When a
step runs, `bind_arguments` maps the step's payload (start input, event payload, or None for
plain steps) onto those parameters with the rules of the original grctl (BEHAVIOUR.md §2.3):

1. No parameter besides ctx, or payload None: no arguments, so parameter defaults apply.
2. One parameter ``p``: ``payload[p]`` if the payload is a dict with key ``p``, else the whole
   payload; converted to the annotation (``Any`` leaves it unchanged).
3. Two or more: the payload must be a dict; each parameter takes ``payload[name]`` converted
   to its annotation. A missing key is a ``KeyError`` (defaults are not used); extra keys are
   ignored.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grctl.codec import CodecRegistry
from grctl.errors import CodecError, HandlerArgumentError, HandlerDefinitionError, MissingArgumentError

__all__ = ["HandlerSpec", "bind_arguments", "inspect_handler"]

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """The parameters of a handler, as `bind_arguments` needs them.

    Attributes:
        params: Parameter name to resolved annotation, in declaration order, ctx excluded.
        defaults: Names of the parameters that have a default value.
        name: The handler's function name, for error messages.
        kind: What the handler is registered as ("start", "step", "event", "query"), for
            error messages.
    """

    params: dict[str, Any]
    defaults: frozenset[str] = frozenset()
    name: str = "<handler>"
    kind: str = "step"

    @property
    def label(self) -> str:
        """The handler as error messages name it, e.g. ``step handler 'charge'``."""
        return f"{self.kind} handler {self.name!r}"


def _handler_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    if isinstance(name, str):
        return name
    if isinstance(fn, functools.partial):
        return _handler_name(fn.func)
    return repr(fn)


def _namespaces(fn: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Globals and closure variables of the function that defines the handler."""
    target: Any = fn
    while True:
        if isinstance(target, functools.partial):
            target = target.func
        elif hasattr(target, "__wrapped__"):
            target = target.__wrapped__
        else:
            break
    globalns: dict[str, Any] = getattr(target, "__globals__", {})
    localns: dict[str, Any] = {}
    if isinstance(target, types.FunctionType) and target.__closure__:
        try:
            localns = dict(inspect.getclosurevars(target).nonlocals)
        except ValueError:  # an empty cell (variable assigned after the def)
            localns = {}
    return globalns, localns


def _resolve(name: str, annotation: Any, globalns: dict[str, Any], localns: dict[str, Any]) -> tuple[Any, str | None]:
    """Resolve one annotation (string or containing forward references); return (type, problem)."""
    holder = types.SimpleNamespace(__annotations__={name: annotation})
    try:
        hints = typing.get_type_hints(holder, globalns=globalns, localns=localns or None, include_extras=True)
    except Exception as exc:  # noqa: BLE001  evaluating an annotation string can raise anything
        shown = annotation if isinstance(annotation, str) else repr(annotation)
        return None, (
            f"parameter {name!r} has annotation {shown!r}, which cannot be resolved "
            f"({type(exc).__name__}: {exc}); define or import the type at module level (an import "
            f"under `if TYPE_CHECKING:` is not visible at runtime)"
        )
    return hints[name], None


def inspect_handler(fn: Callable[..., Any], *, kind: str = "step") -> HandlerSpec:
    """Check a handler's signature and resolve its parameter annotations.

    Every problem of the handler is collected and reported in one error.

    Args:
        fn: The decorated function: ``async def name(ctx, p: T, ...)``.
        kind: What it is registered as ("start", "step", "event", "query"), for messages.

    Returns:
        The handler's `HandlerSpec`.

    Raises:
        HandlerDefinitionError: (a ``TypeError``) if the function is not ``async def``, does
            not take ctx as its first positional parameter, takes ``*args`` or ``**kwargs``, or
            has a parameter that is positional-only, unannotated, or annotated with a type that
            cannot be resolved. The message names the handler and lists every problem.
    """
    name = _handler_name(fn)
    problems: list[str] = []
    if not inspect.iscoroutinefunction(fn):
        problems.append(f"must be async def (define it as `async def {name}(ctx, ...)`)")

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise HandlerDefinitionError(
            f"{kind} handler {name!r}: its signature cannot be inspected ({exc}); "
            f"use a plain `async def {name}(ctx, ...)` function"
        ) from exc

    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in _POSITIONAL:
        problems.append("must take ctx as its first positional parameter")
        rest = parameters
    else:
        rest = parameters[1:]

    globalns, localns = _namespaces(fn)
    params: dict[str, Any] = {}
    defaults: set[str] = set()
    for param in rest:
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            problems.append(
                f"must not take *{param.name}: the payload is passed by parameter name, so declare "
                "each value as a named parameter"
            )
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            problems.append(f"must not take **{param.name}: declare each payload key as a named, annotated parameter")
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            problems.append(
                f"parameter {param.name!r} is positional-only, but arguments are passed by name; "
                "remove the '/' from the signature"
            )
        if param.annotation is inspect.Parameter.empty:
            problems.append(
                f"parameter {param.name!r} has no type annotation; annotate it (use `typing.Any` to "
                "accept any value unchanged)"
            )
            continue
        resolved, problem = _resolve(param.name, param.annotation, globalns, localns)
        if problem is not None:
            problems.append(problem)
            continue
        params[param.name] = resolved
        if param.default is not inspect.Parameter.empty:
            defaults.add(param.name)

    if problems:
        if len(problems) == 1:
            separator = " " if problems[0].startswith("must") else ": "
            message = f"{kind} handler {name!r}{separator}{problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in problems)
            message = f"{kind} handler {name!r} has {len(problems)} problems:\n{listed}"
        raise HandlerDefinitionError(message)
    return HandlerSpec(params=params, defaults=frozenset(defaults), name=name, kind=kind)


def _convert(spec: HandlerSpec, param: str, value: Any, annotation: Any, codec: CodecRegistry) -> Any:
    try:
        return codec.from_primitive(value, annotation)
    except CodecError as exc:
        raise CodecError(f"{spec.label}, parameter {param!r}: {exc}") from exc


def bind_arguments(spec: HandlerSpec, payload: Any, codec: CodecRegistry) -> dict[str, Any]:
    """Map a step payload onto a handler's parameters (the rules of BEHAVIOUR.md §2.3).

    Args:
        spec: The handler's spec, from `inspect_handler`.
        payload: The start input, the event payload, or None (plain steps, payload-less events).
        codec: Converts each value to its parameter's annotation.

    Returns:
        The keyword arguments to call the handler with, besides ctx. Empty when the handler
        takes no parameters or the payload is None, so parameter defaults apply (a parameter
        without default then makes the call itself raise ``TypeError``).

    Raises:
        HandlerArgumentError: (a ``TypeError``) If the handler has two or more parameters and the
            payload is not a dict.
        MissingArgumentError: (a ``KeyError``) If the handler has two or more parameters and the
            payload lacks one of them (defaults are not used in that case, as in the original grctl).
        CodecError: If a value cannot be converted to its parameter's annotation.
    """
    params = spec.params
    if not params or payload is None:
        return {}
    if len(params) == 1:
        ((name, annotation),) = params.items()
        value = payload[name] if isinstance(payload, dict) and name in payload else payload
        return {name: _convert(spec, name, value, annotation, codec)}
    if not isinstance(payload, dict):
        raise HandlerArgumentError(
            f"{spec.label} takes parameters {', '.join(params)}, so its payload must be a dict with "
            f"those keys, got {type(payload).__name__}"
        )
    kwargs: dict[str, Any] = {}
    for name, annotation in params.items():
        try:
            value = payload[name]
        except KeyError:
            keys = sorted(map(str, payload))
            raise MissingArgumentError(
                f"{spec.label} needs payload key {name!r}, but the payload has keys {keys}; send every "
                f"parameter ({', '.join(params)}): defaults do not apply to handlers with several parameters"
            ) from None
        kwargs[name] = _convert(spec, name, value, annotation, codec)
    return kwargs
