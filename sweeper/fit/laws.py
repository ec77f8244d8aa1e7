"""Scaling-law formulas, as pure functions of typed parameters.

Sources:
  [Chinchilla]  Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", eq. (2)
                and App. D.2 (closed-form compute-optimal allocation under C = 6ND).
  [Muennighoff] Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", eqs. (5)-(7)
                (effective data D' and effective parameters N'), as used by PAPER.md's study.
The symbols follow those papers (N parameters, D tokens seen, U unique tokens, C FLOPs), and
every function says which equation it is. Arrays broadcast; nothing here reads a global.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sweeper import trial

# The JSON keys of the fitted parameters, in the order the fitter and the report use.
STEP1_NAMES = ("E", "A", "B", "alpha", "beta")
STEP2_NAMES = ("R_D_star", "R_N_star")
PARAMETER_NAMES = STEP1_NAMES + STEP2_NAMES


@dataclass(frozen=True, slots=True, kw_only=True)
class ChinchillaLaw:
    """L(N, D) = E + A/N^α + B/D^β [Chinchilla eq. 2]; loss in nats per token."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConstrainedLaw:
    """L = E + A/N'^α + B/D'^β [Muennighoff eq. 7] with the decay constants R*_D and R*_N.

    `R_D_star` is what PAPER.md calls the half-life of data reuse: the repeated-epoch count at
    which one more epoch is worth 1/e of fresh data.
    """

    base: ChinchillaLaw
    R_D_star: float
    R_N_star: float


def training_flops(num_params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray:
    """C = 6·N·D [Kaplan et al. 2020, sec. 2.1], sweeper.trial's count, over arrays."""
    return trial.training_flops(np.asarray(num_params, dtype=float), np.asarray(tokens, dtype=float))


def chinchilla_loss(law: ChinchillaLaw, num_params: np.ndarray | float,
                    tokens: np.ndarray | float) -> np.ndarray:
    """L(N, D) = E + A/N^α + B/D^β [Chinchilla eq. 2]."""
    N = np.asarray(num_params, dtype=float)
    D = np.asarray(tokens, dtype=float)
    return law.E + law.A / N**law.alpha + law.B / D**law.beta


def optimal_allocation_constant(law: ChinchillaLaw) -> float:
    """G = (αA / (βB))^(1/(α+β)) [Chinchilla App. D.2]."""
    return float((law.alpha * law.A / (law.beta * law.B)) ** (1.0 / (law.alpha + law.beta)))


def compute_optimal_params(law: ChinchillaLaw, flops: np.ndarray | float) -> np.ndarray:
    """N_opt(C) = G·(C/6)^(β/(α+β)) [Chinchilla App. D.2]."""
    C = np.asarray(flops, dtype=float)
    G = optimal_allocation_constant(law)
    return G * (C / 6.0) ** (law.beta / (law.alpha + law.beta))


def compute_optimal_tokens(law: ChinchillaLaw, flops: np.ndarray | float) -> np.ndarray:
    """D_opt(C) = G⁻¹·(C/6)^(α/(α+β)) [Chinchilla App. D.2]; N_opt·D_opt = C/6."""
    C = np.asarray(flops, dtype=float)
    G = optimal_allocation_constant(law)
    return (C / 6.0) ** (law.alpha / (law.alpha + law.beta)) / G


def flops_where_tokens_optimal(law: ChinchillaLaw, tokens: np.ndarray | float) -> np.ndarray:
    """D_to_C(D) = 6·(G·D)^((α+β)/α): the compute for which D tokens are optimal (inverts D_opt)."""
    D = np.asarray(tokens, dtype=float)
    G = optimal_allocation_constant(law)
    return 6.0 * (G * D) ** ((law.alpha + law.beta) / law.alpha)


def _saturating_repeats(repeats: np.ndarray, decay: np.ndarray | float) -> np.ndarray:
    """R*·(1 − exp(−R/R*)), written with expm1 so a large R* tends to R without cancellation.

    R* = ∞ (repeats count in full) gives R exactly.
    """
    decay = np.asarray(decay, dtype=float)
    with np.errstate(invalid="ignore"):
        saturating = -decay * np.expm1(-repeats / decay)
    return np.where(np.isinf(decay), repeats, saturating)


def effective_tokens(tokens: np.ndarray | float, unique_tokens: np.ndarray | float,
                     R_D_star: np.ndarray | float) -> np.ndarray:
    """D' = U_D + U_D·R*_D·(1 − exp(−R_D/R*_D)), R_D = D/U_D − 1 [Muennighoff eq. 5].

    U_D = min(D, U): a trial that sees fewer tokens than its pool holds repeats nothing, so D' = D.
    A NaN U (unknown pool) also means nothing was repeated.
    """
    D = np.asarray(tokens, dtype=float)
    U_D = np.fmin(D, np.asarray(unique_tokens, dtype=float))
    R_D = D / U_D - 1.0
    return U_D + U_D * _saturating_repeats(R_D, R_D_star)


def excess_params_split(law: ChinchillaLaw, num_params: np.ndarray | float,
                        tokens: np.ndarray | float,
                        unique_tokens: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(U_N, R_N) of [Muennighoff eq. 6]: U_N = min(N, N_opt(D_to_C(U_D))), R_N = max(N/U_N − 1, 0).

    U_N is the parameter count that is compute-optimal for the unique data; parameters beyond it
    are treated like repeated data. It depends only on the step-1 (Chinchilla) parameters.
    """
    N = np.asarray(num_params, dtype=float)
    U_D = np.fmin(np.asarray(tokens, dtype=float), np.asarray(unique_tokens, dtype=float))
    U_N = np.minimum(N, compute_optimal_params(law, flops_where_tokens_optimal(law, U_D)))
    with np.errstate(divide="ignore"):  # U_N underflows to 0 for laws at a search bound: R_N = inf
        R_N = np.maximum(N / U_N - 1.0, 0.0)
    return U_N, R_N


def effective_params(law: DataConstrainedLaw, num_params: np.ndarray | float,
                     tokens: np.ndarray | float,
                     unique_tokens: np.ndarray | float) -> np.ndarray:
    """N' = U_N + U_N·R*_N·(1 − exp(−R_N/R*_N)) [Muennighoff eq. 6]."""
    U_N, R_N = excess_params_split(law.base, num_params, tokens, unique_tokens)
    return U_N + U_N * _saturating_repeats(R_N, law.R_N_star)


def data_constrained_loss(law: DataConstrainedLaw, num_params: np.ndarray | float,
                          tokens: np.ndarray | float,
                          unique_tokens: np.ndarray | float) -> np.ndarray:
    """L(N, D, U) = E + A/N'^α + B/D'^β [Muennighoff eq. 7]."""
    N_eff = effective_params(law, num_params, tokens, unique_tokens)
    D_eff = effective_tokens(tokens, unique_tokens, law.R_D_star)
    base = law.base
    with np.errstate(divide="ignore"):  # N' or D' of 0 (degenerate law): the loss is +inf, as it should be
        return base.E + base.A / N_eff**base.alpha + base.B / D_eff**base.beta


def chinchilla_as_data_constrained(law: ChinchillaLaw) -> DataConstrainedLaw:
    """The limit R*_D, R*_N → ∞: repeated tokens and excess parameters count in full."""
    return DataConstrainedLaw(base=law, R_D_star=np.inf, R_N_star=np.inf)
