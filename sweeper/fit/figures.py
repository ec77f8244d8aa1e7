"""The report's figures, after PAPER.md's: training curves, frontiers, fit quality, data reuse,
iso-loss, C_crit, profiles.

`FIGURES` lists the ones drawn from an `Analysis`, in the report's order (`compute_figures`
and `fit_figures` draw them); `trial_curves` draws the training curves from the trials' own
curves. Each returns its caption, or None when the data hold nothing to draw (the report then
says why). Matplotlib runs headless (Agg, set by `plotting`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, LogNorm

from sweeper.fit.compute_figures import c_crit, iso_loss, loss_vs_flops
from sweeper.fit.fit_figures import effective_data, law_vs_observed, profiles
from sweeper.fit.plotting import DPI, FAMILY_COLORS, draw_floor, token_label
from sweeper.fit.results import Analysis
from sweeper.fit.table import TrialCurve


def trial_curves(curves: Sequence[TrialCurve], path: Path,
                 floor: float | None = None, which: str = "finished") -> str | None:
    """Every trial's validation loss against tokens seen, one panel per family, coloured by model
    size: a model's runs share a colour and so read as one bundle, whatever their U and epochs.
    `which` names the trials drawn ("finished"; "plain" when the ablations' are drawn apart)."""
    curves = [curve for curve in curves if (curve.tokens_seen > 0).any()]
    if not curves:
        return None
    names = sorted({curve.family for curve in curves},
                   key=lambda name: (name not in FAMILY_COLORS, name))
    sizes = sorted({curve.num_params for curve in curves})
    # viridis without its last yellows, which vanish on white
    colormap = ListedColormap(plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 256)))
    norm = LogNorm(vmin=sizes[0], vmax=sizes[-1] if sizes[-1] > sizes[0] else sizes[0] * 2)
    figure, axes = plt.subplots(1, len(names), figsize=(5.4 * len(names) + 1.2, 4.6), squeeze=False,
                                sharey=True)
    for ax, family in zip(axes[0], names, strict=True):
        mine = [curve for curve in curves if curve.family == family]
        # Largest (lightest) first, so the darker curves stay visible where bundles overlap.
        for curve in sorted(mine, key=lambda c: -c.num_params):
            seen = curve.tokens_seen > 0  # the evaluation at 0 tokens has no place on a log axis
            color = colormap(norm(curve.num_params))
            ax.plot(curve.tokens_seen[seen], curve.loss[seen], color=color, lw=0.9, alpha=0.75)
            ax.plot(curve.tokens_seen[-1], curve.loss[-1], "o", color=color, ms=2.5)
        draw_floor(ax, floor)
        if floor is not None:
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xscale("log")
        ax.set_xlabel("tokens seen D")
        ax.set_title(f"{family}: {len(mine)} trials", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel("validation loss (nats/token)")
    # Early evaluations (near ln of the vocabulary) would squeeze where the runs end into a
    # sliver: the frame keeps the ends and the later part of the descent.
    ends = np.array([curve.loss[-1] for curve in curves])
    values = np.concatenate([curve.loss[curve.tokens_seen > 0] for curve in curves])
    span = max(float(ends.max() - ends.min()), 0.1)
    low = float(values.min()) - 0.08 * span
    if floor is not None:
        low = min(low, floor - 0.05 * span)
    axes[0][0].set_ylim(low, min(float(values.max()), float(ends.max()) + 1.5 * span) + 0.05 * span)
    bar = figure.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=colormap), ax=axes[0].tolist(),
                          label="parameters N", pad=0.02, fraction=0.04)
    if len(sizes) <= 12:
        bar.set_ticks(sizes, labels=[token_label(size) for size in sizes])
        bar.minorticks_off()
    figure.suptitle(f"Validation loss during training, every {which} trial", fontsize=11)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return (f"Every {which} trial's validation loss during training. Tokens seen on a log scale, "
            "one panel per family, coloured by model size; a dot marks each run's end "
            "(D = U × epochs). Early evaluations far above where the runs end are cut off.")


FIGURES = (
    ("loss_vs_flops.png", loss_vs_flops),
    ("law_vs_observed.png", law_vs_observed),
    ("effective_data.png", effective_data),
    ("iso_loss.png", iso_loss),
    ("c_crit.png", c_crit),
    ("profiles.png", profiles),
)


def draw_all(analysis: Analysis, folder: Path) -> list[tuple[str, str | None]]:
    """Draw every figure into `folder`; (file name, caption or None if not drawn)."""
    folder.mkdir(parents=True, exist_ok=True)
    drawn = []
    for name, draw in FIGURES:
        caption = draw(analysis, folder / name)
        drawn.append((name, caption))
    return drawn
