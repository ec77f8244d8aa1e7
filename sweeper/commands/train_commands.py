"""`sweeper train` (one planned trial in this process, no Ray) and `sweeper sample` (text from a checkpoint)."""

from __future__ import annotations

import argparse
from typing import Any

from sweeper.commands.spec_commands import add_profile_arguments, load_plan, load_profile_for


def register(subparsers: Any) -> None:
    train = subparsers.add_parser("train", help="train one planned trial here, without Ray; JSON-lines metrics",
                                  description="Train one trial of SPEC in this process, preparing its data if "
                                              "needed, and print its metrics as JSON lines on stdout.")
    train.add_argument("spec", metavar="SPEC")
    train.add_argument("--trial", required=True, metavar="ID", help="trial id (or a unique prefix), see `sweeper plan`")
    add_profile_arguments(train)
    train.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps (final eval included)")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    train.add_argument("--checkpoint-dir", metavar="DIR", help="write checkpoints (step_*) under DIR")
    train.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue exactly from a step_* folder, or `latest` under --checkpoint-dir")
    train.set_defaults(handler=run_train)

    sample = subparsers.add_parser("sample", help="generate text from a trained checkpoint of either family")
    sample.add_argument("checkpoint", metavar="CHECKPOINT", help="a step_* checkpoint folder")
    sample.add_argument("--spec", required=True, help="the sweep spec: its tokenizer decodes the samples")
    add_profile_arguments(sample)
    sample.add_argument("--num-samples", type=int, default=1)
    sample.add_argument("--length", type=int, default=64, help="tokens to generate")
    sample.add_argument("--temperature", type=float, default=1.0, help="ar: 0 is greedy")
    sample.add_argument("--top-k", type=int, help="ar: sample among the k most likely tokens")
    sample.add_argument("--steps", type=int, default=32, help="mdm: unmasking steps")
    sample.add_argument("--order", choices=("random", "confident"), default="confident",
                        help="mdm: which masked tokens to reveal first")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=run_sample)


def find_trial(plan: Any, wanted: str) -> Any:
    from sweeper.console import UserError

    matches = [t for t in plan.trials if t.id.startswith(wanted)]
    if len(matches) != 1:
        found = "no trial" if not matches else f"{len(matches)} trials"
        raise UserError(f"--trial {wanted}: {found} of {plan.spec_name} has an id starting so; `sweeper plan` lists them")
    return matches[0]


def run_train(args: argparse.Namespace) -> int:
    import json
    import sys

    import torch  # noqa: F401  (before anything else native)

    from sweeper.console import UserError, err_console
    from sweeper.data import StorageLocation, open_pool, open_validation
    from sweeper.data.command import prepare_with_progress
    from sweeper.trainer import TrialConfig, TrialFailure, latest_checkpoint, train
    from sweeper.worker import build_trial_config

    spec, plan = load_plan(args)
    trial = find_trial(plan, args.trial)
    profile = load_profile_for(args, args.spec)
    prepared = prepare_with_progress(spec, [trial.unique_tokens], StorageLocation.from_profile(profile),
                                     console=err_console)
    resume = args.resume
    if resume == "latest":
        if not args.checkpoint_dir:
            raise UserError("--resume latest needs --checkpoint-dir")
        resume = latest_checkpoint(args.checkpoint_dir)
    peak = profile.hardware.peak_flops if profile.hardware.accelerator != "cpu" else None
    config = TrialConfig.from_dict(build_trial_config(trial, vocab_size=spec.vocab_size, device=args.device,
                                                      peak_flops=peak))

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


def run_sample(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sweeper.console import UserError, console
    from sweeper.trainer import load_model, sample_ar, sample_mdm

    if not (Path(args.checkpoint) / "state.pt").is_file():
        raise UserError(f"{args.checkpoint} is not a checkpoint folder (no state.pt); pass a step_* folder")
    from sweeper.data import StorageLocation, find, open_tokenizer
    from sweeper.spec import load_spec

    spec = load_spec(args.spec)
    manifest = find(spec.data, StorageLocation.from_profile(load_profile_for(args, args.spec)))
    if manifest is None:
        raise UserError(f"{args.spec}: its data is not prepared here; run `sweeper data {args.spec}`")
    tokenizer = open_tokenizer(manifest)
    model, config = load_model(args.checkpoint)
    if config.vocab_size != tokenizer.vocab_size:
        raise UserError(f"{args.checkpoint} was trained with {config.vocab_size:,} ids, but the tokenizer of "
                        f"{args.spec} has {tokenizer.vocab_size:,}: pass the spec the checkpoint was trained from")
    if config.family == "ar":  # a fresh document starts after an end-of-document token
        ids = sample_ar(model, [tokenizer.eod_id], num_samples=args.num_samples, max_new_tokens=args.length,
                        temperature=args.temperature, top_k=args.top_k, seed=args.seed)[:, 1:]
    else:
        ids = sample_mdm(model, None, num_samples=args.num_samples, length=args.length, steps=args.steps,
                         order=args.order, seed=args.seed)
    for row in ids.tolist():
        console.print(tokenizer.decode(row), markup=False)
        console.rule(style="dim")
    return 0
