"""The fitter's typed input: trials as read, and observations with repeated seeds averaged.

`Trials` holds one row per finished trial, whatever produced it (a CSV file here; the MLflow
results table writes the same columns). `tokens` is what a trial trained; sweeper's own rows also
carry `epochs_planned`, because a trial trains whole optimizer steps, ceil(D / batch tokens), so
one planned at one epoch trains a little more than its U (+0.7% at U = 25M, 524,288 tokens a step)
and by tokens alone would read as repeating data. A row planned at one epoch or fewer stays
single-epoch; rows without the column (other sources) fall back to tokens ≤ unique tokens. `Observations` holds one row per configuration
(family, parameters, tokens, unique tokens): repeated seeds of a configuration are one
measurement with a spread, not independent points, so the bootstrap and the cross-validation
resample configurations. `TrialCurve` holds one trial's validation loss during training, as
read from the tracking store, for the report's curves figure.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np

from sweeper.console import UserError
from sweeper.trial import tokens_for_flops, training_flops

REQUIRED_COLUMNS = ("params", "tokens", "loss")
OPTIONAL_COLUMNS = ("unique_tokens", "family", "seed", "epochs_planned")
DEFAULT_FAMILY = "all"


def _frozen(values: Sequence[float] | np.ndarray, dtype: type) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True, kw_only=True)
class Trials:
    """One row per finished trial. `unique_tokens` is NaN where the source did not record it."""

    family: np.ndarray  # str
    num_params: np.ndarray  # parameters N of C = 6ND
    tokens: np.ndarray  # tokens seen D
    unique_tokens: np.ndarray  # unique tokens U of the data pool, NaN if unknown
    loss: np.ndarray  # validation loss, nats per token
    seed: np.ndarray  # str, "" where unknown
    source: str  # where the rows came from, for messages
    epochs_planned: np.ndarray | None = None  # the plan's D / U (module docstring); None or NaN: unknown

    def __post_init__(self) -> None:
        if self.epochs_planned is None:
            object.__setattr__(self, "epochs_planned", _frozen(np.full(len(self.loss), math.nan), float))
        sizes = {len(self.family), len(self.num_params), len(self.tokens), len(self.unique_tokens),
                 len(self.loss), len(self.seed), len(self.epochs_planned)}  # type: ignore[arg-type]
        if len(sizes) != 1:
            raise ValueError(f"columns of {self.source} differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.loss)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observations:
    """One row per configuration; `loss` is the mean over its seeds, `loss_std` their spread."""

    family: np.ndarray  # str
    num_params: np.ndarray
    tokens: np.ndarray
    unique_tokens: np.ndarray  # NaN if unknown (then the row is single-epoch)
    loss: np.ndarray
    loss_std: np.ndarray  # sample standard deviation over seeds, NaN with one seed
    num_seeds: np.ndarray  # int
    epochs_planned: np.ndarray | None = None  # NaN (or None) where unknown; see the module docstring

    def __post_init__(self) -> None:
        if self.epochs_planned is None:
            object.__setattr__(self, "epochs_planned", _frozen(np.full(len(self.loss), math.nan), float))
        sizes = {len(self.family), len(self.num_params), len(self.tokens), len(self.unique_tokens),
                 len(self.loss), len(self.loss_std), len(self.num_seeds), len(self.epochs_planned)}  # type: ignore[arg-type]
        if len(sizes) != 1:
            raise ValueError(f"observation columns differ in length: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.loss)

    @property
    def data_unique_tokens(self) -> np.ndarray:
        """U_D = min(D, U) (Muennighoff et al. 2023): the unique tokens a trial actually saw."""
        return np.fmin(self.tokens, self.unique_tokens)

    @property
    def single_epoch(self) -> np.ndarray:
        """True where the trial was planned at one epoch or fewer; where that is unknown, where no
        token was seen twice: tokens ≤ unique_tokens, or U unknown."""
        planned = self.epochs_planned
        assert planned is not None  # filled in by __post_init__
        by_tokens = ~(self.tokens > self.unique_tokens)
        return np.where(np.isnan(planned), by_tokens, planned <= 1.0)

    @property
    def epochs(self) -> np.ndarray:
        return self.tokens / self.data_unique_tokens

    @property
    def flops(self) -> np.ndarray:
        """C = 6·N·D (Kaplan et al. 2020), as PAPER.md counts compute for both families."""
        return training_flops(self.num_params, self.tokens)

    def families(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.family.tolist())))

    def select(self, mask: np.ndarray) -> Observations:
        return Observations(
            family=_frozen(self.family[mask], object),
            num_params=_frozen(self.num_params[mask], float),
            tokens=_frozen(self.tokens[mask], float),
            unique_tokens=_frozen(self.unique_tokens[mask], float),
            loss=_frozen(self.loss[mask], float),
            loss_std=_frozen(self.loss_std[mask], float),
            num_seeds=_frozen(self.num_seeds[mask], int),
            epochs_planned=_frozen(self.epochs_planned[mask], float),  # type: ignore[index]
        )

    def of_family(self, family: str) -> Observations:
        return self.select(self.family == family)

    def repeated_unique_tokens(self) -> tuple[float, ...]:
        """The unique-data budgets U of rows that repeat data, ascending."""
        return tuple(sorted(set(self.unique_tokens[~self.single_epoch].tolist())))


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialCurve:
    """One trial's validation loss against the tokens it had seen at each evaluation."""

    family: str
    model: str
    num_params: float
    unique_tokens: float
    epochs: float
    tokens_seen: np.ndarray  # ascending
    loss: np.ndarray  # validation loss, nats per token
    trial_id: str = ""


