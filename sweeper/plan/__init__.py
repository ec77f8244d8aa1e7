"""The planner: spec + profile -> trials, each with the TrialConfig its trainer runs (every count a
trial needs is fixed here, the how-settings from the profile). Pure, deterministic, no I/O.

Each trial gets a stable id: the hash of the recipe version ID_SCHEMA (how the trainer turns a
config into a model; README: what changed between recipe versions) and the canonical resolved
config of everything that determines the trained model and its recorded curve (family, model
dimensions, data sources, tokenizer, U, tokens, validation set, every train hyperparameter, seed,
precision), and nothing
about how or where it runs (resources, micro-batch, compile, device, tracking, profile). So
`25M` and `25000000`, key order and formatting give the same id under every profile.

Prefix sharing (`share_prefix: true`, wsd only; `share_prefixes`): trials identical but for their
length (epochs, tokens) and decay train the same steps up to their decay start (TrialConfig.decay_start),
so the one of such a group whose decay starts last (the longest) is the *trunk*, trained from step 0, and
each other one a *branch* that starts from the trunk's state after its own decay_start steps
(`Trial.trunk_id`, `Trial.branch_step`) and trains only its decay. A branch keeps the id it has unshared:
it is the same experiment. Its evaluation steps up to the branch point are the trunk's to run
(`Plan.trunk_eval_steps`), since they generally differ from the trunk's own (each trial's are spaced
over its own steps). `Plan.totals` sums both ways.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sweeper.spec.grid import Point
from sweeper.spec.expand import expand
from sweeper.spec.presets import ModelSpec, num_params, num_params_actual
from sweeper.profile import Hardware, Profile
from sweeper.spec.schema import FieldError, plain
from sweeper.plan.schedule import makespan, starts_at_branch_point
from sweeper.plan.sizing import Sizing, downstream_seconds, size_trial, trial_device_seconds, wall_seconds
from sweeper.spec import WSD_KEYS, DataSpec, SweepSpec, TrainSpec
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
    # prefix sharing (module docstring): the trunk this trial branches from, None for one trained from step 0
    trunk_id: str | None = None
    branch_step: int = 0  # optimizer steps taken from the trunk (this trial's decay_start); 0 unless a branch
    branch_device_seconds: float = 0.0  # a branch's own estimate: its decay steps and all its evaluations

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

    @property
    def tokens_shared(self) -> int:
        """Tokens a branch takes from its trunk: branch_step x tokens per step (0 unless a branch)."""
        return self.branch_step * self.config.tokens_per_step

    @property
    def branch_wall_seconds(self) -> float:
        """A branch's own wall time from its trunk's branch point (its decay steps and every evaluation:
        wall_seconds scaled by branch_device_seconds / device_seconds); its whole wall time unless a branch."""
        if self.trunk_id is None or self.device_seconds <= 0:
            return self.wall_seconds
        return self.wall_seconds * self.branch_device_seconds / self.device_seconds

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

    def totals(self, stored: Collection[str] = ()) -> dict[str, Any]:
        """Counts and sums over the trials, each trained from step 0 (`flops`, `device_hours`, `cost`)
        and with prefix sharing (`*_shared`: a branch counts 6·N·(D - tokens_shared) and its own device
        time when its trunk is among these trials or it is in `stored`, the branches whose branch point
        an earlier run left in storage; else in full). Without branches the shared totals equal the others."""
        families = Counter(t.family for t in self.trials)
        cost = [t.cost for t in self.trials]
        ids = {t.id for t in self.trials}
        branches = [t for t in self.trials if starts_at_branch_point(t, ids, stored)]
        saved_s = sum(t.device_seconds - t.branch_device_seconds for t in branches)
        price = self.hardware.price_per_device_hour
        totals = {
            "trials": len(self.trials),
            "per_family": dict(sorted(families.items())),
            "tokens": sum(t.tokens for t in self.trials),
            "flops": sum(t.flops for t in self.trials),
            "flops_processed": sum(t.flops_processed for t in self.trials),
            "device_hours": sum(t.device_seconds for t in self.trials) / 3600,
            "makespan_hours": self.makespan_seconds() / 3600,
            "makespan_hours_shared": self.makespan_seconds(shared=True, stored=stored) / 3600,
            "cost": sum(cost) if cost and None not in cost else None,  # type: ignore[arg-type]
            "not_fitting": sum(not t.sizing.fits for t in self.trials),
            "trunks": len({t.trunk_id for t in branches}),
            "branches": len(branches),
        }
        flops_saved = sum(training_flops(t.num_params, t.tokens_shared) for t in branches)
        totals |= {
            "flops_shared": totals["flops"] - flops_saved,
            "flops_processed_shared": totals["flops_processed"] - sum(
                processed_flops(t.num_params, t.tokens_shared, t.family) for t in branches),
            "device_hours_shared": totals["device_hours"] - saved_s / 3600,
            "cost_shared": None if totals["cost"] is None or price is None else totals["cost"] - saved_s / 3600 * price,
        }
        return totals

    def branches(self, trunk_id: str) -> tuple[Trial, ...]:
        """The trials that branch from `trunk_id`, by branch step."""
        return tuple(sorted((t for t in self.trials if t.trunk_id == trunk_id), key=lambda t: (t.branch_step, t.id)))

    def trunk_eval_steps(self, trunk_id: str) -> tuple[int, ...]:
        """The steps at which a trunk evaluates: its own eval_steps and each branch's up to its branch point
        (the branch's curve takes those points from the trunk, so its val/loss_best is its unshared run's)."""
        trunk = next(t for t in self.trials if t.id == trunk_id)  # StopIteration: not a trial of this plan
        steps = set(trunk.eval_steps)
        for branch in self.branches(trunk_id):
            steps.update(s for s in branch.eval_steps if s <= branch.branch_step)
        return tuple(sorted(steps))

    def makespan_seconds(self, shared: bool = False, stored: Collection[str] = ()) -> float:
        """The sweep's wall time on the profile's concurrent slots (sweeper.plan.schedule.makespan);
        `shared`: as the driver starts the trials under prefix sharing (`stored`: the branches whose
        branch point is already in storage), else each trained alone."""
        return makespan(self.trials, self.concurrency, shared=shared, stored=stored)


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
    trials = share_prefixes(trials, profile.hardware)
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
    sizing = size_trial(model, vocab_size=spec.vocab_size, seq_len=processed * data.seq_len,
                        batch_sequences=train.batch_sequences, precision=train.precision, hardware=hardware)
    device_s = trial_device_seconds(family=point.family, model=model, data=data, vocab_size=spec.vocab_size,
                                    batch_sequences=train.batch_sequences, micro_batch=sizing.micro_batch,
                                    mdm_eval_samples=train.mdm_eval_samples, hardware=hardware, steps=steps,
                                    evaluations=len(evals))
    wall_s = wall_seconds(device_s, sizing, hardware)
    checkpoint_every = max(1, min(steps, math.floor(train.checkpoint_every_minutes * 60 / (wall_s / steps))))
    if spec.evals is not None:  # the eval stage runs in the trial's worker after training: its time is the trial's
        device_s += downstream_seconds(family=point.family, model=model, vocab_size=spec.vocab_size,
                                       seq_len=data.seq_len, hardware=hardware, tasks=len(spec.evals.tasks),
                                       limit=spec.evals.limit, mc_samples=spec.evals.mc_samples)
    device_s += hardware.trial_seconds  # starting its worker, opening its data: once a trial
    wall_s = wall_seconds(device_s, sizing, hardware)
    price = hardware.price_per_device_hour
    trial_id = trial_identity(family=point.family, model=model, data=data, train=train,
                              unique_tokens=point.unique_tokens, tokens=point.tokens)
    device = "cpu" if hardware.accelerator == "cpu" else "auto"
    warmup, decay = schedule_steps(train, steps, math.ceil(point.unique_tokens / tokens_per_step))
    if train.schedule == "wsd" and warmup > steps - decay:
        raise point.origin.error(f"warmup_steps {warmup:,} is more than the {steps - decay:,} steps before the decay "
                                 f"of {point.family}-{point.model} at {fmt_epochs(point.epochs)} epochs of "
                                 f"U={fmt_count(point.unique_tokens)}: lower warmup_steps")
    try:
        config = TrialConfig(
            trial_id=trial_id, family=point.family, num_params=num_params(model, spec.vocab_size),  # type: ignore[arg-type]
            unique_tokens=point.unique_tokens, epochs=point.epochs, tokens=point.tokens, seed=train.seed,
            vocab_size=spec.vocab_size, d_model=model.d_model, h_f=model.h_f, heads=model.heads,  # type: ignore[arg-type]
            head_dim=model.head_dim, layers=model.layers, dropout=train.dropout,  # type: ignore[arg-type]
            init_std=train.init_std, seq_len=data.seq_len, lr_peak=train.lr_peak, lr_min=train.lr_min,
            warmup_steps=warmup, steps=steps, schedule=train.schedule, decay_steps=decay, decay_shape=train.decay_shape,
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


def schedule_steps(train: TrainSpec, steps: int, epoch_steps: int) -> tuple[int, int]:
    """(warmup steps, decay steps) of a trial of `steps` optimizer steps, `epoch_steps` = ceil(U / tokens per
    step) of them to an epoch. cosine, linear, constant: max(1, round(warmup_fraction x steps)), 0. wsd:
    warmup_steps, or when null max(1, round(warmup_fraction x epoch_steps)): under wsd warmup_fraction is of
    one epoch's steps, so the warmup depends on U and the batch only, never on the trial's length (lowered
    to the decay start where a trial is shorter than that); decay steps
    max(1, round(decay_fraction x steps)), Python's round (halves to even)."""
    if train.schedule != "wsd":
        return max(1, round(train.warmup_fraction * steps)), 0
    decay = max(1, round(train.decay_fraction * steps))
    if train.warmup_steps is not None:
        return train.warmup_steps, decay
    return min(max(1, round(train.warmup_fraction * epoch_steps)), steps - decay), decay


