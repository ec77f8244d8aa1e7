"""Scaling laws, their fits with intervals, the critical-compute frontier, and the report.

Nothing in this package imports torch or ray: `sweeper fit` runs on any laptop. The package
entry (this module) imports nothing heavy either, because the CLI loads `sweeper.fit.command`
just to register its subcommands; numpy, scipy and matplotlib are imported by the modules that
compute, and the command handlers import those modules only when they run.

Modules, in the order data flows through them:
  table     the typed input (`Trials`, `Observations`) and the CSV reader
  laws      pure law functions (Chinchilla, Muennighoff data-constrained, compute-optimal)
  fitter    Huber-in-log-space objective, multi-start L-BFGS, the two-step procedure
  bootstrap seeded bootstrap intervals and cross-validated R²
  frontier  best loss at a compute budget, ΔL = L_mdm − L_ar, C_crit(U) and its power law
  analysis  runs all of the above per family and says what was skipped and why
  render    the terminal table, the JSON document and its flat MLflow metrics
  report    Markdown/HTML report with the figures (and every trial's curve)
  command   the `fit` and `report` subcommands, and their logging to the sweeps' MLflow runs
"""
