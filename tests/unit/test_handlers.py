"""Unit tests for grctl.workflow.handlers (BEHAVIOUR.md §1.2 handler checks, §2.3 argument binding)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Annotated, Any, Optional

import msgspec
import pydantic
import pytest

from grctl.errors import CodecError, HandlerDefinitionError, RegistrationError
from grctl.worker.codec import CodecRegistry
from grctl.workflow.handlers import HandlerSpec, bind_arguments, inspect_handler


class Model(pydantic.BaseModel):
    label: str
    count: int


class StructPayload(msgspec.Struct):
    label: str
    count: int


@dataclasses.dataclass
class DataPayload:
    label: str
    count: int


@pytest.fixture
def codec() -> CodecRegistry:
    return CodecRegistry()


# -- handlers used by several tests ---------------------------------------------------------------


async def no_params(ctx: Any) -> str:
    return "no-params"


async def finish(ctx: Any, result: str = "done") -> str:
    return result


async def receive(ctx: Any, value: Any = None) -> Any:
    return value


async def approve(ctx: Any, note: str) -> str:
    return note


async def take_struct(ctx: Any, value: StructPayload) -> StructPayload:
    return value


async def take_model(ctx: Any, value: Model) -> Model:
    return value


async def take_dataclass(ctx: Any, order: DataPayload) -> DataPayload:
    return order


async def two_params(ctx: Any, a: int, b: str = "default-b") -> tuple[int, str]:
    return a, b


async def mixed(ctx: Any, model: Model, items: list[StructPayload], note: Optional[str]) -> Any:  # noqa: UP045
    return model, items, note


# -- inspect_handler: accepted signatures ---------------------------------------------------------


def test_spec_excludes_ctx_and_keeps_order() -> None:
    spec = inspect_handler(mixed)
    assert list(spec.params) == ["model", "items", "note"]
    assert spec.params == {"model": Model, "items": list[StructPayload], "note": Optional[str]}  # noqa: UP045
    assert spec.name == "mixed"
    assert spec.kind == "step"


def test_string_annotations_are_resolved() -> None:
    # This module uses `from __future__ import annotations`: every annotation is a string.
    assert finish.__annotations__["result"] == "str"
    spec = inspect_handler(take_struct)
    assert spec.params == {"value": StructPayload}
    assert inspect_handler(receive).params == {"value": Any}


def test_no_params() -> None:
    spec = inspect_handler(no_params)
    assert spec.params == {}
    assert spec.defaults == frozenset()


def test_defaults_are_recorded() -> None:
    assert inspect_handler(finish).defaults == frozenset({"result"})
    assert inspect_handler(two_params).defaults == frozenset({"b"})
    assert inspect_handler(approve).defaults == frozenset()


def test_kind_is_recorded() -> None:
    spec = inspect_handler(finish, kind="event")
    assert spec.kind == "event"
    assert spec.label == "event handler 'finish'"


def test_ctx_annotation_is_not_resolved() -> None:
    # ctx is often annotated with a type imported under TYPE_CHECKING only.
    async def handler(ctx: NotImportedContext, value: int) -> NotImportedDirective:  # type: ignore[name-defined]  # noqa: F821
        raise NotImplementedError

    assert inspect_handler(handler).params == {"value": int}


def test_annotated_is_kept() -> None:
    async def handler(ctx: Any, n: Annotated[int, msgspec.Meta(ge=0)]) -> None:
        pass

    assert inspect_handler(handler).params == {"n": Annotated[int, msgspec.Meta(ge=0)]}


def test_closure_types_are_resolved() -> None:
    class Local(msgspec.Struct):
        x: int

    async def handler(ctx: Any, value: Local) -> Any:
        return Local  # referencing it makes it a closure variable

    assert inspect_handler(handler).params == {"value": Local}


def test_wrapped_handler_uses_the_wrapped_signature() -> None:
    def logged(fn: Any) -> Any:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs)

        return wrapper

    spec = inspect_handler(logged(take_model))
    assert spec.params == {"value": Model}
    assert spec.name == "take_model"


def test_keyword_only_params_are_allowed() -> None:
    async def handler(ctx: Any, *, a: int, b: str = "x") -> None:
        pass

    spec = inspect_handler(handler)
    assert spec.params == {"a": int, "b": str}
    assert spec.defaults == frozenset({"b"})


# -- inspect_handler: definition errors -----------------------------------------------------------


def test_sync_function_is_rejected() -> None:
    def sync_handler(ctx: Any, value: int) -> None:
        pass

    with pytest.raises(HandlerDefinitionError, match=r"^step handler 'sync_handler' must be async def"):
        inspect_handler(sync_handler)


def test_definition_error_is_a_type_error_and_a_registration_error() -> None:
    def sync_handler(ctx: Any) -> None:
        pass

    with pytest.raises(TypeError) as info:
        inspect_handler(sync_handler)
    assert isinstance(info.value, RegistrationError)


def test_var_args_rejected() -> None:
    async def handler(ctx: Any, *args: Any) -> None:
        pass

    with pytest.raises(HandlerDefinitionError, match=r"step handler 'handler' must not take \*args"):
        inspect_handler(handler)


def test_var_kwargs_rejected() -> None:
    async def handler(ctx: Any, **kwargs: Any) -> None:
        pass

    with pytest.raises(HandlerDefinitionError, match=r"must not take \*\*kwargs"):
        inspect_handler(handler)


def test_missing_annotation_rejected() -> None:
    async def handler(ctx, value):  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(HandlerDefinitionError, match=r"parameter 'value' has no type annotation.*typing\.Any"):
        inspect_handler(handler)


def test_unresolvable_annotation_names_the_parameter() -> None:
    async def handler(ctx: Any, order: MissingOrder) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    with pytest.raises(HandlerDefinitionError) as info:
        inspect_handler(handler)
    message = str(info.value)
    assert "parameter 'order'" in message
    assert "'MissingOrder'" in message
    assert "NameError" in message
    assert "TYPE_CHECKING" in message


def test_local_type_not_in_closure_is_unresolvable() -> None:
    class Local(msgspec.Struct):
        x: int

    async def handler(ctx: Any, value: Local) -> None:
        pass

    with pytest.raises(HandlerDefinitionError, match=r"parameter 'value' has annotation 'Local'"):
        inspect_handler(handler)


def test_missing_ctx_rejected() -> None:
    async def handler() -> None:
        pass

    with pytest.raises(HandlerDefinitionError, match="must take ctx as its first positional parameter"):
        inspect_handler(handler)


def test_keyword_only_ctx_rejected() -> None:
    async def handler(*, ctx: Any, value: int) -> None:
        pass

    with pytest.raises(HandlerDefinitionError, match="must take ctx as its first positional parameter"):
        inspect_handler(handler)


def test_positional_only_param_rejected() -> None:
    async def handler(ctx: Any, value: int, /) -> None:
        pass

    with pytest.raises(HandlerDefinitionError, match=r"parameter 'value' is positional-only.*remove the '/'"):
        inspect_handler(handler)


def test_every_problem_is_reported_at_once() -> None:
    def bad(ctx, a, b: Nope, *args, **kwargs):  # type: ignore[no-untyped-def, name-defined]  # noqa: F821
        pass

    with pytest.raises(HandlerDefinitionError) as info:
        inspect_handler(bad, kind="event")
    message = str(info.value)
    assert message.startswith("event handler 'bad' has 5 problems:\n")
    for expected in [
        "must be async def",
        "parameter 'a' has no type annotation",
        "parameter 'b' has annotation 'Nope'",
        "must not take *args",
        "must not take **kwargs",
    ]:
        assert f"  - {expected}" in message


def test_signature_that_cannot_be_inspected() -> None:
    with pytest.raises(HandlerDefinitionError, match="signature cannot be inspected"):
        inspect_handler(min, kind="query")


# -- bind_arguments: rule 1 (no params, or payload None) ------------------------------------------


@pytest.mark.parametrize("payload", [None, {"x": 1}, "scalar", 42, [1, 2]], ids=repr)
async def test_rule_1_no_params_binds_nothing(codec: CodecRegistry, payload: Any) -> None:
    spec = inspect_handler(no_params)
    kwargs = bind_arguments(spec, payload, codec)
    assert kwargs == {}
    assert await no_params(None, **kwargs) == "no-params"


async def test_evt_6_payload_none_lets_the_default_apply(codec: CodecRegistry) -> None:
    # send("finish") with no payload -> "done"
    kwargs = bind_arguments(inspect_handler(finish), None, codec)
    assert kwargs == {}
    assert await finish(None, **kwargs) == "done"


def test_payload_none_binds_nothing_for_many_params(codec: CodecRegistry) -> None:
    assert bind_arguments(inspect_handler(two_params), None, codec) == {}


async def test_payload_none_with_required_param_fails_at_the_call(codec: CodecRegistry) -> None:
    kwargs = bind_arguments(inspect_handler(approve), None, codec)
    assert kwargs == {}
    with pytest.raises(TypeError, match="note"):
        await approve(None, **kwargs)


# -- bind_arguments: rule 2 (one param) -----------------------------------------------------------


async def test_evt_4_dict_with_the_param_key_is_unwrapped(codec: CodecRegistry) -> None:
    # send("finish", {"result": "x"}) into finish(ctx, result: str = "done") -> "x"
    kwargs = bind_arguments(inspect_handler(finish), {"result": "x"}, codec)
    assert kwargs == {"result": "x"}
    assert await finish(None, **kwargs) == "x"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"value": "hello-string"}, "hello-string"),
        ({"value": 42}, 42),
        ({"value": True}, True),
        ({"value": {"nested": {"key": "val"}, "count": 3, "flag": True}},
         {"nested": {"key": "val"}, "count": 3, "flag": True}),
        ({"value": [1, "two", True]}, [1, "two", True]),
    ],
    ids=["evt-8a-str", "evt-8b-int", "evt-8c-bool", "evt-8d-dict", "evt-8e-list"],
)  # fmt: skip
async def test_evt_8_any_param_receives_the_value(codec: CodecRegistry, payload: Any, expected: Any) -> None:
    kwargs = bind_arguments(inspect_handler(receive, kind="event"), payload, codec)
    assert kwargs == {"value": expected}
    result = await receive(None, **kwargs)
    assert result == expected
    assert type(result) is type(expected)


async def test_evt_8f_none_payload_gives_the_default(codec: CodecRegistry) -> None:
    kwargs = bind_arguments(inspect_handler(receive, kind="event"), None, codec)
    assert kwargs == {}
    assert await receive(None, **kwargs) is None


@pytest.mark.parametrize("payload", ["scalar", 42, 3.5, False, [1, 2], b"raw"], ids=repr)
def test_scalar_into_one_param_is_passed_through(codec: CodecRegistry, payload: Any) -> None:
    assert bind_arguments(inspect_handler(receive), payload, codec) == {"value": payload}


def test_scalar_into_typed_param(codec: CodecRegistry) -> None:
    assert bind_arguments(inspect_handler(approve), "ok", codec) == {"note": "ok"}


def test_dict_without_the_param_key_is_the_whole_payload(codec: CodecRegistry) -> None:
    payload = {"other": 1, "more": [2]}
    kwargs = bind_arguments(inspect_handler(receive), payload, codec)
    assert kwargs["value"] is payload  # Any: unchanged


def test_evt_9_struct_param_converts_the_wrapped_dict(codec: CodecRegistry) -> None:
    payload = {"value": codec.to_primitive(StructPayload(label="s", count=1))}
    kwargs = bind_arguments(inspect_handler(take_struct), payload, codec)
    assert kwargs == {"value": StructPayload(label="s", count=1)}
    assert type(kwargs["value"]) is StructPayload


def test_exec_27_struct_param_converts_the_whole_payload(codec: CodecRegistry) -> None:
    payload = codec.to_primitive(StructPayload(label="s", count=1))  # {"label": ..., "count": ...}
    assert bind_arguments(inspect_handler(take_struct), payload, codec) == {"value": StructPayload("s", 1)}


def test_evt_10_pydantic_param(codec: CodecRegistry) -> None:
    wrapped = bind_arguments(inspect_handler(take_model), {"value": {"label": "m", "count": 2}}, codec)
    assert wrapped == {"value": Model(label="m", count=2)}
    whole = bind_arguments(inspect_handler(take_model), {"label": "m", "count": 2}, codec)
    assert whole == {"value": Model(label="m", count=2)}


def test_dataclass_param(codec: CodecRegistry) -> None:
    kwargs = bind_arguments(inspect_handler(take_dataclass), {"label": "d", "count": 3}, codec)
    assert kwargs == {"order": DataPayload("d", 3)}


def test_one_param_conversion_error_names_handler_and_param(codec: CodecRegistry) -> None:
    with pytest.raises(CodecError, match=r"step handler 'take_struct', parameter 'value': .*StructPayload"):
        bind_arguments(inspect_handler(take_struct), {"label": "s"}, codec)
    with pytest.raises(CodecError, match=r"parameter 'note'.*Expected `str`, got `int`"):
        bind_arguments(inspect_handler(approve), 5, codec)


# -- bind_arguments: rule 3 (two or more params) --------------------------------------------------


async def test_two_params_from_dict(codec: CodecRegistry) -> None:
    kwargs = bind_arguments(inspect_handler(two_params), {"a": 1, "b": "x", "extra": "ignored"}, codec)
    assert kwargs == {"a": 1, "b": "x"}
    assert await two_params(None, **kwargs) == (1, "x")


def test_many_params_are_converted(codec: CodecRegistry) -> None:
    payload = {
        "model": {"label": "m", "count": 1},
        "items": [{"label": "a", "count": 2}],
        "note": None,
    }
    kwargs = bind_arguments(inspect_handler(mixed), payload, codec)
    assert kwargs == {"model": Model(label="m", count=1), "items": [StructPayload("a", 2)], "note": None}


@pytest.mark.parametrize("payload", ["scalar", 42, [1, "x"], StructPayload("s", 1)], ids=repr)
def test_two_params_non_dict_is_a_type_error(codec: CodecRegistry, payload: Any) -> None:
    with pytest.raises(TypeError) as info:
        bind_arguments(inspect_handler(two_params, kind="event"), payload, codec)
    message = str(info.value)
    assert "event handler 'two_params'" in message
    assert "must be a dict" in message
    assert type(payload).__name__ in message
    assert not isinstance(info.value, CodecError)


def test_two_params_missing_key_is_a_key_error_even_with_a_default(codec: CodecRegistry) -> None:
    # b has a default, but the original does not use defaults for multi-parameter handlers.
    with pytest.raises(KeyError) as info:
        bind_arguments(inspect_handler(two_params), {"a": 1}, codec)
    message = str(info.value)
    assert "'b'" in message
    assert "step handler 'two_params'" in message


def test_two_params_conversion_error_names_param(codec: CodecRegistry) -> None:
    with pytest.raises(CodecError, match=r"step handler 'two_params', parameter 'a'.*Expected `int`, got `str`"):
        bind_arguments(inspect_handler(two_params), {"a": "1", "b": "x"}, codec)


def test_spec_can_be_built_by_hand(codec: CodecRegistry) -> None:
    spec = HandlerSpec(params={"n": int})
    assert bind_arguments(spec, {"n": 3}, codec) == {"n": 3}
    with pytest.raises(CodecError, match="step handler '<handler>'"):
        bind_arguments(spec, "x", codec)
