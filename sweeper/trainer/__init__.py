"""The embedded trainer: one transformer for ar, mdm, dual and bd3lm, trained from a plain TrialConfig.

Imports torch and numpy only (never the spec, the planner, Ray or MLflow), so it runs the same under
Ray Tune, in a test or by hand. Entry points:

    train(config, train_tokens, val_tokens, reporter, *, checkpoint_dir, resume_from, max_steps, keep_best,
          extra_eval_steps, keep_steps, branch_from)   (the last three: prefix sharing, sweeper.trainer.branch)
    load_model(checkpoint) -> (model, config); sample_ar(...); sample_mdm(...); sample_bd3lm(...)

Metric names are the table in `sweeper.trial` (METRICS).
"""

from sweeper.trainer.checkpoint import latest_checkpoint
from sweeper.trial import TrialConfig, padded_vocab_size
from sweeper.trainer.errors import CheckpointUnreadable, NonFiniteLoss, TrialFailure, TrialOutOfMemory
from sweeper.trainer.loop import Reporter, TrainResult, train
from sweeper.trial import METRICS
from sweeper.trainer.sample import load_model, load_weights, sample_ar, sample_bd3lm, sample_mdm

__all__ = [
    "METRICS",
    "CheckpointUnreadable",
    "NonFiniteLoss",
    "Reporter",
    "TrainResult",
    "TrialConfig",
    "TrialFailure",
    "TrialOutOfMemory",
    "latest_checkpoint",
    "load_model",
    "load_weights",
    "padded_vocab_size",
    "sample_ar",
    "sample_bd3lm",
    "sample_mdm",
    "train",
]
