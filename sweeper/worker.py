"""One trial inside Ray Tune: build the trainer's config, open the data, resume, train, report.

Checkpoints go to Tune (`tune.report(..., checkpoint=tune.Checkpoint)`), which persists them under
`{storage}/{experiment}/{trial_id}/` (the trial's folder is named by its id). A retry inside one
Tuner gets the latest back from `tune.get_checkpoint()`; a later Tuner (the sweep run again after
a crash or Ctrl-C) finds the same folder by the trial id and resumes from the checkpoint with the
highest step, read from each checkpoint's small metadata file. A deterministic failure (a diverged
loss, out of memory) is reported as a result carrying `sweeper/failure` and ends the trial without
raising, so Tune does not retry what would fail the same way; anything else raises and Tune
retries it from the last checkpoint up to the profile's limit.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

FAILURE_KEY = "sweeper/failure"
RESUMED_KEY = "sweeper/resumed_at_tokens"
NODE_KEY = "sweeper/node_id"  # the Ray node a trial (re)started on, in its first result there
CHECKPOINT_METADATA = ".metadata.json"  # written by tune.Checkpoint.set_metadata


def build_trial_config(trial: Any, *, vocab_size: int, device: str, peak_flops: float | None) -> dict[str, Any]:
    """The trainer's TrialConfig fields for a planned trial, as plain data (sent to the worker)."""
    model, train = trial.model, trial.train
    return {
        "trial_id": trial.id, "family": trial.family, "num_params": trial.num_params,
        "unique_tokens": trial.unique_tokens, "epochs": trial.epochs, "tokens": trial.tokens,
        "vocab_size": vocab_size, "d_model": model.d_model, "h_f": model.h_f, "heads": model.heads,
        "head_dim": model.head_dim, "layers": model.layers, "dropout": train.dropout,
        "init_std": train.init_std, "seq_len": trial.data.seq_len, "lr_peak": train.lr_peak,
        "lr_min": train.lr_min, "warmup_steps": trial.warmup_steps, "steps": trial.steps,
        "schedule": train.schedule, "betas": list(train.betas), "eps": train.eps,
        "weight_decay": train.weight_decay, "grad_clip": train.grad_clip,
        "batch_sequences": train.batch_sequences, "micro_batch": trial.sizing.micro_batch,
        "eval_steps": list(trial.eval_steps), "mdm_eval_samples": train.mdm_eval_samples,
        "checkpoint_every_steps": trial.checkpoint_every_steps,
        "log_every_steps": max(1, trial.steps // 100),  # at most ~100 train points per curve
        "precision": train.precision, "compile": train.compile, "seed": train.seed, "device": device,
        "peak_flops": peak_flops,
    }


def run_trial(config: dict[str, Any]) -> None:
    """The Ray Tune function trainable. `config["sweeper"]` holds the trial's payload."""
    import torch  # before anything that might import Ray's native libraries again

    from ray import tune

    from sweeper.trainer import TrialConfig, TrialFailure, train

    payload = config["sweeper"]
    torch.set_num_threads(max(1, int(payload["threads"])))
    trial_config = TrialConfig.from_dict(payload["trial_config"])
    train_tokens, val_tokens = open_data(payload)
    scratch = Path(tempfile.mkdtemp(prefix=f"sweeper-{trial_config.trial_id}-"))
    try:
        resume_from = restore(scratch / "restored", payload["trial_dir"], payload.get("storage_endpoint"))
        first = [True]

        def reporter(metrics: dict[str, float], written: str | None) -> None:
            if first[0]:  # the first point says where the trial runs, and where it resumed
                import ray

                metrics = {**metrics, NODE_KEY: ray.get_runtime_context().get_node_id()}
                if resume_from is not None:
                    metrics[RESUMED_KEY] = metrics["tokens"]
                first[0] = False
            if written is None or written == resume_from:
                # resumed at the very end: the final point again, from a checkpoint already stored
                tune.report(dict(metrics))
                return
            checkpoint = tune.Checkpoint.from_directory(written)
            checkpoint.set_metadata({"step": int(Path(written).name.removeprefix("step_")),
                                     "tokens": int(metrics["tokens"])})
            tune.report(dict(metrics), checkpoint=checkpoint)

        try:
            train(trial_config, train_tokens, val_tokens, reporter, checkpoint_dir=str(scratch / "checkpoints"),
                  resume_from=resume_from)
        except TrialFailure as failure:
            if failure.retryable:
                raise
            tune.report({FAILURE_KEY: str(failure)})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def restore(target: Path, trial_dir: str, endpoint: str | None = None) -> str | None:
    """A local copy of the latest checkpoint of this trial, from this Tuner or an earlier one."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        checkpoint = latest_persisted(trial_dir, endpoint)
    if checkpoint is None:
        return None
    return checkpoint.to_directory(str(target))


def latest_persisted(trial_dir: str, endpoint: str | None = None) -> Any:
    """The checkpoint with the highest step under the trial's folder in storage, or None."""
    import pyarrow.fs

    from ray import tune

    from sweeper.storage import filesystem_for

    filesystem, root = filesystem_for(trial_dir, endpoint)
    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    except FileNotFoundError:
        return None
    best: tuple[int, str] | None = None
    for entry in entries:
        if entry.type != pyarrow.fs.FileType.Directory or not entry.base_name.startswith("checkpoint_"):
            continue
        try:
            with filesystem.open_input_stream(f"{entry.path}/{CHECKPOINT_METADATA}") as stream:
                step = int(json.loads(stream.read())["step"])
        except (OSError, ValueError, KeyError):
            continue  # a checkpoint still being written, or not one of ours
        if best is None or step > best[0]:
            best = (step, entry.path)
    if best is None:
        return None
    return tune.Checkpoint(path=best[1], filesystem=filesystem)


def open_data(payload: dict[str, Any]) -> tuple[Any, Any]:
    """The trial's pool (exactly U tokens, memory-mapped) and the validation tokens."""
    from sweeper.data import open_pool, open_validation

    location = payload["data"]
    return open_pool(location, payload["trial_config"]["unique_tokens"]), open_validation(location)
