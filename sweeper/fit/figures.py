"""The report's figures, after PAPER.md's: training curves, frontiers, fit quality, data reuse,
iso-loss, C_crit.

Each function draws one PNG from an `Analysis` (the curves figure: from the trials' curves) and
returns its caption, or None when the data hold nothing to draw (the report then says why).
Matplotlib runs headless (Agg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures go straight to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from sweeper.fit import frontier, laws  # noqa: E402
from sweeper.fit.analysis import SYMBOLS, Analysis, FamilyFit  # noqa: E402
from sweeper.fit.laws import PARAMETER_NAMES  # noqa: E402
from sweeper.fit.table import TrialCurve  # noqa: E402

_COLORS = {"ar": "tab:blue", "mdm": "tab:orange"}
_OTHER_COLORS = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive")
_DPI = 130


def _color(family: str, families: list[str]) -> str:
    if family in _COLORS:
        return _COLORS[family]
    others = [name for name in families if name not in _COLORS]
    return _OTHER_COLORS[others.index(family) % len(_OTHER_COLORS)]


def _tokens(value: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)


def _floor(ax: plt.Axes, floor: float | None) -> None:
    """The source's known entropy rate: no loss goes below it."""
    if floor is not None:
        ax.axhline(floor, color="dimgray", ls="-", lw=1.2,
                   label=f"entropy rate H = {floor:.3f} (floor)")


def _fitted(analysis: Analysis) -> list[FamilyFit]:
    return [fit for fit in analysis.families.values() if fit.vector is not None]


def budgets(analysis: Analysis) -> list[float]:
    """The unique-data budgets U with repeated-epoch rows in any family."""
    return sorted({u for fit in analysis.families.values()
                   for u in fit.observations.repeated_unique_tokens()})


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
            color = _color(fit.family, names)
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
        _floor(ax, analysis.entropy_rate)
        ax.set_xscale("log")
        ax.set_xlabel("training compute C = 6ND (FLOPs)")
        ax.set_title("single-epoch runs" if budget is None
                     else f"U = {_tokens(budget)} unique tokens")
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
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return ("Validation loss against training compute, one panel per unique-data budget U. "
            "Dots are runs, solid steps the Pareto frontier (best run at or below that compute), "
            "dashed lines the fitted law's best loss over model size and epochs; vertical lines "
            "mark C_crit, where masked diffusion's best loss reaches autoregression's.")


def law_vs_observed(analysis: Analysis, path: Path) -> str | None:
    fits = _fitted(analysis)
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
            _floor(ax, analysis.entropy_rate)
            ax.axvline(analysis.entropy_rate, color="dimgray", lw=1.2)
        r2 = "—" if fit.r2_in_sample is None else f"{fit.r2_in_sample:.3f}"
        cv = "—" if fit.r2_cv is None else f"{fit.r2_cv:.3f}"
        ax.set_title(f"{fit.family}: R² {r2} in-sample, {cv} cross-validated", fontsize=10)
        ax.set_xlabel("observed validation loss (nats/token)")
        ax.set_ylabel("fitted law (nats/token)")
        ax.legend(fontsize=8, loc="upper left")
        figure.colorbar(dots, ax=ax, label="epochs")
    _save(figure, path)
    return ("The fitted data-constrained law against every configuration's observed loss, "
            "coloured by epochs. Points on the dashed line are predicted exactly.")


def effective_data(analysis: Analysis, path: Path) -> str | None:
    """D'/U against epochs: how much a repeated epoch is worth (Muennighoff eq. 5)."""
    index = PARAMETER_NAMES.index("R_D_star")
    fits = [fit for fit in _fitted(analysis) if np.isfinite(fit.vector[index])]
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
        color = _color(fit.family, names)
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
    _save(figure, path)
    return ("Effective data D' (in units of the unique data U) against epochs. The dashed line is "
            "what fresh data would give; each family's curve bends away from it and saturates at "
            "1 + R*_D. R*_D, what the paper calls the half-life of data reuse, is the number of "
            "repeated epochs at which one more epoch is worth 1/e of fresh data.")


