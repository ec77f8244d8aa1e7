"""What the report's figures share: headless matplotlib, one colour per family, token counts as
labels, the entropy floor line, and which families and budgets a figure can draw.

Importing this module makes matplotlib headless (Agg); every figure module imports it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: figures go straight to files
import matplotlib.pyplot as plt  # noqa: E402

from sweeper.fit.results import Analysis, FamilyFit  # noqa: E402

FAMILY_COLORS = {"ar": "tab:blue", "mdm": "tab:orange", "dual": "tab:green", "bd3lm": "tab:purple"}
_OTHER_COLORS = ("tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan", "tab:red")
DPI = 130


def color_of(family: str, families: list[str]) -> str:
    if family in FAMILY_COLORS:
        return FAMILY_COLORS[family]
    others = [name for name in families if name not in FAMILY_COLORS]
    return _OTHER_COLORS[others.index(family) % len(_OTHER_COLORS)]


def token_label(value: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def draw_floor(ax: plt.Axes, floor: float | None) -> None:
    """The source's known entropy rate: no loss goes below it."""
    if floor is not None:
        ax.axhline(floor, color="dimgray", ls="-", lw=1.2,
                   label=f"entropy rate H = {floor:.3f} (floor)")


def fitted_families(analysis: Analysis) -> list[FamilyFit]:
    return [fit for fit in analysis.families.values() if fit.vector is not None]


def budgets(analysis: Analysis) -> list[float]:
    """The unique-data budgets U with repeated-epoch rows in any family."""
    return sorted({u for fit in analysis.families.values()
                   for u in fit.observations.repeated_unique_tokens()})
