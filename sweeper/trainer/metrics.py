"""The metric names every trial reports: one table for the JSON lines, Ray Tune and MLflow.

`tokens` is the step axis of every curve. A report carries whichever metrics exist at that point:
the first (tokens = 0) holds the untrained model's evaluation; log points add the train metrics;
evaluation points add `val/*`; the last report adds the `final/*` metrics and `num_params_actual`.

| name | meaning |
|---|---|
| `tokens` | training tokens seen so far, all processes together (the step axis) |
| `train/loss` | mean training loss over the optimizer steps since the previous log (nats/token) |
| `val/loss` | validation loss (ar: mean CE; mdm: the ELBO over mdm_eval_samples stratified draws of t) |
| `val/loss_best` | lowest `val/loss` so far |
| `lr` | learning rate of the last optimizer step |
| `grad_norm` | global gradient L2 norm of the last optimizer step, before clipping |
| `epoch` | samples consumed / samples per epoch (fractional) |
| `flops` | 6 · num_params · tokens, with num_params the planned bookkeeping N of PAPER.md |
| `tokens_per_s` | training throughput since the previous log, all processes, evaluation time excluded |
| `mfu` | model FLOPs utilisation (PaLM appendix B): tokens_per_s · (6·num_params_actual + 12·layers·heads·head_dim·seq_len) / (peak_flops · processes); absent when peak_flops is None |
| `final/val_loss` | validation loss at the last step |
| `final/val_loss_best` | lowest validation loss of the run |
| `final/wall_s` | wall-clock seconds of this call of train(), evaluation and checkpoints included |
| `final/tokens_per_s` | tokens trained in this call / seconds spent in training steps (compilation included) |
| `num_params_actual` | parameters of the built model, the tied embedding counted once |
"""

from __future__ import annotations

METRICS: dict[str, str] = {
    "tokens": "training tokens seen so far, all processes together (the step axis)",
    "train/loss": "mean training loss over the optimizer steps since the previous log (nats/token)",
    "val/loss": "validation loss: ar mean CE; mdm ELBO over mdm_eval_samples stratified t draws",
    "val/loss_best": "lowest val/loss so far",
    "lr": "learning rate of the last optimizer step",
    "grad_norm": "global gradient L2 norm of the last optimizer step, before clipping",
    "epoch": "samples consumed / samples per epoch (fractional)",
    "flops": "6 * num_params * tokens (PAPER.md bookkeeping N)",
    "tokens_per_s": "training throughput since the previous log, evaluation excluded",
    "mfu": "PaLM App. B: tokens_per_s * (6*num_params_actual + 12*layers*heads*head_dim*seq_len)"
           " / (peak_flops * processes); absent without peak_flops",
    "final/val_loss": "validation loss at the last step",
    "final/val_loss_best": "lowest validation loss of the run",
    "final/wall_s": "wall-clock seconds of this train() call, evaluation and checkpoints included",
    "final/tokens_per_s": "tokens trained in this call / seconds in training steps",
    "num_params_actual": "parameters of the built model, tied embedding counted once",
}