def iso_loss(analysis: Analysis, path: Path) -> str | None:
    """Contours of the fitted law over (parameters, epochs) at the largest budget U."""
    fits = [fit for fit in _fitted(analysis) if fit.has_data_constrained_law]
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
        inside = (best_epochs >= 1) & (best_epochs <= 1000)
        ax.plot(best_params[inside], best_epochs[inside], color="red", lw=1.6,
                label="best (N, epochs) at each compute")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters N")
        ax.set_ylabel("epochs (D / U)")
        ax.set_title(f"{fit.family}: iso-loss contours at U = {_tokens(budget)}", fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    _save(figure, path)
    return (f"Iso-loss contours of each family's fitted law over model size and epochs at "
            f"U = {_tokens(budget)} unique tokens (labels in nats/token). The red line is the "
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
        complete = draws[np.isfinite(draws).all(axis=1)] if draws.size else draws
        if law.source == "laws" and len(complete) >= 10 and draws.shape[1] >= 2:
            budgets = np.array([p.unique_tokens for p in analysis.points])  # the draws' columns
            fits = [frontier.fit_power_law(budgets, row) for row in complete]
            curves = np.array([f.coefficient * line**f.exponent for f in fits if f is not None])
            level = analysis.options.confidence
            low, high = np.quantile(curves, [(1 - level) / 2, (1 + level) / 2], axis=0)
            ax.fill_between(line, low, high, color="tab:blue", alpha=0.2,
                            label=f"{level:.0%} bootstrap band")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("unique tokens U")
    ax.set_ylabel("critical compute C_crit (FLOPs)")
    ax.set_title("Compute beyond which masked diffusion beats autoregression", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _save(figure, path)
    return ("Critical compute against unique data: below C_crit autoregression reaches the lower "
            "loss, above it masked diffusion does. Error bars are bootstrap intervals; hollow "
            "markers lie outside the compute the runs used.")


def trial_curves(curves: Sequence[TrialCurve], path: Path,
                 floor: float | None = None) -> str | None:
    """Every trial's validation loss against tokens seen, one panel per family, coloured by model
    size: a model's runs share a colour and so read as one bundle, whatever their U and epochs."""
    curves = [curve for curve in curves if (curve.tokens_seen > 0).any()]
    if not curves:
        return None
    names = sorted({curve.family for curve in curves}, key=lambda name: (name not in _COLORS, name))
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
        _floor(ax, floor)
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
        bar.set_ticks(sizes, labels=[_tokens(size) for size in sizes])
        bar.minorticks_off()
    figure.suptitle("Validation loss during training, every finished trial", fontsize=11)
    figure.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(figure)
    return ("Every finished trial's validation loss during training. Tokens seen on a log scale, "
            "one panel per family, coloured by model size; a dot marks each run's end "
            "(D = U × epochs). Early evaluations far above where the runs end are cut off.")


def profiles(analysis: Analysis, path: Path) -> str | None:
    """Each fitted parameter's profile deviance, one row per family: where the data pin it."""
    rows = [(fit, [name for name in PARAMETER_NAMES if fit.estimates[name].profile is not None
                   and not (name == "beta" and analysis.options.tie_exponents)])
            for fit in _fitted(analysis)]
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
            color = _color(fit.family, family_names)
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
    _save(figure, path)
    level = f"{analysis.options.confidence:.0%}"
    return (f"Profile likelihood of each fitted parameter: the deviance when it is held at each "
            f"value and the others are refitted. The dashed line is the {level} threshold (χ²₁ "
            f"quantile); the shaded span is the profile interval, the dotted line the estimate. "
            f"A span wider than a decade (title in red, 'weak') means the data do not pin the "
            f"parameter down: the estimate is one point of a flat valley.")


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

