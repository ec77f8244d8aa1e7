"""`sweeper train` (one planned trial in this process, no Ray) and `sweeper sample` (text from a checkpoint)."""

from __future__ import annotations

import argparse
from typing import Any

from sweeper.cli.context import Context
from sweeper.cli.spec import add_profile_arguments

MAX_SAMPLES = 1024
AR_LENGTH_FACTOR = 16  # ar generates past seq_len by sliding its window; each token is one forward pass
DEVICE_HELP = "cpu, cuda, cuda:N or auto (default: cuda when there is one)"


def register(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train one planned trial here, without Ray; JSON-lines metrics",
                                  description="Train one trial of SPEC in this process, preparing its data if "
                                              "needed, and print its metrics as JSON lines on stdout.")
    train.add_argument("spec", metavar="SPEC")
    train.add_argument("--trial", required=True, metavar="ID", help="trial id (or a unique prefix), see `sweeper plan`")
    add_profile_arguments(train)
    train.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps (final eval included)")
    train.add_argument("--device", default="auto", help=DEVICE_HELP)
    train.add_argument("--checkpoint-dir", metavar="DIR", help="write checkpoints (step_*) under DIR")
    train.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue exactly from a step_* folder, or `latest` under --checkpoint-dir")
    train.set_defaults(handler=run_train)

    sample = subparsers.add_parser("sample", help="generate text from a trained checkpoint of any family")
    sample.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT",
                        help="a step_* checkpoint folder, or a trial's MLflow run id (its latest checkpoint)")
    sample.add_argument("--spec", required=True, help="the sweep spec: its tokenizer decodes the samples")
    add_profile_arguments(sample)
    sample.add_argument("--num-samples", type=int, default=1, help=f"1 to {MAX_SAMPLES} (default 1)")
    sample.add_argument("--length", type=int, help="tokens to generate (default: the model's seq_len; "
                                                   f"mdm and bd3lm at most seq_len, ar at most "
                                                   f"{AR_LENGTH_FACTOR} x seq_len)")
    sample.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1)")
    sample.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    sample.add_argument("--steps", type=int, default=32,
                        help="mdm: unmasking steps; bd3lm: at most this many per block (default 32)")
    sample.add_argument("--order", choices=("random", "confident"), default="confident",
                        help="mdm, bd3lm: which masked tokens to reveal first")
    sample.add_argument("--as", dest="read_as", choices=("ar", "mdm"),
                        help="dual: sample left to right (ar, the default) or by unmasking (mdm)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=run_sample)


def find_trial(plan: Any, wanted: str) -> Any:
    from sweeper.console import UserError

    matches = [t for t in plan.trials if t.id.startswith(wanted)]
    if len(matches) != 1:
        found = "no trial" if not matches else f"{len(matches)} trials"
        raise UserError(f"--trial {wanted}: {found} of {plan.spec_name} has an id starting so; `sweeper plan` lists them")
    return matches[0]


def check_device(device: str, option: str = "--device") -> None:
    """The device exists here (torch is imported by the caller)."""
    import re

    import torch

    from sweeper.console import UserError

    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", device)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UserError(f"{option} {device!r}: expected {DEVICE_HELP}")
    if match.group(1) == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{option} {device}: this machine's torch sees no CUDA device; use --device cpu or auto")
        if match.group(2) is not None and int(match.group(2)) >= count:
            raise UserError(f"{option} {device}: this machine has {count} CUDA device{'s' if count > 1 else ''} "
                            f"(cuda:0 to cuda:{count - 1})")


def check_train_options(args: argparse.Namespace, trial_id: str) -> str | None:
    """--max-steps, --checkpoint-dir and --resume make sense for this trial; returns the checkpoint
    to resume from, if any."""
    import json
    import re
    from pathlib import Path

    from sweeper.console import UserError, err_console
    from sweeper.trainer import latest_checkpoint
    from sweeper.trainer.checkpoint import checkpoint_problem

    if args.max_steps is not None and args.max_steps < 1:
        raise UserError(f"--max-steps {args.max_steps}: expected a positive number of optimizer steps")
    if args.checkpoint_dir is not None:
        folder = Path(args.checkpoint_dir)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--checkpoint-dir {args.checkpoint_dir}: is a file, not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"--checkpoint-dir {args.checkpoint_dir}: cannot create it ({error.strerror})") from None
    resume = args.resume
    if resume == "latest":
        if not args.checkpoint_dir:
            raise UserError("--resume latest needs --checkpoint-dir")
        resume = latest_checkpoint(args.checkpoint_dir)
        for newer in sorted(Path(args.checkpoint_dir).glob("step_*")):
            if resume is None or newer.name > Path(resume).name:
                problem = checkpoint_problem(newer, checksums=False)
                err_console.print(f"warning: the checkpoint {newer} {problem}; not resuming from it", markup=False,
                                  soft_wrap=True)
        if resume is None:
            err_console.print(f"--resume latest: no checkpoint under {args.checkpoint_dir} yet; training from step 0")
            return None
    if resume is None:
        return None
    folder = Path(resume)
    if not (folder / "state.pt").is_file() or not (folder / "config.json").is_file():
        what = "does not exist" if not folder.exists() else "is not a checkpoint folder (no state.pt and config.json)"
        raise UserError(f"--resume {resume}: {what}; pass a step_* folder or `latest` with --checkpoint-dir")
    problem = checkpoint_problem(folder, checksums=False)
    if problem is not None:
        raise UserError(f"--resume {resume}: the checkpoint {problem}; pass a whole step_* folder or `latest` "
                        "with --checkpoint-dir")
    try:
        saved = json.loads((folder / "config.json").read_text()).get("trial_id")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"--resume {resume}: its config.json is unreadable; the checkpoint is damaged") from None
    if saved != trial_id:
        raise UserError(f"--resume {resume}: the checkpoint is of trial {saved}, not of {trial_id}")
    step = re.fullmatch(r"step_(\d+)", folder.name)
    if step and args.max_steps is not None and args.max_steps <= int(step.group(1)):
        raise UserError(f"--max-steps {args.max_steps}: the checkpoint to resume is already at step "
                        f"{int(step.group(1)):,}")
    return resume


