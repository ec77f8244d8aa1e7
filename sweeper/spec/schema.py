"""Reading located YAML into frozen dataclasses, strictly.

A dataclass declares its YAML keys as fields; `field` metadata adds the checks a type cannot say
(`positive`, `min`, `max`, `unit`). `read_dataclass` rejects unknown keys with a did-you-mean,
converts numbers with units, and turns a `FieldError` raised by `__post_init__` (a contradiction
between fields) into an error at that key's file:line.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Set as AbstractSet
from decimal import Decimal
from functools import cache
from typing import Any, Literal, TypeVar, get_args, get_origin

from sweeper.spec.nodes import Node, NumberRangeError, NumberText, SpecError, child_path, parse_bytes, parse_number

T = TypeVar("T")


class FieldError(ValueError):
    """Raised in `__post_init__`: `key` names the offending field (or "" for the whole mapping)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key, self.message = key, message

    def __reduce__(self) -> tuple[Any, ...]:  # rebuilt from (key, message), not from args
        return type(self), (self.key, self.message)


def spec_field(default: Any = dataclasses.MISSING, *, positive: bool = False, min: float | None = None,
               max: float | None = None, below: float | None = None, unit: str | None = None,
               doc: str = "") -> Any:
    """A dataclass field with the checks the YAML reader applies.

    `unit="bytes"` reads 80GB / 24GiB; `below` is an exclusive upper bound.
    """
    meta = {"positive": positive, "min": min, "max": max, "below": below, "unit": unit, "doc": doc}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or a frozen default")
    return dataclasses.field(default=default, metadata=meta)


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    choices = list(choices)
    by_case = [c for c in choices if c.lower() == word.lower()]
    close = by_case or difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


MAX_SHOWN = 60  # characters of a value quoted in a message


