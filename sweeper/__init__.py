"""sweeper: declarative sweeps for data-constrained scaling-law studies.

A YAML spec names model families, sizes, unique-data budgets and epoch counts; the planner
expands it into trials; Ray Tune runs them on the embedded trainer; MLflow records every curve;
the fitter turns the curves into scaling laws and the critical-compute frontier.
"""

__version__ = "0.1.0"