# What may differ between a trunk and its branches: their length, their decay, and the counts that follow.
_BRANCH_FIELDS = frozenset({"trial_id", "epochs", "tokens", "steps", "eval_steps", "decay_steps", "decay_shape"})


def share_prefixes(trials: dict[str, Trial], hardware: Hardware) -> dict[str, Trial]:
    """Prefix sharing (module docstring): among the wsd trials with share_prefix, those whose TrialConfig
    and data agree in everything but _BRANCH_FIELDS and how-settings form a group; the one whose decay
    starts last (then the most steps, then the lowest id) is the trunk, usually the longest, and every
    other one with a decay_start > 0 branches from it there. The same tokens per step, warmup steps, lr
    and seed make the trunk's first decay_start steps the branch's: the lr is at its peak until both
    decay (sweeper.trainer.optim.lr_at), the loader's order of epoch k depends on (seed, k) only and every
    random draw of a step on (seed, step)."""
    groups: dict[str, list[Trial]] = {}
    for trial in trials.values():
        if trial.train.share_prefix and trial.config.schedule == "wsd":
            config = {k: v for k, v in trial.config.to_dict().items() if k not in _BRANCH_FIELDS | HOW_KEYS}
            key = json.dumps({"config": config, "data": _what(trial.data)}, sort_keys=True, default=str)
            groups.setdefault(key, []).append(trial)
    out = dict(trials)
    for group in groups.values():
        trunk, *rest = sorted(group, key=lambda t: (-t.config.decay_start, -t.steps, t.id))
        for trial in rest:
            c = trial.config
            if c.decay_start == 0:  # nothing to share
                continue
            own_s = hardware.trial_seconds + trial_device_seconds(
                family=c.family, model=trial.model, data=trial.data, vocab_size=c.vocab_size,
                batch_sequences=c.batch_sequences, micro_batch=c.micro_batch, mdm_eval_samples=c.mdm_eval_samples,
                hardware=hardware, steps=c.decay_steps, evaluations=len(c.eval_steps))
            out[trial.id] = dataclasses.replace(trial, trunk_id=trunk.id, branch_step=c.decay_start,
                                                branch_device_seconds=own_s)
    return out


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
                 "batch_sequences": "bs", "warmup_fraction": "warm", "grad_clip": "clip", "init_std": "init",
                 "warmup_steps": "warmup", "decay_fraction": "decay", "decay_shape": "", "schedule": ""}


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
    """The train settings an id hashes: each option of OPTION_DEFAULTS, and each of wsd's keys (WSD_KEYS),
    only where it differs from its default (sweeper.trial), so ids planned before they existed stay as they
    were; a wsd trial's id has schedule wsd, so it differs from its cosine twin's."""
    what = _what(train)
    return {**{k: v for k, v in what.items() if k not in OPTION_DEFAULTS and not (k in WSD_KEYS and v == WSD_KEYS[k])},
            **changed_options(what)}


@functools.lru_cache(maxsize=1024)
def _what(config: Any) -> dict[str, Any]:
    """Plain data of a config dataclass, how-not-what keys left out, numbers typed by their field
    (a float field holding 1 is written 1.0). Equal configs therefore give equal text, which makes
    caching by equality safe: a sweep's shared data and train blocks are converted once."""
    return plain(config, leave_out=HOW_KEYS, typed=True)
