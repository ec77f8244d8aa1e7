"""The grid language and its expansion into points (family, model, U, epochs, train settings).

`grid` is a list of blocks (or one block); the trials are the union of the blocks' points:
- a product block: each key is an axis (family, model, unique_tokens, epochs, or any train key,
  seed included) given a value or a list; `zip` holds groups of axes that move together;
- an iso-FLOP block (`isoflop: {flops: [...], window: 3}`): for each budget C and model N,
  tokens D = C / 6N, keeping only models within `window`x of the compute-optimal size N_opt(C);
  with `unique_tokens` U, epochs = D / U (a point with D <= U is single-epoch on D tokens).
Then `overrides` set train keys where their `when` matches, `exclude` drops matching points, and
`include` adds single points that exclude rules do not touch. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Any, Union, get_args, get_origin

from sweeper.spec.presets import ModelSpec
from sweeper.spec.schema import check_keys, describe, read_dataclass, read_number, read_value, require_mapping, \
    spec_field, suggest
from sweeper.spec.nodes import Node, NumberText, SpecError
from sweeper.trial import Family

BASE_AXES = ("family", "model", "unique_tokens", "epochs")
DERIVED_KEYS = ("tokens", "flops")  # usable in `when` / `exclude`, not as axes
# Points a grid may expand to unless the spec raises `max_grid_points`: a study of 10,000 trials is
# already large, and a typo in an axis should not spend minutes and gigabytes before failing.
MAX_GRID_POINTS = 10_000
MAX_GRID_POINTS_LIMIT = 10**7
MAX_TOKENS = 10**15  # unique or seen: a thousand times the largest corpora trained on today
MAX_EPOCHS = 10**6


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    file: str
    line: int
    path: str

    @classmethod
    def of(cls, node: Node) -> Origin:
        return cls(file=node.file, line=node.line, path=node.path)

    def error(self, message: str) -> SpecError:
        return SpecError(message, file=self.file, line=self.line, path=self.path)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComputeOptimalLaw:
    """L = E + A/N^alpha + B/D^beta; only A, B, alpha, beta fix N_opt(C). Default: datablations' C4
    fit (PAPER.md: A=520.96, B=1488.2, alpha=beta=0.3527)."""

    A: float = spec_field(520.96, positive=True, max=1e12)
    B: float = spec_field(1488.2, positive=True, max=1e12)
    alpha: float = spec_field(0.3527, positive=True, max=10)
    beta: float = spec_field(0.3527, positive=True, max=10)

    def optimal_params(self, flops: float) -> float:
        """N_opt(C) = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)) (PAPER.md)."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return g * (flops / 6) ** (b / (a + b))


@dataclass(frozen=True, slots=True, kw_only=True)
class IsoFlop:
    flops: tuple[float, ...] = spec_field(positive=True, max=1e30)
    window: float = spec_field(3.0, min=1, max=1e6, doc="keep models with N_opt/window <= N <= N_opt*window")
    law: ComputeOptimalLaw = ComputeOptimalLaw()


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    zips: tuple[tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]], ...]
    isoflop: IsoFlop | None
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    key: str
    values: frozenset[Any] | None = None
    low: float | None = None
    high: float | None = None

    def holds(self, value: Any) -> bool:
        if self.values is not None:
            return value in self.values
        if value is None:  # a train key switched off (grad_clip: null) is in no range
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    conditions: tuple[Condition, ...]
    origin: Origin

    def matches(self, values: Mapping[str, Any]) -> bool:
        return all(c.holds(values[c.key]) for c in self.conditions)


@dataclass(frozen=True, slots=True, kw_only=True)
class Override:
    when: Rule
    settings: tuple[tuple[str, Any], ...]
    origin: Origin


