"""`--where` filters over planned trials: `family=ar`, `model=7M,14M`, `epochs>=100`, `flops<1e19`
(`==` is read as `=`).

Each key has a kind, known before any trial is read: text keys (and the spec's choice-valued
train keys) match with = and != only, and a choice is checked against the values it can take;
numeric keys also order with <, <=, >, >=; flags match true or false; the betas pair is not a
filter key. So a filter either means what it says or is refused, naming the keys that compare.
"""

from __future__ import annotations

import functools
import operator
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sweeper.console import UserError
from sweeper.spec.schema import suggest
from sweeper.spec.nodes import NumberRangeError, parse_number

_EXPRESSION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|==|>=|<=|=|>|<)\s*(.+?)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
TEXT_KEYS = ("id", "name", "family", "model")
NUMBER_KEYS = ("unique_tokens", "epochs", "tokens", "steps", "flops", "num_params", "seed")
_NULL = ("null", "none")


@dataclass(frozen=True, slots=True)
class Filter:
    key: str
    op: str
    values: tuple[Any, ...]

    def holds(self, value: Any) -> bool:
        if self.op == "=":
            return value in self.values
        if self.op == "!=":
            return value not in self.values
        return value is not None and _OPERATORS[self.op](value, self.values[0])


@functools.cache
def train_kinds() -> dict[str, tuple[str, tuple[Any, ...]]]:
    """Each train key's kind ("number", "flag", "choice" with its values, or "pair")."""
    from sweeper.spec import TrainSpec

    kinds: dict[str, tuple[str, tuple[Any, ...]]] = {}
    for name, hint in typing.get_type_hints(TrainSpec).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if hint is bool:
            kinds[name] = ("flag", ())
        elif typing.get_origin(hint) is typing.Literal:
            kinds[name] = ("choice", typing.get_args(hint))
        elif typing.get_origin(hint) is tuple:
            kinds[name] = ("pair", ())
        elif hint in (int, float) or (args and all(a in (int, float) for a in args)):
            kinds[name] = ("number", ())
        else:
            kinds[name] = ("pair", ())  # nothing else is filterable
    return kinds


def ordered_keys(train_keys: Iterable[str] = ()) -> list[str]:
    kinds = train_kinds()
    return list(dict.fromkeys([*NUMBER_KEYS, *(k for k in train_keys if kinds.get(k, ("",))[0] == "number")]))


def parse_where(expressions: Iterable[str], *, train_keys: Iterable[str] = ()) -> list[Filter]:
    train_keys = tuple(train_keys)
    known = tuple(dict.fromkeys((*TEXT_KEYS, *NUMBER_KEYS, *train_keys)))
    filters = []
    for text in expressions:
        match = _EXPRESSION.match(text)
        if not match:
            raise UserError(f"--where {text!r}: expected KEY=VALUE (or !=, >=, <=, >, <), e.g. family=ar")
        key, op, raw = match.groups()
        op = "=" if op == "==" else op  # as Python and most query languages write it
        if key not in known:
            raise UserError(f"--where {text!r}: unknown key '{key}'{suggest(key, known)}")
        kind, choices = ("text", ()) if key in TEXT_KEYS else ("number", ()) if key in NUMBER_KEYS \
            else train_kinds()[key]
        parts = tuple(p.strip() for p in raw.split(",")) if op in ("=", "!=") else (raw,)
        if kind == "pair":
            raise UserError(f"--where {text!r}: '{key}' is not a filter key; filter on "
                            f"{', '.join(k for k in known if k != key and _kind(k, train_keys) != 'pair')}")
        if kind != "number" and op not in ("=", "!="):
            raise UserError(f"--where {text!r}: '{key}' compares with = or != only; <, <=, >, >= compare "
                            f"the numeric keys ({', '.join(ordered_keys(train_keys))})")
        if kind == "text":
            values: tuple[Any, ...] = parts
        elif kind == "choice":
            for part in parts:
                if part not in choices:
                    raise UserError(f"--where {text!r}: '{key}' is one of {', '.join(map(str, choices))}, "
                                    f"not '{part}'{suggest(part, map(str, choices))}")
            values = parts
        elif kind == "flag":
            lowered = [p.lower() for p in parts]
            if any(p not in ("true", "false") for p in lowered):
                raise UserError(f"--where {text!r}: '{key}' is true or false")
            values = tuple(p == "true" for p in lowered)
        else:
            values = tuple(_number(text, p, nullable=op in ("=", "!=")) for p in parts)
        filters.append(Filter(key, op, values))
    return filters


def _kind(key: str, train_keys: tuple[str, ...]) -> str:
    if key in TEXT_KEYS:
        return "text"
    if key in NUMBER_KEYS:
        return "number"
    return train_kinds()[key][0] if key in train_keys else "text"


def _number(text: str, part: str, *, nullable: bool) -> float | None:
    if nullable and part.lower() in _NULL:
        return None  # grad_clip=null: clipping off
    try:
        number = parse_number(part)
    except NumberRangeError as error:
        raise UserError(f"--where {text!r}: the number {error}") from None
    if number is None:
        raise UserError(f"--where {text!r}: '{part}' is not a number")
    return float(number)


def trial_value(trial: Any, key: str) -> Any:
    if key == "model":
        return trial.model.name
    if key in TEXT_KEYS or key in NUMBER_KEYS:
        return getattr(trial, key)
    return getattr(trial.train, key)


def select(trials: Iterable[Any], filters: list[Filter]) -> list[Any]:
    return [t for t in trials if all(f.holds(trial_value(t, f.key)) for f in filters)]
