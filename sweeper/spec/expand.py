"""A grid's expansion into points: product and zip blocks, iso-FLOP budgets, overrides, `exclude`
and `include` (the language itself is read in sweeper.spec.grid). Pure: no I/O."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from sweeper.spec.grid import BASE_AXES, Block, Grid, IsoFlop, Origin, Override, Point
from sweeper.spec.presets import ModelSpec, num_params
from sweeper.trial import tokens_for_flops, training_flops


def expand(grid: Grid, *, models: Mapping[str, ModelSpec], vocab_size: int,
           train_defaults: Mapping[str, Any]) -> list[Point]:
    """Every point of the grid in declaration order, overrides applied, exclusions dropped."""
    points: list[Point] = []
    for blocks, excludable in ((grid.blocks, True), (grid.include, False)):
        for block in blocks:
            for point in _block_points(block, models, vocab_size):
                point = _apply_overrides(point, grid.overrides, models, vocab_size, train_defaults)
                values = _match_values(point, models, vocab_size, train_defaults)
                if excludable and any(rule.matches(values) for rule in grid.exclude):
                    continue
                points.append(point)
    return points



def _block_points(block: Block, models: Mapping[str, ModelSpec], vocab_size: int) -> Iterator[Point]:
    names = [name for name, _ in block.axes] + [n for names, _ in block.zips for n in names]
    columns = [[(value,) for value in values] for _, values in block.axes] + [list(rows) for _, rows in block.zips]
    for combo in itertools.product(*columns):
        values = dict(zip(names, itertools.chain.from_iterable(combo)))
        settings = tuple((k, v) for k, v in values.items() if k not in BASE_AXES)
        if block.isoflop is None:
            yield _fixed_point(values, settings, block.origin)
        else:
            yield from _isoflop_points(block.isoflop, values, settings, models, vocab_size, block.origin)



def _fixed_point(values: dict[str, Any], settings: tuple, origin: Origin) -> Point:
    unique, epochs = values["unique_tokens"], float(values.get("epochs", 1.0))
    return Point(family=values["family"], model=values["model"], unique_tokens=unique,
                 tokens=round(unique * epochs), epochs=epochs, settings=settings, flops_budget=None, origin=origin)



def _isoflop_points(iso: IsoFlop, values: dict[str, Any], settings: tuple, models: Mapping[str, ModelSpec],
                    vocab_size: int, origin: Origin) -> Iterator[Point]:
    n_params = num_params(models[values["model"]], vocab_size)
    for budget in iso.flops:
        try:
            n_opt = iso.law.optimal_params(budget)
        except OverflowError:
            raise origin.error(f"the compute-optimal law overflows at {budget:g} FLOPs; check isoflop.law") from None
        if not n_opt / iso.window <= n_params <= n_opt * iso.window:
            continue
        tokens = round(tokens_for_flops(budget, n_params))
        if tokens < 1:
            raise origin.error(f"{budget:g} FLOPs leave model {values['model']} (N = {n_params:,}) less than one "
                               "token; raise the budget or narrow isoflop.window")
        unique = min(values.get("unique_tokens", tokens), tokens)
        yield Point(family=values["family"], model=values["model"], unique_tokens=unique, tokens=tokens,
                    epochs=tokens / unique, settings=settings, flops_budget=budget, origin=origin)



def _apply_overrides(point: Point, overrides: tuple[Override, ...], models: Mapping[str, ModelSpec],
                     vocab_size: int, train_defaults: Mapping[str, Any]) -> Point:
    if not overrides:
        return point
    settings = dict(point.settings)
    for override in overrides:
        probe = Point(**{**_fields(point), "settings": tuple(settings.items())})
        if override.when.matches(_match_values(probe, models, vocab_size, train_defaults)):
            settings.update(override.settings)
    return Point(**{**_fields(point), "settings": tuple(settings.items())})



def _fields(point: Point) -> dict[str, Any]:
    return {name: getattr(point, name) for name in Point.__slots__}  # type: ignore[attr-defined]



def _match_values(point: Point, models: Mapping[str, ModelSpec], vocab_size: int,
                  train_defaults: Mapping[str, Any]) -> dict[str, Any]:
    n_params = num_params(models[point.model], vocab_size)
    return {**train_defaults, **dict(point.settings), "family": point.family, "model": point.model,
            "unique_tokens": point.unique_tokens, "epochs": point.epochs, "tokens": point.tokens,
            "flops": training_flops(n_params, point.tokens)}