@dataclass(frozen=True, slots=True, kw_only=True)
class Grid:
    blocks: tuple[Block, ...]
    include: tuple[Block, ...]
    exclude: tuple[Rule, ...]
    overrides: tuple[Override, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """One grid point before sizing. `settings` are the train keys it sets (axes and overrides)."""

    family: str
    model: str
    unique_tokens: int
    tokens: int
    epochs: float
    settings: tuple[tuple[str, Any], ...]
    flops_budget: float | None
    origin: Origin


# --- reading ------------------------------------------------------------------------------------

class _AxisTypes:
    """How to read one value of each axis, and which names are axes."""

    def __init__(self, models: Mapping[str, ModelSpec], train_fields: Mapping[str, tuple[Any, Any]]):
        self.models, self.train_fields = models, train_fields

    @property
    def axis_names(self) -> tuple[str, ...]:
        return BASE_AXES + tuple(self.train_fields)

    def read(self, key: str, node: Node) -> Any:
        if key == "family":
            return read_value(Family, node)
        if key == "model":
            name = read_value(str, node) if not isinstance(node.value, NumberText) else str(node.value)
            if name not in self.models:
                raise node.error(f"unknown model preset '{name}'{suggest(name, self.models)}")
            return name
        if key in ("unique_tokens", "tokens"):
            return read_number(node, integral=True, positive=True, max=MAX_TOKENS)
        if key == "epochs":
            number = read_number(node, integral=False, positive=True, max=MAX_EPOCHS)
            if number < 1:
                raise node.error(f"epochs must be at least 1, got {describe(node.value)} "
                                 "(for less data, lower unique_tokens)")
            return number
        if key == "flops":
            return read_number(node, integral=False, positive=True)
        hint, meta = self.train_fields[key]
        return read_value(hint, node, meta)

    def is_number(self, key: str) -> bool:
        if key in ("unique_tokens", "tokens", "epochs", "flops"):
            return True
        hint = self.train_fields[key][0] if key in self.train_fields else None
        if get_origin(hint) in (Union, UnionType):  # grad_clip: float | None
            return all(a in (int, float) for a in get_args(hint) if a is not type(None))
        return hint in (int, float)

    def read_list(self, key: str, node: Node) -> tuple[Any, ...]:
        items = node.value if node.is_sequence else [node]
        if node.is_sequence and not items:
            raise node.error("empty axis: give at least one value")
        values: list[Any] = []
        for item in items:
            value = self.read(key, item)
            if value in values:
                raise item.error(f"duplicate value {describe(item.value)} in axis '{key}'")
            values.append(value)
        return tuple(values)


def read_grid(root: Node, *, models: Mapping[str, ModelSpec], train_fields: Mapping[str, tuple[Any, Any]],
              max_points: int = MAX_GRID_POINTS) -> Grid:
    types = _AxisTypes(models, train_fields)
    grid_node = root.value["grid"]
    block_nodes = grid_node.value if grid_node.is_sequence else [grid_node]
    if grid_node.is_sequence and not block_nodes:
        raise grid_node.error("the grid is empty: give at least one block")
    blocks = tuple(_read_block(node, types) for node in block_nodes)
    top = root.value
    include = tuple(_read_include(n, types) for n in _list(top.get("include"), "include points"))
    _check_size(blocks, len(include), max_points)
    exclude = tuple(_read_rule(n, types, "exclude rule") for n in _list(top.get("exclude"), "exclude rules"))
    overrides = tuple(_read_override(n, types) for n in _list(top.get("overrides"), "overrides"))
    return Grid(blocks=blocks, include=include, exclude=exclude, overrides=overrides)


def block_factors(block: Block) -> list[tuple[str, int]]:
    """(axis or zip group, number of values) whose product is the block's number of points, before
    exclusions (an iso-FLOP block: at most one point per model and budget)."""
    factors = [(name, len(values)) for name, values in block.axes]
    factors += [("+".join(names), len(rows)) for names, rows in block.zips]
    if block.isoflop is not None:
        factors.append(("isoflop.flops", len(block.isoflop.flops)))
    return factors


def _check_size(blocks: tuple[Block, ...], includes: int, max_points: int) -> None:
    """Counted from the axis lengths, before anything is expanded."""
    sizes = [math.prod(n for _, n in block_factors(block)) for block in blocks]
    total = sum(sizes) + includes
    if total <= max_points:
        return
    largest = max(range(len(blocks)), key=sizes.__getitem__)
    factors = " x ".join(f"{name} {n:,}" for name, n in block_factors(blocks[largest]))
    whole = f"; the grid has {total:,} in all" if total != sizes[largest] else ""
    advice = f"set `max_grid_points: {total}` at the top of the spec to plan them all" \
        if total <= MAX_GRID_POINTS_LIMIT else f"sweeper plans at most {MAX_GRID_POINTS_LIMIT:,}: split the study"
    raise blocks[largest].origin.error(
        f"this block expands to {sizes[largest]:,} points ({factors}){whole}, over the limit of {max_points:,}; "
        f"{advice}")


def _list(node: Node | None, what: str) -> list[Node]:
    if node is None or node.value is None:
        return []
    if not node.is_sequence:
        raise node.error(f"expected a list of {what}, got {describe(node.value)}")
    return node.value


def _read_block(node: Node, types: _AxisTypes) -> Block:
    require_mapping(node, "axes (family, model, unique_tokens, epochs, train keys), zip, isoflop")
    check_keys(node, (*types.axis_names, "zip", "isoflop"), "a grid block")
    isoflop = read_dataclass(IsoFlop, node.value["isoflop"], "isoflop") if "isoflop" in node.value else None
    axes = {key: types.read_list(key, child) for key, child in node.value.items() if key not in ("zip", "isoflop")}
    zips = tuple(_read_zip(group, types, set(axes)) for group in _list(node.value.get("zip"), "zip groups"))
    zipped = {name for names, _ in zips for name in names}
    if isoflop is not None:
        if "epochs" in axes or "epochs" in zipped:
            raise node.error("an isoflop block derives epochs from its FLOP budgets; remove `epochs`")
        if "model" not in axes and "model" not in zipped:
            axes["model"] = tuple(types.models)
    for required in ("family", "model", "unique_tokens") if isoflop is None else ("family",):
        if required not in axes and required not in zipped:
            raise node.error(f"missing axis '{required}' in this grid block")
    seen: set[str] = set()
    for names, _ in zips:
        if seen & set(names):
            raise node.error(f"axis '{sorted(seen & set(names))[0]}' appears in two zip groups")
        seen |= set(names)
    return Block(axes=tuple(axes.items()), zips=zips, isoflop=isoflop, origin=Origin.of(node))


def _read_zip(node: Node, types: _AxisTypes, plain_axes: set[str]) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...]]:
    require_mapping(node, "axes whose lists move together")
    check_keys(node, types.axis_names, "a zip group")
    columns: dict[str, tuple[Any, ...]] = {}
    for key, child in node.value.items():
        if key in plain_axes:
            raise child.error(f"axis '{key}' is both a plain axis and zipped; keep one")
        if not child.is_sequence:
            raise child.error(f"a zipped axis needs a list, got {describe(child.value)}")
        columns[key] = tuple(types.read(key, item) for item in child.value)
        if not columns[key]:
            raise child.error("empty axis: give at least one value")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        shown = ", ".join(f"{k}: {len(v)}" for k, v in columns.items())
        raise node.error(f"zipped axes must have equal lengths, got {shown}")
    if not columns:
        raise node.error("an empty zip group")
    return tuple(columns), tuple(zip(*columns.values()))