def run_train(args: argparse.Namespace) -> int:
    import json
    import sys

    import torch  # noqa: F401  (before anything else native)

    from sweeper.console import err_console
    from sweeper.data import open_pool, open_validation
    from sweeper.data.progress import prepare_with_progress
    from sweeper.trainer import TrialFailure, train

    check_device(args.device)
    ctx = Context(args)
    spec, plan = ctx.spec, ctx.plan
    trial = find_trial(plan, args.trial)
    resume = check_train_options(args, trial.id)
    profile = ctx.profile
    prepared = prepare_with_progress(spec, [trial.unique_tokens], profile.storage_location(),
                                     console=err_console)
    peak = profile.hardware.peak_flops if profile.hardware.accelerator != "cpu" else None
    config = trial.on_device(args.device, peak)  # the planned config, on this process's device

    def reporter(metrics: dict[str, float], checkpoint: str | None) -> None:
        line = dict(metrics, checkpoint=checkpoint) if checkpoint else dict(metrics)
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    err_console.print(f"training {trial.name} ({trial.id}): {trial.steps:,} steps of "
                      f"{trial.train.batch_sequences} x {spec.data.seq_len} tokens on {args.device}")
    try:
        train(config, open_pool(prepared.manifest, trial.unique_tokens), open_validation(prepared.manifest), reporter,
              checkpoint_dir=args.checkpoint_dir, resume_from=resume, max_steps=args.max_steps)
    except TrialFailure as failure:
        err_console.print(f"[red]trial failed:[/] {failure}")
        return 1
    return 0


def check_sample_options(args: argparse.Namespace) -> None:
    """The options that do not depend on the model."""
    import math

    from sweeper.console import UserError

    if not 1 <= args.num_samples <= MAX_SAMPLES:
        raise UserError(f"--num-samples {args.num_samples}: expected 1 to {MAX_SAMPLES}")
    if args.length is not None and args.length < 1:
        raise UserError(f"--length {args.length}: expected a positive number of tokens")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UserError(f"--temperature {args.temperature:g}: expected a finite number >= 0 (0 is greedy)")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k {args.top_k}: expected a positive number of tokens (leave it out for all)")
    if args.steps < 1:
        raise UserError(f"--steps {args.steps}: expected a positive number of unmasking steps")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed {args.seed}: expected 0 to 2**63 - 1")


def sample_kind(args: argparse.Namespace, family: str) -> str:
    """How to sample a model of `family`: 'ar', 'mdm' or 'bd3lm' (a dual model as --as says, ar by
    default); --as on a model of another family is an error."""
    from sweeper.console import UserError

    read_as = getattr(args, "read_as", None)
    if family == "dual":
        return read_as or "ar"
    if read_as is not None and read_as != family:
        raise UserError(f"--as {read_as}: only a dual model samples either way; this one is {family}")
    return family


def sample_length(args: argparse.Namespace, family: str, seq_len: int, model_family: str | None = None) -> int:
    """--length checked against what `family` ('ar', 'mdm', 'bd3lm': how it samples) can generate;
    `model_family` names the model's own where it differs (a dual model)."""
    from sweeper.console import UserError

    if args.length is None:
        return seq_len
    limit = AR_LENGTH_FACTOR * seq_len if family == "ar" else seq_len
    if args.length > limit:
        article = "an" if family == "mdm" else "a"
        why = f"{article} {family} sample is one window of seq_len" if family != "ar" else \
            f"ar generates at most {AR_LENGTH_FACTOR} x seq_len"
        raise UserError(f"--length {args.length:,}: this {model_family or family} model has seq_len {seq_len:,}, "
                        f"and {why} "
                        f"(at most {limit:,})")
    return args.length