def curves_from_rows(rows: Sequence[Mapping[str, Any]],
                     histories: Mapping[str, Sequence[tuple[int, float]]]) -> tuple[TrialCurve, ...]:
    """Join result rows (`sweeper results`: family, model, params, unique_tokens, epochs, run_id)
    with each run's (tokens seen, loss) history; a row whose run has no history is left out."""
    curves = []
    for row in rows:
        points = histories.get(str(row["run_id"]))
        if not points:
            continue
        tokens_seen, loss = zip(*sorted(points), strict=True)
        curves.append(TrialCurve(family=str(row["family"]), model=str(row["model"]),
                                 num_params=float(row["params"]),
                                 unique_tokens=float(row["unique_tokens"]),
                                 epochs=float(row["epochs"]), tokens_seen=_frozen(tokens_seen, float),
                                 loss=_frozen(loss, float), trial_id=str(row.get("trial_id", ""))))
    return tuple(curves)


def average_seeds(trials: Trials) -> Observations:
    """Group trials by configuration and average their losses.

    Two rows are the same configuration when family, parameters, tokens, unique tokens and
    planned epochs agree; a differing `seed` (or none) is what makes them repeats.
    """
    groups: dict[tuple[str, float, float, float, float], list[float]] = {}
    for family, n, d, u, e, loss in zip(trials.family, trials.num_params, trials.tokens, trials.unique_tokens,
                                        trials.epochs_planned, trials.loss, strict=True):  # type: ignore[call-overload]
        # NaN never equals itself, so an unknown U or planned epochs gets a sentinel key.
        key = (str(family), float(n), float(d), -1.0 if math.isnan(u) else float(u),
               -1.0 if math.isnan(e) else float(e))
        groups.setdefault(key, []).append(float(loss))
    keys = sorted(groups)
    losses = [np.array(groups[key]) for key in keys]
    return Observations(
        family=_frozen([key[0] for key in keys], object),
        num_params=_frozen([key[1] for key in keys], float),
        tokens=_frozen([key[2] for key in keys], float),
        unique_tokens=_frozen([math.nan if key[3] < 0 else key[3] for key in keys], float),
        loss=_frozen([values.mean() for values in losses], float),
        loss_std=_frozen([values.std(ddof=1) if len(values) > 1 else math.nan
                          for values in losses], float),
        num_seeds=_frozen([len(values) for values in losses], int),
        epochs_planned=_frozen([math.nan if key[4] < 0 else key[4] for key in keys], float),
    )


