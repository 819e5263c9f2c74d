"""Events and targets as JSON, for the bus between nodes.

The hub's events are frozen dataclasses of strings, numbers, enums and tuples of them
(:mod:`chatd.core.events`), and its targets name rooms and members by key and id
(:mod:`chatd.core.targets`); so one generic codec, driven by the type hints, carries
every one of them unchanged. A new event needs no code here.

A payload is ``[node, event name, {fields}, target name, {fields}]``: the node that
published it first, so a node drops its own echoes without decoding the rest.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from functools import cache
from typing import Any

from chatd.core import events as ev
from chatd.core import targets as tg


def _classes(union: object) -> dict[str, type]:
    return {cls.__name__: cls for cls in typing.get_args(union) if isinstance(cls, type)}


_EVENTS = _classes(ev.Event)
_TARGETS = _classes(tg.Target)


class CodecError(ValueError):
    """A payload that is not an event this version knows (a newer node, or damage)."""


def encode(node: str, event: ev.Event, target: tg.Target) -> str:
    """The payload of ``event`` to ``target``, published by ``node``."""
    return json.dumps(
        [node, type(event).__name__, _plain(event), type(target).__name__, _plain(target)],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def origin(payload: str) -> str:
    """The node that published ``payload`` (cheap: no full decode)."""
    return payload[2 : payload.index('"', 2)] if payload.startswith('["') else ""


def decode(payload: str | bytes) -> tuple[str, ev.Event, tg.Target]:
    """``(node, event, target)`` of a payload; :class:`CodecError` if it is not one."""
    try:
        node, name, fields, target_name, target_fields = json.loads(payload)
        event = _build(_EVENTS[name], fields)
        target = _build(_TARGETS[target_name], target_fields)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CodecError(f"not an event payload: {exc}") from None
    return str(node), typing.cast(ev.Event, event), typing.cast(tg.Target, target)


def _plain(value: Any) -> Any:
    """A dataclass, enum or tuple as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, fields: dict[str, Any]) -> object:
    hints = _hints(cls)
    return cls(**{name: _value(hints[name], value) for name, value in fields.items()})


def _value(hint: Any, value: Any) -> Any:
    """``value`` (from JSON) as the type ``hint`` says."""
    origin_ = typing.get_origin(hint)
    if origin_ is types.UnionType or origin_ is typing.Union:
        if value is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(options[0], value)
    if origin_ is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v) for v in value)
        return tuple(_value(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return _build(hint, value)
        if issubclass(hint, enum.Enum):
            return hint(value)
        if hint is float:
            return float(value)
        if not isinstance(value, hint):
            raise TypeError(f"{value!r} is not a {hint.__name__}")
    return value
