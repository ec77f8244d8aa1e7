"""The fitter's search: parameter coordinates and bounds, start grids, multi-start L-BFGS.

Parameters are searched in internal coordinates (log for the positive scales E, A, B, R*_D, R*_N;
plain for the exponents), inside bounds wide enough for every published fit. A step's free
vector maps onto its full vector through a `Layout` (fixed values, α and β tied). A search
ranks a grid of starting points by the objective and runs L-BFGS from the best few, keeping the
best; a warm refit (bootstrap, cross-validation, profiles) starts from a nearby vector instead,
with looser tolerances. The objectives themselves are `fitter`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

# Internal coordinates: log for the positive scale parameters, plain for the exponents.
_LOG_SCALED = frozenset({"E", "A", "B", "R_D_star", "R_N_star"})
_BOUNDS = {  # internal units; wide enough for every published fit, tight enough to stay finite
    "E": (math.log(1e-3), math.log(1e2)),
    "A": (-10.0, 80.0),
    "B": (-10.0, 80.0),
    "alpha": (0.01, 3.0),
    "beta": (0.01, 3.0),
    "R_D_star": (math.log(1e-2), math.log(1e7)),
    "R_N_star": (math.log(1e-2), math.log(1e7)),
}
# Starting grid after the datablations notebook (e, a, b over a coarse lattice, exponents < 2).
STEP1_GRID = {
    "E": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
    "A": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "B": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.1, 0.25, 0.4, 0.6, 0.9, 1.3),
    "beta": (0.1, 0.25, 0.4, 0.6, 0.9, 1.3),
}
STEP2_GRID = tuple(math.log(v) for v in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3,
                                         1e4, 1e5))
STEP1_R_N_STARTS = (1.0, 10.0, 100.0, 1e3, 1e4)
_LBFGS_STARTS = 8  # the best grid points each get a full L-BFGS run
_LBFGS_OPTIONS = {"maxiter": 3000, "ftol": 1e-13, "gtol": 1e-10}
# Refits from a nearby start (bootstrap, cross-validation, profiles) stop sooner: their values
# feed quantiles and deviances, which need far less than the point estimate's precision.
_WARM_OPTIONS = {"maxiter": 3000, "ftol": 1e-12, "gtol": 1e-9}


def bounds_of(name: str) -> tuple[float, float]:
    """The search range of a parameter, internal units."""
    return _BOUNDS[name]


def at_upper_bound(name: str, value: float) -> bool:
    """Whether an estimate that sits on a search bound sits on the upper one."""
    lo, hi = _BOUNDS[name]
    return to_internal(name, value) > 0.5 * (lo + hi)


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with one BLAS thread.

    scipy's L-BFGS-B calls BLAS/LAPACK on 5×5-sized arrays every iteration; a threaded BLAS
    wakes its pool for each call, and on a busy machine the idle threads spin: measured 6×
    slower on two shared cores. threadpoolctl sets the limit at run time.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def to_internal(name: str, value: float) -> float:
    return math.log(value) if name in _LOG_SCALED else value


def to_natural(name: str, value: float) -> float:
    return math.exp(value) if name in _LOG_SCALED else value


@dataclass(frozen=True, slots=True)
class Layout:
    """Maps the optimizer's free vector onto a step's full internal vector (ties, fixes)."""

    names: tuple[str, ...]
    offset: np.ndarray  # fixed internal values, zeros where free
    matrix: np.ndarray  # (len(names), n_free) of 0/1: which free coordinate feeds which name
    bounds: tuple[tuple[float, float], ...]
    source: np.ndarray = field(init=False)  # per name: the free coordinate that feeds it
    used: np.ndarray = field(init=False)  # per name: whether a free coordinate feeds it

    def __post_init__(self) -> None:
        source = self.matrix.argmax(axis=1) if self.matrix.shape[1] else np.zeros(len(self.names), int)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "used", self.matrix.any(axis=1))

    def full(self, free: np.ndarray) -> np.ndarray:
        # Indexing, not a matrix product: a product of this size wakes BLAS threads, which
        # then spin on a busy machine for no gain.
        return self.offset + free[..., self.source] * self.used

    def free_from_full(self, full: np.ndarray) -> np.ndarray:
        """The free coordinates of full vectors (..., len(names)); a tie reads α's entry."""
        return full[..., self.matrix.argmax(axis=0)]


def layout_for(names: tuple[str, ...], free: tuple[str, ...], values: Mapping[str, float],
               tie: bool) -> Layout:
    offset = np.array([0.0 if name in free else to_internal(name, values[name]) for name in names])
    columns: list[np.ndarray] = []
    bounds: list[tuple[float, float]] = []
    for name in free:
        if tie and name == "beta" and "alpha" in free:
            continue  # β rides on α's column
        column = np.zeros(len(names))
        column[names.index(name)] = 1.0
        if tie and name == "alpha" and "beta" in free:
            column[names.index("beta")] = 1.0
        columns.append(column)
        bounds.append(_BOUNDS[name])
    matrix = np.stack(columns, axis=1) if columns else np.zeros((len(names), 0))
    return Layout(names=names, offset=offset, matrix=matrix, bounds=tuple(bounds))


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFit:
    values: dict[str, float]  # natural units, fixed ones included
    objective: float
    at_bound: tuple[str, ...]  # free parameters whose estimate sits on a search bound
    nuisance: float | None = None  # step 1's own R*_N where it fitted one (step 2 refits it)


def minimise(layout: Layout, value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
             starts: list[np.ndarray], warm: bool = False) -> tuple[np.ndarray, float]:
    best_x, best_f = starts[0], math.inf
    for start in starts:
        def objective(free: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = value_and_grad(layout.full(free))
            return value, grad @ layout.matrix
        result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=layout.bounds,
                          options=_WARM_OPTIONS if warm else _LBFGS_OPTIONS)
        if result.fun < best_f:
            best_x, best_f = result.x, float(result.fun)
    return best_x, best_f


def grid_starts(layout: Layout, grid: list[tuple[float, ...]],
                value: Callable[[np.ndarray], np.ndarray],
                count: int = _LBFGS_STARTS) -> list[np.ndarray]:
    """The best few points of the grid (projected onto the free coordinates) by objective."""
    free_points = np.unique(layout.free_from_full(np.array(grid)), axis=0)
    free_points = np.clip(free_points, [lo for lo, _ in layout.bounds],
                          [hi for _, hi in layout.bounds])
    scores = value(layout.full(free_points))
    order = np.argsort(scores)[:count]
    return [free_points[i] for i in order]


def finish(layout: Layout, free: np.ndarray, objective: float) -> StepFit:
    """The search's result in natural units, with the free parameters left on a bound."""
    full = layout.full(free)
    values = {name: to_natural(name, float(v)) for name, v in zip(layout.names, full, strict=True)}
    columns = zip(layout.matrix.T, free, layout.bounds, strict=True)
    at_bound = [name for column, value, (lo, hi) in columns if min(value - lo, hi - value) < 1e-4
                for name, used in zip(layout.names, column, strict=True) if used]
    return StepFit(values=values, objective=objective, at_bound=tuple(at_bound))
