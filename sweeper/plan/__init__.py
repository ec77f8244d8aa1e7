"""The planner: spec + profile -> trials, each with the TrialConfig its trainer runs (every count a
trial needs is fixed here, the how-settings from the profile). Pure, deterministic, no I/O.

Each trial gets a stable id: the hash of the recipe version ID_SCHEMA (how the trainer turns a
config into a model; README: what changed between recipe versions) and the canonical resolved
config of everything that determines the trained model and its recorded curve (family, model
dimensions, data sources, tokenizer, U, tokens, validation set, every train hyperparameter, seed,
precision), and nothing
about how or where it runs (resources, micro-batch, compile, device, tracking, profile). So
`25M` and `25000000`, key order and formatting give the same id under every profile.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import heapq
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sweeper.spec.grid import Point
from sweeper.spec.expand import expand
from sweeper.spec.presets import ModelSpec, num_params, num_params_actual
from sweeper.profile import Hardware, Profile
from sweeper.spec.schema import FieldError, plain
from sweeper.plan.sizing import Sizing, estimate_device_seconds, size_trial, wall_seconds
from sweeper.spec import DataSpec, SweepSpec, TrainSpec
from sweeper.trial import HOW_KEYS, OPTION_DEFAULTS, Parallelism, TrialConfig, changed_options, \
    option_family_problem, options_label, processed_flops, processed_per_token, training_flops
from sweeper.units import fmt_count, fmt_epochs

ID_SCHEMA = "sweeper.trial/2"  # README: what changed between recipe versions (2: mdm noise, init)
ID_LENGTH = 12
TRAIN_POINTS = 100  # at most this many train-metric points per curve: log_every_steps = ceil(steps / 100)


def _from_config(field: str, doc: str = "") -> property:
    """A Trial attribute read from its TrialConfig, where it is planned once."""
    return property(lambda trial: getattr(trial.config, field), doc=doc or None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    """A planned trial: the TrialConfig its trainer runs, and what planning knows beside it (the spec
    blocks it came from, its sizing on the profile's hardware, time and cost). The driver hands
    `config` to the worker as is; the counts below are read from it, so each is planned once."""

    config: TrialConfig
    name: str  # readable: mdm-140M-U100M-e50
    model: ModelSpec
    num_params_actual: int
    flops_budget: float | None  # the iso-FLOP budget that generated it, if any
    train: TrainSpec
    data: DataSpec
    sizing: Sizing
    device_seconds: float
    wall_seconds: float
    cost: float | None
    origin: str  # file:line of the grid block that made it

    id = _from_config("trial_id")
    family = _from_config("family")
    num_params = _from_config("num_params", "PAPER.md's N, for C = 6ND")
    unique_tokens = _from_config("unique_tokens", "U")
    epochs = _from_config("epochs")
    tokens = _from_config("tokens", "D = U x epochs")
    steps = _from_config("steps", "optimizer steps = ceil(D / (batch_sequences x seq_len))")
    tokens_trained = _from_config("tokens_trained", "steps x batch tokens: D rounded up to whole steps")
    epochs_trained = _from_config("epochs_trained")
    warmup_steps = _from_config("warmup_steps")
    eval_steps = _from_config("eval_steps", "0 (untrained) ... steps")
    checkpoint_every_steps = _from_config("checkpoint_every_steps")
    seed = _from_config("seed")

    @property
    def flops(self) -> float:
        return training_flops(self.num_params, self.tokens)  # C = 6ND

    @property
    def flops_processed(self) -> float:
        """The compute the family really spends on D: 6ND times the tokens its passes read per trained
        token (bd3lm: 2, x_t ⊕ x_0; sweeper.trial.processed_flops); fits and C_crit compare on 6ND."""
        return processed_flops(self.num_params, self.tokens, self.family)

    def on_device(self, device: str, peak_flops: float | None) -> TrialConfig:
        """This trial's config to run on `device` (`sweeper train --device`): the how-settings that
        follow from where it runs change, nothing else."""
        return dataclasses.replace(self.config, device=device, peak_flops=peak_flops,
                                   parallelism=parallelism(device, self.sizing))


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    spec_name: str
    experiment: str
    profile: str
    hardware: Hardware
    concurrency: int
    trials: tuple[Trial, ...]  # longest first
    merged_duplicates: int  # grid points that resolved to a trial already planned

    def totals(self) -> dict[str, Any]:
        families = Counter(t.family for t in self.trials)
        cost = [t.cost for t in self.trials]
        return {
            "trials": len(self.trials),
            "per_family": dict(sorted(families.items())),
            "tokens": sum(t.tokens for t in self.trials),
            "flops": sum(t.flops for t in self.trials),
            "flops_processed": sum(t.flops_processed for t in self.trials),
            "device_hours": sum(t.device_seconds for t in self.trials) / 3600,
            "makespan_hours": self.makespan_seconds() / 3600,
            "cost": sum(cost) if cost and None not in cost else None,  # type: ignore[arg-type]
            "not_fitting": sum(not t.sizing.fits for t in self.trials),
        }

    def makespan_seconds(self) -> float:
        """Longest-first list scheduling of wall times onto the profile's concurrent slots."""
        slots = [0.0] * self.concurrency
        for trial in self.trials:  # already longest first
            heapq.heapreplace(slots, slots[0] + trial.wall_seconds)
        return max(slots)


def plan_sweep(spec: SweepSpec, profile: Profile) -> Plan:
    vocab = spec.vocab_size
    defaults = {f.name: getattr(spec.train, f.name) for f in dataclasses.fields(TrainSpec)}
    points = expand(spec.grid, models=spec.models, vocab_size=vocab, train_defaults=defaults)
    trials: dict[str, Trial] = {}
    duplicates = 0
    for point in points:
        trial = plan_trial(spec, point, profile)
        if trial.id in trials:
            duplicates += 1
            continue
        trials[trial.id] = trial
    ordered = tuple(sorted(trials.values(), key=lambda t: (-t.wall_seconds, t.id)))
    return Plan(spec_name=spec.name, experiment=spec.experiment, profile=profile.name, hardware=profile.hardware,
                concurrency=profile.concurrency, trials=ordered, merged_duplicates=duplicates)


def plan_trial(spec: SweepSpec, point: Point, profile: Profile) -> Trial:
    try:
        train = dataclasses.replace(spec.train, **dict(point.settings)) if point.settings else spec.train
    except FieldError as error:
        raise point.origin.error(f"{error.message} (after this block's settings and overrides)") from None
    problem = option_family_problem(point.family, _what(train))
    if problem:
        raise point.origin.error(f"{problem} (after this block's settings and overrides)")
    data, model, hardware = spec.data, spec.models[point.model], profile.hardware
    if point.family == "bd3lm" and data.seq_len % train.block_size:
        raise point.origin.error(f"block_size {train.block_size} does not divide seq_len {data.seq_len}: bd3lm "
                                 "cuts every sequence into whole blocks; pick a divisor of seq_len")
    # bd3lm's passes read x_t ⊕ x_0: twice the tokens, each sequence 2L long, for time and memory
    processed = processed_per_token(point.family)
    tokens_per_step = train.batch_sequences * data.seq_len
    steps = max(1, math.ceil(point.tokens / tokens_per_step))
    if point.unique_tokens < data.seq_len + 1:
        raise point.origin.error(f"unique_tokens {point.unique_tokens:,} is less than one sample "
                                 f"(seq_len + 1 = {data.seq_len + 1:,} tokens)")
    evals = eval_steps(steps, train.eval_points, train.eval_spacing)
    val_samples = {"ar": 1, "dual": 1 + train.mdm_eval_samples}.get(point.family, train.mdm_eval_samples)
    sizing = size_trial(model, vocab_size=spec.vocab_size, seq_len=processed * data.seq_len,
                        batch_sequences=train.batch_sequences, precision=train.precision, hardware=hardware)
    device_s = estimate_device_seconds(train_tokens=processed * steps * tokens_per_step,
                                       eval_tokens=processed * len(evals) * data.validation_tokens * val_samples,
                                       model=model, vocab_size=spec.vocab_size, seq_len=processed * data.seq_len,
                                       hardware=hardware)
    wall_s = wall_seconds(device_s, sizing, hardware)
    checkpoint_every = max(1, min(steps, math.floor(train.checkpoint_every_minutes * 60 / (wall_s / steps))))
    price = hardware.price_per_device_hour
    trial_id = trial_identity(family=point.family, model=model, data=data, train=train,
                              unique_tokens=point.unique_tokens, tokens=point.tokens)
    device = "cpu" if hardware.accelerator == "cpu" else "auto"
    try:
        config = TrialConfig(
            trial_id=trial_id, family=point.family, num_params=num_params(model, spec.vocab_size),  # type: ignore[arg-type]
            unique_tokens=point.unique_tokens, epochs=point.epochs, tokens=point.tokens, seed=train.seed,
            vocab_size=spec.vocab_size, d_model=model.d_model, h_f=model.h_f, heads=model.heads,  # type: ignore[arg-type]
            head_dim=model.head_dim, layers=model.layers, dropout=train.dropout,  # type: ignore[arg-type]
            init_std=train.init_std, seq_len=data.seq_len, lr_peak=train.lr_peak, lr_min=train.lr_min,
            warmup_steps=max(1, round(train.warmup_fraction * steps)), steps=steps, schedule=train.schedule,
            betas=train.betas, eps=train.eps, weight_decay=train.weight_decay, grad_clip=train.grad_clip,
            batch_sequences=train.batch_sequences, micro_batch=sizing.micro_batch, eval_steps=evals,
            mdm_eval_samples=train.mdm_eval_samples, checkpoint_every_steps=checkpoint_every,
            log_every_steps=-(-steps // TRAIN_POINTS), checkpoint_every_s=train.checkpoint_every_minutes * 60,
            precision=train.precision, compile=train.compile,
            device=device, peak_flops=hardware.peak_flops, parallelism=parallelism(device, sizing),
            **{**{name: getattr(train, name) for name in OPTION_DEFAULTS}, **_same_dropout(train)})
    except ValueError as error:  # the spec's own checks should have said it at its key; this says where
        raise point.origin.error(str(error)) from None
    return Trial(
        config=config, name=trial_name(point, train, spec.train), model=model,
        num_params_actual=num_params_actual(model, spec.vocab_size), flops_budget=point.flops_budget,
        train=train, data=data, sizing=sizing, device_seconds=device_s, wall_seconds=wall_s,
        cost=None if price is None else device_s / 3600 * price, origin=f"{point.origin.file}:{point.origin.line}",
    )


def _same_dropout(train: TrainSpec) -> dict[str, Any]:
    """attention_dropout equal to dropout is its default (None), in the config as in the id."""
    return {"attention_dropout": None} if train.attention_dropout == train.dropout else {}


def parallelism(device: str, sizing: Sizing) -> Parallelism:
    """Sizing spreads a trial over several GPUs only when its state does not fit one, so those shard
    it (fsdp); CPU processes (processes_per_trial) each hold a replica, as data-parallel (ddp)."""
    return "fsdp" if device != "cpu" and sizing.devices > 1 else "ddp"


@functools.lru_cache(maxsize=4096)
def eval_steps(steps: int, points: int, spacing: str) -> tuple[int, ...]:
    """0 (the untrained model), then `points` evaluations spaced log or linear over 1..steps, ending at steps."""
    if spacing == "linear":
        marks = {round(steps * i / points) for i in range(1, points + 1)}
    elif points == 1:
        marks = {steps}
    else:
        marks = {round(math.exp(math.log(steps) * i / (points - 1))) for i in range(points)}
    return (0, *sorted((marks | {steps}) - {0}))


# Short name parts for train settings a grid block sets away from the spec's train section.
_SETTING_TAGS = {"lr_peak": "lr", "lr_min": "lrmin", "weight_decay": "wd", "dropout": "drop",
                 "batch_sequences": "bs", "warmup_fraction": "warm", "grad_clip": "clip", "init_std": "init"}


def trial_name(point: Point, train: TrainSpec, spec_train: TrainSpec) -> str:
    """family-model-U…-e…, then the changed options (sweeper.trial.options_label), the other train
    settings the grid point sets away from the spec's train section (e.g. -lr5e-4, so an LR search's
    trials have names of their own) and -s{seed} when not the spec's: mdm-140M-U100M-e50,
    ar-278M-U100M-e100-ord4, ar-gq-m-U128k-e16-lr0.0005."""
    name = f"{point.family}-{point.model}-U{fmt_count(point.unique_tokens)}-e{fmt_epochs(point.epochs)}"
    options = options_label(_what(train))
    name = f"{name}-{options}" if options else name
    what, spec_what = _what(train), _what(spec_train)
    for key, _ in point.settings:
        if key in OPTION_DEFAULTS or key == "seed" or key not in what or what[key] == spec_what.get(key):
            continue
        value = what[key]
        label = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        name = f"{name}-{_SETTING_TAGS.get(key, key)}{label}"
    return name if train.seed == spec_train.seed else f"{name}-s{train.seed}"


def trial_identity(*, family: str, model: ModelSpec, data: DataSpec, train: TrainSpec, unique_tokens: int,
                   tokens: int) -> str:
    canonical = {
        "schema": ID_SCHEMA,
        "family": family,
        "model": model.dimensions(),
        "data": _what(data),
        "unique_tokens": unique_tokens,
        "tokens": tokens,
        "train": _train_what(train),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


@functools.lru_cache(maxsize=1024)
def _train_what(train: TrainSpec) -> dict[str, Any]:
    """The train settings an id hashes: each option of OPTION_DEFAULTS only where it differs from its
    default (sweeper.trial), so ids planned before an option existed stay as they were."""
    what = _what(train)
    return {**{k: v for k, v in what.items() if k not in OPTION_DEFAULTS}, **changed_options(what)}


@functools.lru_cache(maxsize=1024)
def _what(config: Any) -> dict[str, Any]:
    """Plain data of a config dataclass, how-not-what keys left out, numbers typed by their field
    (a float field holding 1 is written 1.0). Equal configs therefore give equal text, which makes
    caching by equality safe: a sweep's shared data and train blocks are converted once."""
    return plain(config, leave_out=HOW_KEYS, typed=True)
