"""How long `sweeper fit` takes on a paper-sized study: 200 trials, 1000 bootstrap resamples.

200 trials = 100 per family (PAPER.md trains 100 models per family), drawn from two known
data-constrained laws with 0.5% noise on the loss. Times each stage of `analysis.analyse`:
the point fits (start grid + L-BFGS), the profiles, the rollout fit, the bootstrap refits, the
leave-one-out R², and C_crit with its intervals; then the whole fit again as `sweeper fit` runs
it, each family's refits and C_crit's draws shared over every core. Target: the whole fit under
a minute on two cores.

    .venv/bin/python benchmarks/fit_bootstrap.py [--resamples 1000] [--trials 200]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from sweeper.fit import analysis, bootstrap, frontier, laws
from sweeper.fit.results import FitOptions
from sweeper.fit.table import Observations

TRUTHS = {
    "ar": laws.DataConstrainedLaw(
        base=laws.ChinchillaLaw(E=1.869, A=520.96, B=1488.2, alpha=0.3527, beta=0.3527),
        R_D_star=15.39, R_N_star=5.31),
    "mdm": laws.DataConstrainedLaw(
        base=laws.ChinchillaLaw(E=1.95, A=700.0, B=3000.0, alpha=0.36, beta=0.36),
        R_D_star=512.85, R_N_star=1265.65),
}


def trials(family: str, count: int, rng: np.random.Generator) -> Observations:
    """`count` configurations: 40% single-epoch (N ≤ U_N), the rest repeating 25M-100M tokens."""
    truth = TRUTHS[family]
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(7e6, 2.5e9, 12),
                                           np.geomspace(1e8, 2e11, 16)))
    fits = np.flatnonzero(n <= laws.excess_params_split(truth.base, n, d, d)[0])
    single = rng.choice(fits, size=int(0.4 * count), replace=False)
    grid = [(p, u * e, u) for p in np.geomspace(7e6, 2.5e9, 9) for u in (25e6, 50e6, 100e6)
            for e in (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)]
    repeated = [grid[i] for i in rng.choice(len(grid), size=count - len(single), replace=False)]
    params = np.r_[n[single], [r[0] for r in repeated]]
    tokens = np.r_[d[single], [r[1] for r in repeated]]
    unique = np.r_[d[single], [r[2] for r in repeated]]
    loss = laws.data_constrained_loss(truth, params, tokens, unique)
    loss *= np.exp(0.005 * rng.standard_normal(len(loss)))
    return Observations(family=np.array([family] * len(loss), dtype=object), num_params=params,
                        tokens=tokens, unique_tokens=unique, loss=loss,
                        loss_std=np.full(len(loss), np.nan), num_seeds=np.ones(len(loss), int))


class Stopwatch:
    """Accumulates the wall time spent inside wrapped functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, module: object, name: str, label: str) -> None:
        inner = getattr(module, name)

        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

        setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=200, help="total, split over two families")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    per_family = args.trials // 2
    families = [trials(name, per_family, rng) for name in TRUTHS]
    data = Observations(**{field: np.concatenate([getattr(f, field) for f in families])
                           for field in Observations.__dataclass_fields__})
    watch = Stopwatch()
    watch.wrap(bootstrap, "bootstrap", "bootstrap refits")
    watch.wrap(bootstrap, "cross_validated_predictions", "leave-one-out R²")
    watch.wrap(frontier, "critical_compute", "C_crit (point + bootstrap)")
    watch.wrap(analysis, "profile_step1", "profiles, step 1")
    watch.wrap(analysis, "profile_step2", "profiles, step 2")
    watch.wrap(analysis, "_rollout", "rollout fit")
    counts = {name: per_family for name in TRUTHS}
    # Serial, so the stopwatch (in this process) sees every stage; then as `sweeper fit` runs it,
    # each family's bootstrap refits and C_crit's bootstrap draws shared over every core.
    options = FitOptions(resamples=args.resamples, seed=0, processes=1)
    start = time.perf_counter()
    result = analysis.analyse(data, counts, options)
    total = time.perf_counter() - start
    stages = dict(watch.seconds)  # the parallel run below would add its C_crit time again
    start = time.perf_counter()
    analysis.analyse(data, counts, FitOptions(resamples=args.resamples, seed=0))
    parallel = time.perf_counter() - start

    print(f"{args.trials} trials ({per_family} per family), {args.resamples} bootstrap resamples "
          f"per family, leave-one-out R²; {os.cpu_count()} CPUs visible")
    accounted = 0.0
    for label, seconds in stages.items():
        print(f"  {label:<28} {seconds:7.2f} s")
        accounted += seconds
    print(f"  {'point fits and the rest':<28} {total - accounted:7.2f} s")
    print(f"  {'total, one process':<28} {total:7.2f} s")
    print(f"  {'total, shared over the cores':<28} {parallel:7.2f} s   (target: under 60 s)")
    per_refit = stages["bootstrap refits"] / (2 * args.resamples) * 1e3
    print(f"  {per_refit:.1f} ms per bootstrap refit (both steps, warm-started)")
    if result.c_crit is not None:
        exponent = result.c_crit.exponent
        print(f"  C_crit exponent {exponent.value:.3f} [{exponent.lo:.3f}, {exponent.hi:.3f}]")


if __name__ == "__main__":
    main()