def _number(text: str, *, where: str, column: str, allow_empty: bool) -> float:
    text = text.strip()
    if not text:
        if allow_empty:
            return math.nan
        raise UserError(f"{where}: column '{column}' is empty")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: column '{column}': expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{where}: column '{column}': expected a positive number, got {text!r}")
    return value


def from_rows(rows: Sequence[Mapping[str, Any]], *, source: str, loss: str = "final") -> Trials:
    """Trials from result rows (`sweeper results`: family, params, tokens, unique_tokens, loss,
    loss_best, seed, epochs_planned); `loss="best"` takes each trial's best validation loss instead
    of its final one."""
    if not rows:
        raise UserError(f"{source}: no finished trials in the tracking store; run the sweep first")
    key = "loss" if loss == "final" else "loss_best"
    return Trials(
        family=_frozen([str(r["family"]) for r in rows], object),
        num_params=_frozen([float(r["params"]) for r in rows], float),
        tokens=_frozen([float(r["tokens"]) for r in rows], float),
        unique_tokens=_frozen([float(r["unique_tokens"]) for r in rows], float),
        loss=_frozen([float(r[key]) for r in rows], float),
        seed=_frozen([str(r["seed"]) for r in rows], object),
        source=source,
        epochs_planned=_frozen([_optional(r.get("epochs_planned")) for r in rows], float),
    )


def _optional(value: Any) -> float:
    return math.nan if value is None or value == "" else float(value)


# Spellings of each column in published files and exports, after lower-casing and turning
# spaces and hyphens into underscores: datablations (params_N, tokens_D, unique_tokens_U,
# val_loss), Epoch AI's Chinchilla file (Model Size, Training FLOP, loss), common exports.
SPELLINGS: dict[str, tuple[str, ...]] = {
    "params": ("params", "params_n", "num_params", "parameters", "n_params", "model_size",
               "model_params", "n"),
    "tokens": ("tokens", "tokens_d", "tokens_seen", "training_tokens", "num_tokens", "d"),
    "unique_tokens": ("unique_tokens", "unique_tokens_u", "unique", "u"),
    "loss": ("loss", "val_loss", "validation_loss", "eval_loss", "final_loss", "val/loss"),
    "flops": ("flops", "training_flop", "training_flops", "compute", "c"),
    "family": ("family",),
    "seed": ("seed",),
    "epochs_planned": ("epochs_planned", "planned_epochs"),
}
COLUMN_KEYS = tuple(SPELLINGS)
# A per-token loss above this many nats is no language model's: a model that guesses uniformly
# over V tokens scores ln V, and ln(5e8) ≈ 20 exceeds every vocabulary in use. Larger numbers
# are per-sequence sums, percentages or another unit, and fitting them gives a law of nothing.
MAX_LOSS_NATS = 20.0


