"""Typed handlers: consumer methods that take one pydantic model, chosen by the client frame's `type`.

    class ChatSend(BaseModel):
        type: Literal["chat.message"]
        text: str = Field(min_length=1, max_length=2000)

    class RoomConsumer(JsonConsumer):
        @handler(sends=[ChatMessage])
        async def on_chat_message(self, message: ChatSend) -> None: ...

The model is taken from the annotation of the handler's argument (a union of models registers each of
them), or given as `@handler(model=...)`. Each model's `type` field must be a `Literal`: its values are
the frame types routed to the handler. `sends` declares the models of the frames the handler sends;
with the consumer's `sends` class attribute, it is what documentation generators read.
Mistakes (no model, a `type` that is not a Literal, two handlers for one type) fail at class creation.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union, overload

from pydantic import BaseModel, ValidationError

__all__ = ["HandlerSpec", "collect_handlers", "describe_validation_error", "handler"]

_MARK = "__realtime_handler__"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One client frame type, the model that validates it, and the method that handles it."""

    message_type: str
    method: str
    model: type[BaseModel]
    sends: tuple[type[BaseModel], ...]
    summary: str | None


@dataclass(frozen=True, slots=True)
class _Declaration:
    models: tuple[type[BaseModel], ...]
    sends: tuple[type[BaseModel], ...]


@overload
def handler(func: F, /) -> F: ...


@overload
def handler(
    *, model: type[BaseModel] | None = None, sends: Iterable[type[BaseModel]] = ()
) -> Callable[[F], F]: ...


def handler(
    func: F | None = None, /, *, model: type[BaseModel] | None = None, sends: Iterable[type[BaseModel]] = ()
) -> F | Callable[[F], F]:
    """Mark a consumer coroutine method as the handler of the client frames its model describes."""
    declaration = _Declaration(models=(model,) if model is not None else (), sends=tuple(sends))

    def mark(method: F) -> F:
        is_async = inspect.iscoroutinefunction(method)
        if not is_async:
            raise TypeError(f"handler {method.__qualname__} must be an async method")
        setattr(method, _MARK, declaration)
        return method

    if func is None:
        return mark
    return mark(func)


def _annotated_models(method: Callable[..., Any]) -> tuple[type[BaseModel], ...]:
    parameters = list(inspect.signature(method).parameters)
    if len(parameters) != 2:
        raise TypeError(f"handler {method.__qualname__} must take exactly one argument besides self")
    annotation = typing.get_type_hints(method).get(parameters[1])
    candidates = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (Union, types.UnionType)
        else (annotation,)
    )
    if not candidates or not all(
        isinstance(item, type) and issubclass(item, BaseModel) for item in candidates
    ):
        raise TypeError(
            f"the argument of handler {method.__qualname__} must be annotated with pydantic model(s)"
        )
    return tuple(candidates)


def message_types(model: type[BaseModel]) -> tuple[str, ...]:
    """The values of the model's `type` field, which must be annotated with `Literal[...]` of strings."""
    field = model.model_fields.get("type")
    annotation = field.annotation if field is not None else None
    values = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
    if not values or not all(isinstance(value, str) for value in values):
        raise TypeError(f"{model.__name__} needs a field `type: Literal[...]` naming its frame type(s)")
    return tuple(values)


def collect_handlers(cls: type) -> dict[str, HandlerSpec]:
    """The typed handlers of a consumer class (its own and inherited), by frame type."""
    specs: dict[str, HandlerSpec] = {}
    for name in dir(cls):
        method = getattr(cls, name, None)
        declaration = getattr(method, _MARK, None)
        if method is None or not isinstance(declaration, _Declaration):
            continue
        summary = inspect.getdoc(method)
        for model in declaration.models or _annotated_models(method):
            for message_type in message_types(model):
                if message_type in specs:
                    raise TypeError(
                        f"{cls.__name__}: frame type {message_type!r} has two handlers, "
                        f"{specs[message_type].method} and {name}"
                    )
                specs[message_type] = HandlerSpec(
                    message_type=message_type,
                    method=name,
                    model=model,
                    sends=declaration.sends,
                    summary=summary.splitlines()[0] if summary else None,
                )
    return specs


def describe_validation_error(error: ValidationError) -> str:
    """Pydantic's errors as one line: `text: String should have at least 1 character; ...`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'frame'}: {item['msg']}" for item in error.errors()
    )