def describe(value: Any) -> str:
    """A value as a message quotes it: escaped (repr), and cut short when long."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str) and len(value) > MAX_SHOWN:
        shown = repr(type(value)(value[:MAX_SHOWN]))
        return f"{shown}... ({len(value):,} characters)"
    return repr(value)


def check_keys(node: Node, allowed: typing.Iterable[str], what: str) -> None:
    allowed = list(allowed)
    for key, child in node.value.items():
        if key not in allowed:
            hint = suggest(key, allowed) or f" (known keys: {', '.join(sorted(allowed))})"
            raise SpecError(f"unknown key {describe(key)} in {what}{hint}", file=child.file, line=child.line,
                            path=child.path)


def require_mapping(node: Node, what: str) -> None:
    if not node.is_mapping:
        raise node.error(f"expected a mapping of {what}, got {describe(node.value)}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def read_dataclass(cls: type[T], node: Node, what: str, **given: Any) -> T:
    """Build `cls` from a mapping node; `given` supplies fields that are not read from YAML."""
    require_mapping(node, what)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in given}
    check_keys(node, fields, what)
    values: dict[str, Any] = dict(given)
    for name, f in fields.items():
        if name in node.value:
            values[name] = read_value(_hints(cls)[name], node.value[name], f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise node.error(f"missing required key '{name}' in {what}")
    try:
        return cls(**values)
    except FieldError as error:
        target = node.value.get(error.key, node)
        raise target.error(error.message) from None


def read_value(hint: Any, node: Node, meta: typing.Mapping[str, Any] | None = None) -> Any:
    meta = meta or {}
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if node.value is None and len(options) < len(args):
            return None
        if len(options) == 1:
            return read_value(options[0], node, meta)
        return _read_union(options, node, meta)
    if origin is Literal:
        if node.value in args and isinstance(node.value, str):
            return node.value
        choices = ", ".join(map(str, args))
        hint_text = suggest(str(node.value), map(str, args)) if isinstance(node.value, str) else ""
        raise node.error(f"expected one of {choices}, got {describe(node.value)}{hint_text}")
    if origin is tuple:
        if not node.is_sequence:
            raise node.error(f"expected a list, got {describe(node.value)}")
        items = node.value
        if len(args) == 2 and args[1] is Ellipsis:
            if not items:
                raise node.error("expected a non-empty list")
            return tuple(read_value(args[0], item, meta) for item in items)
        if len(items) != len(args):
            raise node.error(f"expected a list of {len(args)} values, got {len(items)}")
        return tuple(read_value(a, item, meta) for a, item in zip(args, items))
    if dataclasses.is_dataclass(hint):
        return read_dataclass(hint, node, node.path or "the spec")
    if hint is bool:
        if not isinstance(node.value, bool):
            raise node.error(f"expected true or false, got {describe(node.value)}")
        return node.value
    if hint is str:
        if not isinstance(node.value, str) or isinstance(node.value, NumberText) or not node.value.strip():
            raise node.error(f"expected a non-empty string, got {describe(node.value)}")
        return node.value
    if hint in (int, float):
        return read_number(node, integral=hint is int, **_bounds(meta))
    raise TypeError(f"unsupported field type {hint!r}")


def _read_union(options: list[Any], node: Node, meta: typing.Mapping[str, Any]) -> Any:
    errors = []
    for option in options:
        try:
            return read_value(option, node, meta)
        except SpecError as error:
            errors.append(error.message)
    raise node.error(errors[0])


def _bounds(meta: typing.Mapping[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("positive", "min", "max", "below", "unit")}


def read_number(node: Node, *, integral: bool, positive: bool = False, min: float | None = None,
                max: float | None = None, below: float | None = None, unit: str | None = None) -> int | float:
    """A number with optional units; `integral` numbers must be whole (1.5B is, 2.5 is not)."""
    try:
        number = parse_bytes(node.value) if unit == "bytes" else parse_number(node.value)
    except NumberRangeError as error:
        raise node.error(f"{describe(node.value)} {error}") from None
    kind = "a size in bytes (e.g. 80GB)" if unit == "bytes" else ("a whole number" if integral else "a number")
    if positive:
        kind = f"a positive {kind.removeprefix('a ')}"
    if number is None:
        raise node.error(f"expected {kind}, got {describe(node.value)}")
    if integral and number != number.to_integral_value():
        raise node.error(f"expected {kind}, got {describe(node.value)}")
    value: int | float = int(number) if integral else float(number)
    _check_bounds(node, number, kind, positive=positive, min=min, max=max, below=below)
    return value


def _check_bounds(node: Node, number: Decimal, kind: str, *, positive: bool, min: float | None,
                  max: float | None, below: float | None) -> None:
    shown = describe(node.value)
    if positive and number <= 0:
        raise node.error(f"expected {kind}, got {shown}")
    if min is not None and number < Decimal(repr(min)):
        raise node.error(f"expected a value of at least {_bound(min)}, got {shown}")
    if max is not None and number > Decimal(repr(max)):
        raise node.error(f"expected a value of at most {_bound(max)}, got {shown}")
    if below is not None and number >= Decimal(repr(below)):
        raise node.error(f"expected a value below {_bound(below)}, got {shown}")


def _bound(value: float) -> str:
    """4,294,967,295 and 10,000 in full; 1e15 and 0.5 short."""
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e13 else f"{value:g}".replace("e+", "e")


def plain(value: Any, *, leave_out: AbstractSet[str] = frozenset(), typed: bool = False) -> Any:
    """A config as plain data: dataclasses and mappings become dicts, tuples lists, recursively.

    The one converter from config dataclasses to plain data, for plan documents, MLflow params
    (`sweeper.tracking.flatten` writes its dotted keys) and trial ids. `leave_out` drops fields of
    those names at every level (trial ids leave out the how-not-what keys); `typed` writes a number
    in a float field as a float (1 as 1.0), so that equal configs always give equal text.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        floats = _float_fields(type(value)) if typed else frozenset()
        out = {}
        for f in dataclasses.fields(value):
            if f.name in leave_out:
                continue
            child = getattr(value, f.name)
            if f.name in floats:
                child = tuple(float(v) for v in child) if isinstance(child, tuple) else \
                    (float(child) if isinstance(child, (int, float)) else child)
            out[f.name] = plain(child, leave_out=leave_out, typed=typed)
        return out
    if isinstance(value, Mapping):
        return {key: plain(child, leave_out=leave_out, typed=typed) for key, child in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(child, leave_out=leave_out, typed=typed) for child in value]
    return value


@cache
def _float_fields(cls: type) -> frozenset[str]:
    return frozenset(name for name, hint in _hints(cls).items() if "float" in str(hint))


def node_at(node: Node, key: str | int) -> Node:
    return node.value[key]


def scalar_node(value: Any, like: Node, key: str | int) -> Node:
    """A synthetic node for a derived value, located where its source was written."""
    return Node(value, like.file, like.line, child_path(like.path, key))
