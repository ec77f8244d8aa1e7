"""Downstream evaluation through lm-evaluation-harness, for every family.

- estimators: log-likelihoods of a continuation given a context, exact for ar and the Monte-Carlo
  ELBO for the diffusion families (torch only);
- harness: `SweeperLM`, the lm-eval model class (registered as `sweeper`) built from a loaded model,
  its TrialConfig and the trial's tokenizer;
- stage: one task at a time through `lm_eval.simple_evaluate`, and the task results a trial's MLflow
  run holds (`eval/<task>/<metric>`, tag `sweeper.eval/<task>`).

The layer above (`sweeper eval`, sweeper.cli.eval) finds finished trials, loads their checkpoints
and hands the models in; nothing here imports the trainer, the data layer or the tracking layer.
Import the modules themselves: this package imports nothing, so naming it costs nothing.
"""