def read_model(checkpoint: str, label: str, spec_file: str, tokenizer: Any, device: str = "cpu") -> tuple[Any, Any]:
    """(model in eval mode on `device`, TrialConfig) of a checkpoint folder, checked against the
    spec's tokenizer; `label` names the checkpoint in messages. Raises UserError when it does not
    load or was trained with another tokenizer."""
    model, config, _ = read_weights(checkpoint, label, device)
    check_vocab(config, tokenizer, label, spec_file)
    return model, config


def read_weights(checkpoint: str, label: str, device: str = "cpu", weights: str = "final") -> tuple[Any, Any, int]:
    """trainer.load_weights (model, TrialConfig, tokens its weights trained on) with every way a
    checkpoint fails to load, a missing best-weights file included, turned into one UserError naming
    `label`."""
    import pickle

    from sweeper.console import UserError
    from sweeper.trainer import CheckpointUnreadable, load_weights

    try:
        return load_weights(checkpoint, device, weights)
    except CheckpointUnreadable as error:  # torn, or holds no best weights: the trainer says which
        raise UserError(f"{label}: the checkpoint {error.problem}") from None
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"{label}: cannot read the checkpoint ({first}); it is damaged or "
                        "not one of sweeper's") from None


def check_vocab(config: Any, tokenizer: Any, label: str, spec_file: str) -> None:
    """Raises UserError when the checkpoint's vocabulary differs from the spec's tokenizer's."""
    from sweeper.console import UserError

    if config.vocab_size != tokenizer.vocab_size:
        raise UserError(f"{label} was trained with {config.vocab_size:,} ids, but the tokenizer of "
                        f"{spec_file} has {tokenizer.vocab_size:,}: pass the spec the checkpoint was trained from")


def run_sample(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from sweeper.console import UserError, console

    check_sample_options(args)
    from sweeper.data import find, open_tokenizer
    from sweeper.trainer import sample_ar, sample_bd3lm, sample_mdm

    ctx = Context(args)
    spec, profile = ctx.spec, ctx.profile
    with tempfile.TemporaryDirectory(prefix="sweeper-sample-") as scratch:
        checkpoint = args.checkpoint
        if not Path(checkpoint).exists():
            checkpoint = checkpoint_of_run(args.checkpoint, ctx, Path(scratch))
        elif not (Path(checkpoint) / "state.pt").is_file():
            raise UserError(f"{checkpoint} is not a checkpoint folder (no state.pt); pass a step_* folder or a run id")
        manifest = find(spec.data, profile.storage_location())
        if manifest is None:
            raise UserError(f"{args.spec}: its data is not prepared here; run `sweeper data {args.spec}`")
        tokenizer = open_tokenizer(manifest)
        model, config = read_model(checkpoint, args.checkpoint, args.spec, tokenizer)
        kind = sample_kind(args, config.family)
        length = sample_length(args, kind, config.seq_len, config.family)
        if kind == "ar":  # a fresh document starts after an end-of-document token
            ids = sample_ar(model, [tokenizer.eod_id], num_samples=args.num_samples, max_new_tokens=length,
                            temperature=args.temperature, top_k=args.top_k, seed=args.seed)[:, 1:]
        elif kind == "bd3lm":
            ids = sample_bd3lm(model, config.block_size, None, num_samples=args.num_samples, length=length,
                               steps=args.steps, order=args.order, temperature=args.temperature,
                               top_k=args.top_k, seed=args.seed)
        else:
            ids = sample_mdm(model, None, num_samples=args.num_samples, length=length, steps=args.steps,
                             order=args.order, temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    for row in ids.tolist():
        console.print(tokenizer.decode(row), markup=False)
        console.rule(style="dim")
    return 0


def checkpoint_of_run(run_id: str, ctx: Context, scratch: Any) -> str:
    """The latest checkpoint of the trial an MLflow run trained, copied into `scratch`."""
    import re

    from sweeper.console import UserError
    from sweeper.storage import trial_dir
    from sweeper.tracking import TAG_SUPERSEDED, TAG_TRIAL

    if not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise UserError(f"{run_id}: neither a checkpoint folder here nor an MLflow run id (32 hex digits)")
    spec, profile = ctx.spec, ctx.profile
    run = ctx.tracking().run(run_id)
    if run is None:
        raise UserError(f"{run_id}: no run with this id in experiment {spec.experiment!r} at {profile.tracking_uri()}")
    trial_id = run.data.tags.get(TAG_TRIAL)
    if not trial_id:
        raise UserError(f"{run_id}: not a trial's run (no {TAG_TRIAL} tag); pass a trial's run id")
    newer = run.data.tags.get(TAG_SUPERSEDED)
    if newer:
        raise UserError(f"{run_id}: a rerun of trial {trial_id} replaced this run and its checkpoints; "
                        f"sample run {newer}")
    from sweeper.driver.checkpoints import latest_persisted

    endpoint = profile.storage_endpoint()
    found = latest_persisted(trial_dir(profile.storage_root(), spec.experiment, trial_id), endpoint)
    if found is None:
        raise UserError(f"{run_id}: trial {trial_id} has no checkpoint in {profile.storage_root()} yet")
    return found.to_directory(str(scratch / "checkpoint"))