def _normal(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def resolve_columns(header: Sequence[str], mapping: Mapping[str, str], *,
                    where: str) -> dict[str, int]:
    """The index of each column sweeper reads: from `mapping` (key -> the file's column name)
    first, else from the known spellings. `tokens` may be missing when `flops` is there."""
    normal = [_normal(name) for name in header]
    found = ", ".join(repr(name.strip()) for name in header) or "none"
    index: dict[str, int] = {}
    for key, name in mapping.items():
        if key not in SPELLINGS:
            raise UserError(f"--columns: unknown key '{key}'; the keys are {', '.join(COLUMN_KEYS)}")
        if _normal(name) not in normal:
            raise UserError(f"{where}:1: --columns {key}={name}: no such column (found: {found})")
        index[key] = normal.index(_normal(name))
    for key, spellings in SPELLINGS.items():
        if key in index:
            continue
        taken = set(index.values())
        for spelling in spellings:
            if spelling in normal and normal.index(spelling) not in taken:
                index[key] = normal.index(spelling)
                break
    missing = [key for key in ("params", "loss") if key not in index]
    if "tokens" not in index and "flops" not in index:
        missing.insert(1, "tokens (or flops)")
    if missing:
        raise UserError(f"{where}:1: missing required column(s) {', '.join(missing)} "
                        f"(found: {found}); name them with --columns KEY=COLUMN,...")
    return index


def read_csv(path: Path, columns: Mapping[str, str] | None = None) -> Trials:
    """Read `params, tokens, loss` and the optional `unique_tokens, family, seed, epochs_planned` columns.
    A row with a non-empty `options` column (`sweeper results`: a trial that set train options, an
    ablation) is left out, as the fit of SPEC input leaves it out.

    Columns are found by name in any of their common spellings (`SPELLINGS`), or as `columns`
    maps them; `flops` (C = 6ND) stands in for a missing `tokens` column, D = C / 6N. Other
    columns are ignored, so a wider export reads as is. A byte-order mark (as spreadsheets write
    it) is skipped. Errors name the file and line.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        try:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise UserError(f"{path}: the file is empty; expected a header with "
                                f"{', '.join(REQUIRED_COLUMNS)}")
            index = resolve_columns(header, columns or {}, where=str(path))
            # `sweeper results` names the train options a trial set (ablations): fitted are plain rows only
            normal = [_normal(name) for name in header]
            options_at = normal.index("options") if "options" in normal else None
            rows: list[tuple[str, float, float, float, float, str, float]] = []
            ablations = 0
            for line_number, cells in enumerate(reader, start=2):
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) < len(header):
                    raise UserError(f"{path}:{line_number}: expected {len(header)} columns, "
                                    f"got {len(cells)}")
                if options_at is not None and cells[options_at].strip():
                    ablations += 1
                    continue
                where = f"{path}:{line_number}"
                family = cells[index["family"]].strip() if "family" in index else DEFAULT_FAMILY
                if not family:
                    raise UserError(f"{where}: column 'family' is empty")
                params = _number(cells[index["params"]], where=where,
                                 column=header[index["params"]].strip(), allow_empty=False)
                if "tokens" in index:
                    tokens = _number(cells[index["tokens"]], where=where,
                                     column=header[index["tokens"]].strip(), allow_empty=False)
                else:
                    tokens = _number(cells[index["flops"]], where=where,
                                     column=header[index["flops"]].strip(),
                                     allow_empty=False)
                    tokens = tokens_for_flops(tokens, params)
                loss_column = header[index["loss"]].strip()
                loss = _number(cells[index["loss"]], where=where, column=loss_column,
                               allow_empty=False)
                if loss > MAX_LOSS_NATS:
                    raise UserError(
                        f"{where}: column '{loss_column}': {loss:g} is no per-token loss in nats "
                        f"(a uniform guess over any vocabulary in use scores under "
                        f"{MAX_LOSS_NATS:g}); give each trial's mean validation loss per token")
                rows.append((
                    family, params, tokens,
                    _number(cells[index["unique_tokens"]], where=where, column="unique_tokens",
                            allow_empty=True) if "unique_tokens" in index else math.nan,
                    loss,
                    cells[index["seed"]].strip() if "seed" in index else "",
                    _number(cells[index["epochs_planned"]], where=where, column="epochs_planned",
                            allow_empty=True) if "epochs_planned" in index else math.nan,
                ))
        except (UnicodeDecodeError, csv.Error) as error:
            raise UserError(f"{path}: not a readable CSV file ({error})") from None
    if not rows:
        raise UserError(f"{path}: no data rows after the header" + (
            f" but {ablations} that set train options (column options), which the fit leaves out"
            if ablations else ""))
    family, num_params, tokens, unique_tokens, loss, seed, epochs_planned = zip(*rows, strict=True)
    if len(set(loss)) == 1 and len(loss) > 1:
        raise UserError(f"{path}: all {len(loss)} rows have the same loss ({loss[0]:g}), so there "
                        "is nothing for a scaling law to explain; check the loss column")
    return Trials(
        family=_frozen(family, object),
        num_params=_frozen(num_params, float),
        tokens=_frozen(tokens, float),
        unique_tokens=_frozen(unique_tokens, float),
        loss=_frozen(loss, float),
        seed=_frozen(seed, object),
        source=str(path),
        epochs_planned=_frozen(epochs_planned, float),
    )