def _read_include(node: Node, types: _AxisTypes) -> Block:
    require_mapping(node, "one point (family, model, unique_tokens, epochs, train keys)")
    check_keys(node, types.axis_names, "an include point")
    values = {}
    for key, child in node.value.items():
        if child.is_sequence:
            raise child.error("an include entry is one point: give one value (use a grid block for lists)")
        values[key] = (types.read(key, child),)
    for required in ("family", "model", "unique_tokens"):
        if required not in values:
            raise node.error(f"missing key '{required}' in this include point")
    return Block(axes=tuple(values.items()), zips=(), isoflop=None, origin=Origin.of(node))


def _read_rule(node: Node, types: _AxisTypes, what: str) -> Rule:
    require_mapping(node, "conditions (key: value, [values] or {min, max})")
    keys = (*types.axis_names, *DERIVED_KEYS)
    check_keys(node, keys, f"an {what}" if what[0] in "aeiou" else f"a {what}")
    if not node.value:
        raise node.error(f"an empty {what} would match every point")
    conditions = []
    for key, child in node.value.items():
        if child.is_mapping:
            if not types.is_number(key):
                raise child.error(f"a {{min, max}} range needs a numeric key; '{key}' takes a value or a list")
            check_keys(child, ("min", "max"), f"the range for '{key}'")
            bound = {k: read_number(v, integral=False) for k, v in child.value.items()}
            if not bound:
                raise child.error("a range needs min, max or both")
            conditions.append(Condition(key=key, low=bound.get("min"), high=bound.get("max")))
        else:
            conditions.append(Condition(key=key, values=frozenset(types.read_list(key, child))))
    return Rule(conditions=tuple(conditions), origin=Origin.of(node))


def _read_override(node: Node, types: _AxisTypes) -> Override:
    require_mapping(node, "`when` (conditions) and `set` (train keys)")
    check_keys(node, ("when", "set"), "an override")
    for key in ("when", "set"):
        if key not in node.value:
            raise node.error(f"missing key '{key}' in this override")
    when = _read_rule(node.value["when"], types, "override condition")
    settings_node = node.value["set"]
    require_mapping(settings_node, "train keys to set")
    check_keys(settings_node, tuple(types.train_fields), "override settings (train keys)")
    settings = tuple((k, types.read(k, v)) for k, v in settings_node.value.items())
    return Override(when=when, settings=settings, origin=Origin.of(node))


# --- expansion ----------------------------------------------------------------------------------


