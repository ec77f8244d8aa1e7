"""The report's figures of loss against compute: each family's runs and frontiers per unique-data
budget U, iso-loss contours of the fitted laws with their compute-optimal path, and C_crit(U).

Each function draws one PNG from an `Analysis` and returns its caption, or None when the data
hold nothing to draw (the report then says why).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter

from sweeper.fit import critical_compute, frontier, laws
from sweeper.fit.plotting import (
    DPI,
    budgets,
    color_of,
    draw_floor,
    fitted_families,
    save,
    token_label,
)
from sweeper.fit.results import Analysis


def loss_vs_flops(analysis: Analysis, path: Path) -> str | None:
    """Validation loss against FLOPs, one panel per U: runs, Pareto frontier, law frontier."""
    panels: list[float | None] = list(budgets(analysis)) or [None]
    names = list(analysis.families)
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.8), squeeze=False,
                                sharey=True)
    crit = {point.unique_tokens: point for point in analysis.points}
    shared: dict[str, object] = {}  # one legend entry per family and line kind, below the panels
    observed = np.concatenate([fit.observations.loss for fit in analysis.families.values()])
    for ax, budget in zip(axes[0], panels, strict=True):
        for fit in analysis.families.values():
            rows = fit.observations if budget is None else fit.observations.select(
                fit.observations.unique_tokens == budget)
            if len(rows) == 0:
                continue
            color = color_of(fit.family, names)
            ax.scatter(rows.flops, rows.loss, s=14, alpha=0.45, color=color)
            front_flops, front_loss = frontier.pareto_frontier(rows.flops, rows.loss)
            (line,) = ax.step(front_flops, front_loss, where="post", color=color, lw=2)
            shared.setdefault(f"{fit.family}: runs and Pareto frontier", line)
            if budget is not None and fit.has_data_constrained_law:
                grid = np.geomspace(rows.flops.min() / 3, rows.flops.max() * 3, 80)
                (line,) = ax.plot(grid, frontier.best_loss(fit.law, grid, budget)[0], ls="--",
                                  color=color, lw=1.3)
                shared.setdefault(f"{fit.family}: fitted law, best over N and epochs", line)
        point = crit.get(budget) if budget is not None else None
        if point is not None and point.law.value is not None:
            ax.axvline(point.law.value, color="black", ls=":", lw=1.2,
                       label=f"C_crit, laws: {point.law.value:.2g}")
        if point is not None and point.empirical is not None:
            ax.axvline(point.empirical, color="gray", ls="-.", lw=1.0,
                       label=f"C_crit, observed: {point.empirical:.2g}")
        draw_floor(ax, analysis.entropy_rate)
        ax.set_xscale("log")
        ax.set_xlabel("training compute C = 6ND (FLOPs)")
        ax.set_title("single-epoch runs" if budget is None
                     else f"U = {token_label(budget)} unique tokens")
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylabel("validation loss (nats/token)")
    if observed.size:  # the runs set the scale; a poorly identified law may leave the frame
        span = max(float(observed.max() - observed.min()), 0.05)
        low = float(observed.min()) - 0.15 * span
        if analysis.entropy_rate is not None:
            low = min(low, analysis.entropy_rate - 0.05 * span)
        axes[0][0].set_ylim(low, float(observed.max()) + 0.15 * span)
    figure.legend(list(shared.values()), list(shared), loc="lower center",
                  ncol=min(4, len(shared)), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.1 if len(shared) <= 4 else 0.16, 1, 1))
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return ("Validation loss against training compute, one panel per unique-data budget U. "
            "Dots are runs, solid steps the Pareto frontier (best run at or below that compute), "
            "dashed lines the fitted law's best loss over model size and epochs; vertical lines "
            "mark C_crit, where masked diffusion's best loss reaches autoregression's.")



def iso_loss(analysis: Analysis, path: Path) -> str | None:
    """Contours of the fitted law over (parameters, epochs) at the largest budget U."""
    fits = [fit for fit in fitted_families(analysis) if fit.has_data_constrained_law]
    all_budgets = budgets(analysis)
    if not fits or not all_budgets:
        return None
    budget = all_budgets[-1]
    params = np.concatenate([fit.observations.num_params for fit in fits])
    params_grid = np.geomspace(params.min() / 3, params.max() * 3, 160)
    epochs_grid = np.geomspace(1.0, 1000.0, 160)
    grid_params, grid_epochs = np.meshgrid(params_grid, epochs_grid)
    figure, axes = plt.subplots(1, len(fits), figsize=(5.2 * len(fits), 4.4), squeeze=False)
    for ax, fit in zip(axes[0], fits, strict=True):
        loss = laws.data_constrained_loss(fit.law, grid_params, grid_epochs * budget, budget)
        # Quantile levels follow the loss where it changes; rounding merges near-equal ones.
        levels = np.unique(np.round(np.quantile(loss, np.linspace(0.02, 0.9, 12)), 2))
        contours = ax.contour(grid_params, grid_epochs, loss, levels=levels,
                              cmap="viridis_r", linewidths=1)
        ax.clabel(contours, fmt="%.2f", fontsize=7)
        rows = fit.observations.select(fit.observations.unique_tokens == budget)
        if len(rows):
            ax.scatter(rows.num_params, rows.epochs, s=12, color="black", alpha=0.6,
                       label="runs at this U")
        compute = np.geomspace(6 * params_grid[0] * budget, 6 * params_grid[-1] * budget * 1e3, 60)
        best_params = frontier.best_loss(fit.law, compute, budget)[1]
        best_epochs = compute / (6.0 * best_params * budget)
        inside = ((best_epochs >= 1) & (best_epochs <= 1000)
                  & (best_params >= params_grid[0]) & (best_params <= params_grid[-1]))
        if inside.any():
            ax.plot(best_params[inside], best_epochs[inside], color="red", lw=1.6,
                    label="best (N, epochs) at each compute")
        else:  # a law whose best model is far outside the runs' sizes: say so, do not stretch the axis
            side = "smaller" if np.median(best_params) < params_grid[0] else "larger"
            ax.plot([], [], color="red", lw=1.6,
                    label=f"best (N, epochs): N {side} than this panel at every compute")
        ax.set_xscale("log")
        # the panel spans little more than a decade of N: label 1 and 3 of each, not every minor tick
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel("epochs (D / U)")
        ax.set_title(f"{fit.family}: iso-loss contours at U = {token_label(budget)}", fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    save(figure, path)
    return (f"Iso-loss contours of each family's fitted law over model size and epochs at "
            f"U = {token_label(budget)} unique tokens (labels in nats/token). The red line is the "
            f"compute-optimal path: the best model size and epoch count at each compute budget.")


def c_crit(analysis: Analysis, path: Path) -> str | None:
    points = [p for p in analysis.points if p.law.value is not None or p.empirical is not None]
    if not points:
        return None
    figure, ax = plt.subplots(figsize=(6.2, 4.6))
    u = np.array([p.unique_tokens for p in points])
    for extrapolated, marker_face in ((False, "black"), (True, "white")):
        chosen = [p for p in points if p.law.value is not None and p.extrapolated == extrapolated]
        if not chosen:
            continue
        values = np.array([p.law.value for p in chosen])
        low = np.array([p.law.lo if p.law.lo is not None else p.law.value for p in chosen])
        high = np.array([p.law.hi if p.law.hi is not None else p.law.value for p in chosen])
        ax.errorbar([p.unique_tokens for p in chosen], values,
                    # a percentile interval need not contain the point estimate
                    yerr=[np.maximum(values - low, 0.0), np.maximum(high - values, 0.0)],
                    fmt="o", color="black",
                    markerfacecolor=marker_face, capsize=3,
                    label="from the fitted laws" + (" (extrapolated)" if extrapolated else ""))
        for i, point in enumerate(chosen):  # an open end (resamples that never cross): an arrow
            for start, factor, end in ((high[i], 10.0, point.law.hi), (low[i], 0.1, point.law.lo)):
                if point.open_end and end is None:
                    ax.annotate("", xy=(point.unique_tokens, start * factor),
                                xytext=(point.unique_tokens, start),
                                arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.0})
    observed = [p for p in points if p.empirical is not None]
    if observed:
        ax.scatter([p.unique_tokens for p in observed], [p.empirical for p in observed],
                   marker="x", color="tab:red", s=50, label="from the observed frontiers")
    law = analysis.c_crit
    if law is not None:
        line = np.geomspace(u.min() / 1.5, u.max() * 1.5, 50)
        ax.plot(line, law.coefficient.value * line**law.exponent.value, color="tab:blue",
                label=rf"$C_{{crit}} = {law.coefficient.value:.3g}\cdot "
                      rf"U^{{{law.exponent.value:.3f}}}$ (log U on log C, the paper's)")
        if law.c_on_u is not None:
            coefficient, exponent = law.c_on_u
            ax.plot(line, coefficient.value * line**exponent.value, color="tab:blue", ls="--",
                    lw=1, label=rf"${coefficient.value:.3g}\cdot U^{{{exponent.value:.3f}}}$ "
                                "(log C on log U)")
        draws = analysis.crit_draws
        complete = draws[critical_compute.crossed(draws).all(axis=1)] if draws.size else draws
        if law.source == "laws" and len(complete) >= 10 and draws.shape[1] >= 2:
            budgets = np.array([p.unique_tokens for p in analysis.points])  # the draws' columns
            fits = [frontier.fit_power_law(budgets, row) for row in complete]
            curves = np.array([f.coefficient * line**f.exponent for f in fits if f is not None])
            level = analysis.options.confidence
            low, high = np.quantile(curves, [(1 - level) / 2, (1 + level) / 2], axis=0)
            subset = ("" if len(complete) == len(draws)
                      else f" ({len(complete)} of {len(draws)} resamples cross at every U)")
            ax.fill_between(line, low, high, color="tab:blue", alpha=0.2,
                            label=f"{level:.0%} bootstrap band{subset}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("unique tokens U")
    ax.set_ylabel("critical compute C_crit (FLOPs)")
    ax.set_title("Compute beyond which masked diffusion beats autoregression", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    caveats = _c_crit_caveats(analysis, from_laws=any(p.law.value is not None for p in points),
                              observed=bool(observed))
    if caveats:
        ax.text(0.98, 0.02, "\n".join(caveats), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="tab:red", wrap=True,
                bbox={"facecolor": "white", "edgecolor": "tab:red", "alpha": 0.9})
    save(figure, path)
    open_end = any(p.law.value is not None and p.open_end for p in points)
    return ("Critical compute against unique data: below C_crit autoregression reaches the lower "
            "loss, above it masked diffusion does. Error bars are bootstrap intervals; hollow "
            "markers lie outside the compute the runs used."
            + (" An arrow marks an interval open on that side: too many of the resampled laws "
               "never cross there (the table's note gives how many do)." if open_end else "")
            + "".join(f" {line[0].upper()}{line[1:]}." for line in caveats))


def _c_crit_caveats(analysis: Analysis, *, from_laws: bool, observed: bool) -> list[str]:
    """What the C_crit figure must say on its face: that no run crossed, and which parameters
    the laws' crossings rest on without having fitted them (held at a search bound)."""
    if not from_laws:
        return []
    caveats = [] if observed else ["no run observed a crossing: every point is from the laws alone"]
    assumed = critical_compute.unidentified(analysis.families["ar"], analysis.families["mdm"])
    if assumed:
        caveats.append(f"the laws hold {', '.join(assumed)} at a search bound, not fitted")
    return caveats

