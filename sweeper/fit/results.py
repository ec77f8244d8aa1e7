"""The options of `sweeper fit` and the typed results it hands on.

`analysis` fills a `FamilyFit` per family and `critical_compute` the C_crit points and law;
render, report and the figures read the whole `Analysis`. An `Estimate` carries its status, so a
parameter that was fixed, skipped or not identified says so instead of holding a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from sweeper.fit import laws
from sweeper.fit.fitter import law_from_vector
from sweeper.fit.laws import PARAMETER_NAMES, STEP1_NAMES
from sweeper.fit.profile import Profile
from sweeper.fit.table import Observations

Status = Literal["fitted", "fixed", "skipped", "unidentified"]
SYMBOLS = {"E": "E", "A": "A", "B": "B", "alpha": "α", "beta": "β",
           "R_D_star": "R*_D", "R_N_star": "R*_N"}


@dataclass(frozen=True, slots=True, kw_only=True)
class FitOptions:
    fixed: tuple[tuple[str, float], ...] = ()  # JSON names, natural units
    tie_exponents: bool = False
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.9
    cv_folds: int = 0  # 0: leave-one-out
    restarts: int = 1  # bootstrap refits also start from this many start-grid points per step
    profiles: bool = True  # profile likelihood of every fitted parameter
    processes: int = 0  # processes for bootstrap refits and C_crit's draws; 0: one per core

    def __post_init__(self) -> None:
        for name, value in self.fixed:
            if name not in PARAMETER_NAMES:
                raise ValueError(f"cannot fix '{name}': the parameters are "
                                 f"{', '.join(PARAMETER_NAMES)}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"cannot fix {name}={value}: expected a positive number")
        fixed = dict(self.fixed)
        if self.tie_exponents and {"alpha", "beta"} <= fixed.keys() \
                and fixed["alpha"] != fixed["beta"]:
            raise ValueError("--tie needs alpha = beta, but they are fixed to different values")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie between 0 and 1, got {self.confidence}")
        if self.resamples < 0 or self.cv_folds < 0 or self.cv_folds == 1:
            raise ValueError("resamples must be ≥ 0 and cv folds 0 (leave-one-out) or ≥ 2")

    def fixed_with_tie(self) -> dict[str, float]:
        """The fixed values, with a tie extending a fixed exponent to the other one."""
        fixed = dict(self.fixed)
        if self.tie_exponents:
            for one, other in (("alpha", "beta"), ("beta", "alpha")):
                if one in fixed:
                    fixed.setdefault(other, fixed[one])
        return fixed


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    value: float | None
    lo: float | None  # bootstrap percentile interval
    hi: float | None
    status: Status
    profile: Profile | None = None  # the profile likelihood, where one was computed

    @property
    def weak(self) -> bool:
        """Weakly identified: the profile interval spans more than a decade (or is open)."""
        return self.profile is not None and self.profile.weak


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """The largest-compute configurations predicted by a fit (from the start grid) without them."""

    rows: np.ndarray  # indices into the family's observations
    predicted: np.ndarray  # loss, nats per token
    observed: np.ndarray
    min_flops: float  # the held-out configurations use this much compute or more

    @property
    def mean_abs_error(self) -> float:
        return float(np.mean(np.abs(self.predicted - self.observed)))

    @property
    def mean_abs_relative_error(self) -> float:
        return float(np.mean(np.abs(self.predicted / self.observed - 1.0)))


@dataclass(frozen=True, slots=True, kw_only=True)
class FamilyFit:
    family: str
    observations: Observations
    n_trials: int  # rows as read, repeated seeds included
    estimates: dict[str, Estimate]
    vector: np.ndarray | None  # point estimate in PARAMETER_NAMES order; None: nothing fitted
    draws: np.ndarray  # (resamples, parameters) bootstrap refits
    r2_in_sample: float | None
    r2_cv: float | None
    notes: tuple[str, ...]
    # single-epoch rows with N > U_N, where step 1 used the law's N' and fitted R*_N alongside
    oversized_single: int = 0
    rollout: Rollout | None = None

    @property
    def law(self) -> laws.DataConstrainedLaw | None:
        return None if self.vector is None else law_from_vector(self.vector)

    @property
    def has_data_constrained_law(self) -> bool:
        return self.vector is not None and bool(np.isfinite(self.vector[len(STEP1_NAMES):]).all())

    def seed_spread(self) -> tuple[int, float] | None:
        """(configurations with several seeds, their mean loss standard deviation)."""
        repeated = self.observations.num_seeds > 1
        if not repeated.any():
            return None
        return int(repeated.sum()), float(np.mean(self.observations.loss_std[repeated]))


@dataclass(frozen=True, slots=True, kw_only=True)
class CritPoint:
    unique_tokens: float
    law: Estimate  # C_crit from the fitted laws (FLOPs), with its bootstrap interval
    empirical: float | None  # from the observed Pareto frontiers
    extrapolated: bool  # the law's C_crit lies outside the compute the runs used
    reasons: tuple[str, ...]  # why a value is missing
    # (resamples whose laws cross at this U, resamples with complete laws) behind the interval;
    # None without laws. The others are C_crit = ∞ (AR stays ahead) or 0 (the other family ahead
    # at every compute), so an interval end can be open.
    crossings: tuple[int, int] | None = None

    @property
    def open_end(self) -> bool:
        """The law's interval is open on one side because too many resamples never cross."""
        return (self.crossings is not None and self.crossings[0] < self.crossings[1]
                and (self.law.lo is None) != (self.law.hi is None))


@dataclass(frozen=True, slots=True, kw_only=True)
class CritLaw:
    """C_crit = coefficient · U^exponent from log U regressed on log C (the paper's direction);
    `c_on_u` is the same data regressed the other way, shown beside it."""

    coefficient: Estimate
    exponent: Estimate
    source: Literal["laws", "empirical"]
    c_on_u: tuple[Estimate, Estimate] | None = None  # (coefficient, exponent)


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """C_crit of one family against ar at each U: on the paper's C = 6ND (`points`, `c_crit`, what
    every comparison is made on) and, for a family whose passes process `processed_factor` tokens
    per trained token (bd3lm: 2), on that compute (`processed`: its FLOPs counted that many times)."""

    family: str
    points: tuple[CritPoint, ...]
    c_crit: CritLaw | None
    processed_factor: int = 1
    processed: tuple[CritPoint, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    families: dict[str, FamilyFit]
    points: tuple[CritPoint, ...]  # mdm against ar, on 6ND (PAPER.md's C_crit)
    c_crit: CritLaw | None
    crit_draws: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # (resamples, U)
    notes: tuple[str, ...] = field(default=())
    options: FitOptions = field(default_factory=FitOptions)
    # The validation source's entropy rate per token where it is known exactly (a synthetic
    # source under the `symbols` tokenizer): the floor under every loss, beside the fitted E.
    entropy_rate: float | None = None
    # every family but ar against ar, mdm included (its points and law are the ones above)
    versus_ar: dict[str, Comparison] = field(default_factory=dict)
