"""Scaling laws, their fits with intervals, the critical-compute frontier, and the report.

Nothing in this package imports torch or ray: `sweeper fit` runs on any laptop. The package
entry (this module) imports nothing heavy either, because `sweeper.cli.fit` (the `fit` and `report`
commands) imports it to register them; numpy, scipy and matplotlib are imported by the modules that
compute, and the command handlers import those modules only when they run.

Modules, in the order data flows through them:
  table            the typed input (`Trials`, `Observations`) and the CSV reader
  laws             pure law functions (Chinchilla, Muennighoff data-constrained, compute-optimal)
  multistart       parameter coordinates and bounds, start grids, multi-start and warm L-BFGS
  fitter           Huber-in-log-space objective and its gradients, the two-step procedure
  profile          profile likelihood of each fitted parameter, and which are weakly identified
  bootstrap        seeded bootstrap intervals and cross-validated R²
  frontier         best loss at a compute budget, ΔL = L_mdm − L_ar, C_crit(U) and its power law
  results          the fit's options and result types (`FamilyFit`, `Analysis`, ...)
  analysis         runs all of the above per family and says what was skipped and why
  critical_compute C_crit per unique-data budget and its law, from 'ar' and 'mdm' fits; every
                   other family (dual, bd3lm) against 'ar', on 6ND and on the compute it processes
  render           the terminal table, the JSON document and its flat MLflow metrics
  plotting         what the figures share: headless matplotlib, colours, labels
  compute_figures  figures of loss against compute: frontiers, iso-loss, C_crit
  fit_figures      figures of the fits: law against observed, data reuse, profiles
  figures          the report's figure list and the training curves
  report           Markdown/HTML report with the figures (and every trial's curve)
"""
