"""The report's figures of the fits themselves: the law against every observed loss, the value
of repeated data (R*_D), and each fitted parameter's profile likelihood.

Each function draws one PNG from an `Analysis` and returns its caption, or None when the data
hold nothing to draw (the report then says why).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import NullFormatter

from sweeper.fit import laws
from sweeper.fit.laws import PARAMETER_NAMES
from sweeper.fit.plotting import color_of, draw_floor, fitted_families, save
from sweeper.fit.results import SYMBOLS, Analysis


def law_vs_observed(analysis: Analysis, path: Path) -> str | None:
    fits = fitted_families(analysis)
    if not fits:
        return None
    figure, axes = plt.subplots(1, len(fits), figsize=(4.6 * len(fits), 4.2), squeeze=False)
    for ax, fit in zip(axes[0], fits, strict=True):
        rows = fit.observations
        predicted = laws.data_constrained_loss(fit.law, rows.num_params, rows.tokens,
                                               rows.unique_tokens)
        dots = ax.scatter(rows.loss, predicted, c=rows.epochs, s=16, cmap="viridis",
                          norm=LogNorm(vmin=1.0, vmax=max(2.0, float(rows.epochs.max()))))
        low, high = min(rows.loss.min(), predicted.min()), max(rows.loss.max(), predicted.max())
        ax.plot([low, high], [low, high], color="black", lw=1, ls="--", label="law = observed")
        if analysis.entropy_rate is not None:
            draw_floor(ax, analysis.entropy_rate)
            ax.axvline(analysis.entropy_rate, color="dimgray", lw=1.2)
        r2 = "—" if fit.r2_in_sample is None else f"{fit.r2_in_sample:.3f}"
        cv = "—" if fit.r2_cv is None else f"{fit.r2_cv:.3f}"
        ax.set_title(f"{fit.family}: R² {r2} in-sample, {cv} cross-validated", fontsize=10)
        ax.set_xlabel("observed validation loss (nats/token)")
        ax.set_ylabel("fitted law (nats/token)")
        ax.legend(fontsize=8, loc="upper left")
        figure.colorbar(dots, ax=ax, label="epochs")
    save(figure, path)
    return ("The fitted data-constrained law against every configuration's observed loss, "
            "coloured by epochs. Points on the dashed line are predicted exactly.")


def effective_data(analysis: Analysis, path: Path) -> str | None:
    """D'/U against epochs: how much a repeated epoch is worth (Muennighoff eq. 5)."""
    index = PARAMETER_NAMES.index("R_D_star")
    fits = [fit for fit in fitted_families(analysis) if np.isfinite(fit.vector[index])]
    if not fits:
        return None
    most = max(1000.0, max(float(fit.observations.epochs.max()) for fit in fits))
    epochs = np.geomspace(1.0, most, 200)
    level = analysis.options.confidence
    figure, ax = plt.subplots(figsize=(6.4, 4.6))
    # On top, so a family that loses nothing to repetition does not hide it.
    ax.plot(epochs, epochs, color="black", ls="--", lw=1, label="fresh data (D' = D)", zorder=5)
    names = list(analysis.families)
    for fit in fits:
        color = color_of(fit.family, names)
        decay = fit.vector[index]
        estimate = fit.estimates["R_D_star"]
        label = (f"{fit.family}: R*_D = {decay:.3g} epochs" if estimate.status != "unidentified"
                 else f"{fit.family}: R*_D unidentified (no decay seen; at the search bound)")
        ax.plot(epochs, laws.effective_tokens(epochs, 1.0, decay), color=color, lw=2, label=label)
        draws = fit.draws[:, index]
        draws = draws[np.isfinite(draws)]
        if len(draws) >= 10:
            curves = laws.effective_tokens(epochs[None, :], 1.0, draws[:, None])
            low, high = np.quantile(curves, [(1 - level) / 2, (1 + level) / 2], axis=0)
            ax.fill_between(epochs, low, high, color=color, alpha=0.2,
                            label=f"{fit.family}: {level:.0%} bootstrap band")
        if estimate.status != "unidentified" and decay <= most:
            ax.axvline(decay, color=color, ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epochs over the unique data (D / U)")
    ax.set_ylabel("effective data D' / U (fresh-epoch equivalents)")
    ax.set_title("Value of repeated data; dotted: R*_D, the half-life of data reuse",
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    save(figure, path)
    return ("Effective data D' (in units of the unique data U) against epochs. The dashed line is "
            "what fresh data would give; each family's curve bends away from it and saturates at "
            "1 + R*_D. R*_D, what the paper calls the half-life of data reuse, is the number of "
            "repeated epochs at which one more epoch is worth 1/e of fresh data.")



def profiles(analysis: Analysis, path: Path) -> str | None:
    """Each fitted parameter's profile deviance, one row per family: where the data pin it."""
    rows = [(fit, [name for name in PARAMETER_NAMES if fit.estimates[name].profile is not None
                   and not (name == "beta" and analysis.options.tie_exponents)])
            for fit in fitted_families(analysis)]
    rows = [(fit, names) for fit, names in rows if names]
    if not rows:
        return None
    columns = max(len(names) for _, names in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.9 * columns, 2.6 * len(rows)),
                                squeeze=False)
    family_names = list(analysis.families)
    for (fit, names), panel_row in zip(rows, axes, strict=True):
        for ax in panel_row[len(names):]:
            ax.set_visible(False)
        for name, ax in zip(names, panel_row, strict=False):
            profile = fit.estimates[name].profile
            color = color_of(fit.family, family_names)
            shown = np.isfinite(profile.deviance)
            ax.plot(profile.values[shown], profile.deviance[shown], "-o", ms=2.5, color=color)
            ax.axhline(profile.threshold, color="black", ls="--", lw=0.9)
            lo = profile.lo if profile.lo is not None else profile.values[0]
            hi = profile.hi if profile.hi is not None else profile.values[-1]
            ax.axvspan(lo, hi, color=color, alpha=0.15)
            value = fit.estimates[name].value
            if value is not None:
                ax.axvline(value, color=color, ls=":", lw=1)
            positive = profile.values[profile.values > 0]
            if name not in ("alpha", "beta") and positive.max() / positive.min() > 20:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide here
            top = 4.0 * profile.threshold
            ax.set_ylim(-0.05 * top, top)
            label = SYMBOLS[name] + ("  (weak)" if profile.weak else "")
            ax.set_title(f"{fit.family}: {label}", fontsize=9,
                         color="tab:red" if profile.weak else "black")
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
        panel_row[0].set_ylabel("deviance 2n·log(H/H_min)", fontsize=8)
    save(figure, path)
    level = f"{analysis.options.confidence:.0%}"
    return (f"Profile likelihood of each fitted parameter: the deviance when it is held at each "
            f"value and the others are refitted. The dashed line is the {level} threshold (χ²₁ "
            f"quantile); the shaded span is the profile interval, the dotted line the estimate. "
            f"A span wider than a decade (title in red, 'weak') means the data do not pin the "
            f"parameter down: the estimate is one point of a flat valley.")

