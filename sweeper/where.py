"""`--where` filters over planned trials: `family=ar`, `model=7M,14M`, `epochs>=100`, `flops<1e19`."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sweeper.console import UserError
from sweeper.schema import suggest
from sweeper.yamlnodes import NumberRangeError, parse_number

_EXPRESSION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(!=|>=|<=|=|>|<)\s*(.+?)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
TEXT_KEYS = ("id", "name", "family", "model")
NUMBER_KEYS = ("unique_tokens", "epochs", "tokens", "steps", "flops", "num_params", "seed")


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
        return _OPERATORS[self.op](value, self.values[0])


def parse_where(expressions: Iterable[str], *, train_keys: Iterable[str] = ()) -> list[Filter]:
    known = (*TEXT_KEYS, *NUMBER_KEYS, *train_keys)
    filters = []
    for text in expressions:
        match = _EXPRESSION.match(text)
        if not match:
            raise UserError(f"--where {text!r}: expected KEY=VALUE (or !=, >=, <=, >, <), e.g. family=ar")
        key, op, raw = match.groups()
        if key not in known:
            raise UserError(f"--where {text!r}: unknown key '{key}'{suggest(key, known)}")
        parts = tuple(p.strip() for p in raw.split(",")) if op in ("=", "!=") else (raw,)
        if key in TEXT_KEYS:
            if op not in ("=", "!="):
                raise UserError(f"--where {text!r}: '{key}' compares with = or != only")
            values: tuple[Any, ...] = parts
        else:
            try:
                numbers = [parse_number(p) for p in parts]
            except NumberRangeError as error:
                raise UserError(f"--where {text!r}: the number {error}") from None
            values = tuple(float(n) if n is not None else p for n, p in zip(numbers, parts))
            if op not in ("=", "!=") and not isinstance(values[0], float):
                raise UserError(f"--where {text!r}: '{raw}' is not a number")
        filters.append(Filter(key, op, values))
    return filters


def trial_value(trial: Any, key: str) -> Any:
    if key == "model":
        return trial.model.name
    if key in TEXT_KEYS or key in NUMBER_KEYS:
        return getattr(trial, key)
    return getattr(trial.train, key)


def select(trials: Iterable[Any], filters: list[Filter]) -> list[Any]:
    return [t for t in trials if all(f.holds(trial_value(t, f.key)) for f in filters)]
