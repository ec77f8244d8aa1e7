"""Synthetic observations drawn from known laws, for fitting them back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sweeper.fit import laws
from sweeper.fit.table import Observations

# Muennighoff et al. 2023's published C4 fit (PAPER.md), the truth for one family.
AR_TRUTH = laws.DataConstrainedLaw(
    base=laws.ChinchillaLaw(E=1.869, A=520.96, B=1488.2, alpha=0.3527, beta=0.3527),
    R_D_star=15.39, R_N_star=5.31)
# A family that learns more slowly per token but keeps gaining from repeats, as PAPER.md
# describes masked diffusion (R*_D, R*_N from the paper; the rest chosen to cross AR).
MDM_TRUTH = laws.DataConstrainedLaw(
    base=laws.ChinchillaLaw(E=1.95, A=700.0, B=3000.0, alpha=0.36, beta=0.36),
    R_D_star=512.85, R_N_star=1265.65)

PARAMS = np.geomspace(7e6, 2.5e9, 9)
SINGLE_TOKENS = np.geomspace(1e8, 2e11, 12)
BUDGETS = (25e6, 50e6, 100e6)
EPOCHS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)


def _frozen(values, dtype) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    array.flags.writeable = False
    return array


def observations(family: str, params: np.ndarray, tokens: np.ndarray, unique: np.ndarray,
                 loss: np.ndarray) -> Observations:
    return Observations(
        family=_frozen([family] * len(loss), object), num_params=_frozen(params, float),
        tokens=_frozen(tokens, float), unique_tokens=_frozen(unique, float),
        loss=_frozen(loss, float), loss_std=_frozen(np.full(len(loss), np.nan), float),
        num_seeds=_frozen(np.ones(len(loss)), int))


def design(truth: laws.DataConstrainedLaw, rng: np.random.Generator, *, single: int,
           repeated: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(params, tokens, unique) for `single` single-epoch and `repeated` repeated-epoch configs.

    Single-epoch configs keep N ≤ U_N so that step 1's Chinchilla form is the truth there.
    """
    n, d = np.meshgrid(PARAMS, SINGLE_TOKENS)
    n, d = n.ravel(), d.ravel()
    u_n, _ = laws.excess_params_split(truth.base, n, d, d)
    ok = np.flatnonzero(n <= u_n)
    pick = rng.choice(ok, size=min(single, len(ok)), replace=False)
    grid = [(p, b * e, b) for p in PARAMS for b in BUDGETS for e in EPOCHS
            if 6 * p * b * e < 5e21]
    rows = [grid[i] for i in rng.choice(len(grid), size=repeated, replace=False)]
    params = np.r_[n[pick], [r[0] for r in rows]]
    tokens = np.r_[d[pick], [r[1] for r in rows]]
    unique = np.r_[d[pick], [r[2] for r in rows]]
    return params, tokens, unique


def draw(family: str, truth: laws.DataConstrainedLaw, rng: np.random.Generator, *,
         single: int = 40, repeated: int = 60, noise: float = 0.01) -> Observations:
    """Observations with multiplicative log-normal noise of `noise` on the loss."""
    params, tokens, unique = design(truth, rng, single=single, repeated=repeated)
    loss = laws.data_constrained_loss(truth, params, tokens, unique)
    return observations(family, params, tokens, unique,
                        loss * np.exp(noise * rng.standard_normal(len(loss))))


def join(*parts: Observations) -> Observations:
    fields = ("family", "num_params", "tokens", "unique_tokens", "loss", "loss_std", "num_seeds", "epochs_planned")
    return replace(parts[0], **{name: _frozen(np.concatenate([getattr(p, name) for p in parts]),
                                              getattr(parts[0], name).dtype) for name in fields})
