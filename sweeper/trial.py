"""The contract between planner and trainer, free of torch: the config a trial trains from, the
metric names it reports, and the FLOP formulas both sides count with.

The planner builds each trial's TrialConfig, filling every count (steps, warmup, eval points,
checkpoint cadence, micro-batch); the driver hands that object through Ray Tune to the worker as is,
and the trainer reads it and never recomputes a count. Validation here rejects values the trainer
cannot run, with messages that name the fix. `TrialConfig.to_dict` / `from_dict` are for storage
only: they round-trip it through JSON, which is how checkpoints carry the config that built their
model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Family = Literal["ar", "mdm", "dual", "bd3lm"]
FAMILIES: tuple[str, ...] = ("ar", "mdm", "dual", "bd3lm")
Schedule = Literal["cosine", "linear", "constant", "wsd"]  # wsd: warmup, stable, decay (sweeper.trainer.optim)
DecayShape = Literal["linear", "cosine", "1-sqrt"]  # wsd's final decay
Precision = Literal["bf16", "fp32"]
Parallelism = Literal["ddp", "fsdp"]
LossWeight = Literal["elbo", "unweighted"]
TimeSampling = Literal["iid", "stratified"]
DualValLoss = Literal["ar", "mdm"]

EMBEDDING_ROW_MULTIPLE = 128  # embedding rows are padded to a multiple of this (DESIGN.md)
MAX_ORDERINGS = 1024  # token orderings an ar trial may train on (the paper: at most 16)

# The settings that say *how* or *where* a trial runs, never *what* it trains or the curve it records: the
# spec's `compile`, `checkpoint_every_minutes`, `share_prefix` (a wsd trial trained as a branch of a longer
# one is the same experiment) and a source's `streaming`, and the TrialConfig fields marked how. The planner
# leaves them out of trial ids (sweeper.plan), and a checkpoint may be resumed with any of them changed
# (sweeper.trainer.loop). Everything else is *what*, `precision` included: bf16 autocast and fp32 give
# different curves, so precision is part of the id, and a resume in another precision would splice two
# experiments into one curve under one id (and lose the bit-exact resume), so the trainer refuses it.
# Through the sweep it cannot happen anyway, since another precision is another id.
HOW_KEYS = frozenset({"compile", "checkpoint_every_minutes", "streaming", "share_prefix",  # spec keys
                      "device", "peak_flops", "micro_batch", "parallelism",  # set where it runs
                      "checkpoint_every_steps", "checkpoint_every_s", "log_every_steps"})  # cadences


# Train settings added after trial ids were first pinned: the paper's ablations, the mdm objective's
# options, dual's and bd3lm's settings (PAPER.md, "Ablations in the paper", "Later work"). Each enters
# a trial's id only where it differs from its default, which is what every trial trained before it
# existed (sweeper.plan), so no earlier id changes. attention_dropout None means "as dropout".
OPTION_DEFAULTS: dict[str, Any] = {"attention_dropout": None, "input_mask_rate": 0.0, "orderings": 1,
                                   "mdm_loss_weight": "elbo", "mdm_t_sampling": "iid", "mdm_min_mask_rate": 1e-3,
                                   "ar_fraction": 0.5, "dual_val_loss": "ar", "block_size": 4}
AR_OPTIONS = ("input_mask_rate", "orderings")  # for ar trials only
MDM_OPTIONS = ("mdm_loss_weight", "mdm_t_sampling", "mdm_min_mask_rate")  # for mdm trials only
DUAL_OPTIONS, BD3LM_OPTIONS = ("ar_fraction", "dual_val_loss"), ("block_size",)  # dual only; bd3lm only
OPTION_FAMILY = {**dict.fromkeys(AR_OPTIONS, "ar"), **dict.fromkeys(MDM_OPTIONS, "mdm"),
                 **dict.fromkeys(DUAL_OPTIONS, "dual"), **dict.fromkeys(BD3LM_OPTIONS, "bd3lm")}


def changed_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of OPTION_DEFAULTS that `values` (train settings by name) set away from their
    defaults, in OPTION_DEFAULTS' order; an attention_dropout equal to `dropout` is the default."""
    out = {}
    for name, default in OPTION_DEFAULTS.items():
        value = values.get(name, default)
        if name == "attention_dropout" and value is not None and value == values.get("dropout"):
            continue
        if value != default:
            out[name] = value
    return out


OPTION_TAGS = {"attention_dropout": "adrop", "input_mask_rate": "imask", "orderings": "ord",
               "mdm_loss_weight": "", "mdm_t_sampling": "", "mdm_min_mask_rate": "pmin",
               "ar_fraction": "arf", "dual_val_loss": "val-", "block_size": "blk"}


def options_label(values: Mapping[str, Any]) -> str:
    """The changed options as a short name part, e.g. 'adrop0.5', 'ord4-stratified' ('' for none)."""
    return "-".join(f"{OPTION_TAGS[name]}{value:g}" if isinstance(value, (int, float)) else
                    f"{OPTION_TAGS[name]}{value}" for name, value in changed_options(values).items())


def options_text(values: Mapping[str, Any]) -> str:
    """The changed options as 'orderings=4,input_mask_rate=0.1' ('' for none): `sweeper results`'
    `options` column, which the report's ablations read (sweeper.fit.ablations.parse_options)."""
    return ",".join(f"{name}={value:g}" if isinstance(value, (int, float)) else f"{name}={value}"
                    for name, value in changed_options(values).items())


def option_family_problem(family: str, values: Mapping[str, Any]) -> str | None:
    """Why these train settings cannot train `family` (an option of one family, OPTION_FAMILY, set
    away from its default for a trial of another), or None."""
    for name in changed_options(values):
        owner = OPTION_FAMILY.get(name)
        if owner is not None and owner != family:
            return (f"{name} applies to {owner} trials only, not to {family} ones ({name}: {values[name]}); "
                    f"set it in a grid block of family {owner} or an override with when: {{family: {owner}}}")
    return None


def loss_is_likelihood_bound(family: str, mdm_loss_weight: str) -> bool:
    """Whether a trial's training loss is a likelihood or bounds one (nats/token): ar's cross-entropy
    is a chain-rule likelihood in any token order (with input masks or dropout, that of the model so
    corrupted), mdm's 1/p-weighted loss is the ELBO (PAPER.md; the clamp p >= m moves it by O(m));
    mdm's unweighted loss is neither; dual's mixes two bounds, bd3lm's sums its blocks' ELBOs (BD3-LM,
    arXiv 2503.09573, Sec. 3). Validation reports a bound for every trial (sweeper.trainer.evaluation)."""
    return family != "mdm" or mdm_loss_weight == "elbo"


def processed_per_token(family: str) -> int:
    """Tokens processed per trained token: 2 for bd3lm (x_t ⊕ x_0, BD3-LM arXiv 2503.09573 Sec. 3), else 1."""
    return 2 if family == "bd3lm" else 1


def padded_vocab_size(vocab_size: int) -> int:
    """Embedding rows: the tokenizer's tokens, the mask id, then padding to a multiple of 128."""
    return math.ceil((vocab_size + 1) / EMBEDDING_ROW_MULTIPLE) * EMBEDDING_ROW_MULTIPLE


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialConfig:
    """Everything one trial's trainer needs, made by the planner.

    *What* is trained (in the trial id; equal in a checkpoint and the run resuming it): identity and bookkeeping,
    the model, optimisation, evaluation, and `precision`. *How* it runs (HOW_KEYS): the checkpoint and log
    cadences, `compile`, and the settings known only where it runs, which the planner fills from the profile and
    whoever runs it may change with `dataclasses.replace`: `device` (`sweeper train --device`, a Ray Train
    worker's own GPU), `peak_flops`, `micro_batch` (the profile's sizing) and `parallelism` (from the device and
    the number of devices)."""

    # identity and bookkeeping (planned; the trainer only reports them)
    trial_id: str
    family: Family
    num_params: int  # PAPER.md bookkeeping N, used for flops = 6 * N * tokens
    unique_tokens: int  # U: the pool the trial reads holds this many tokens
    epochs: float
    tokens: int  # planned D = U * epochs
    seed: int  # weights, sample order, mdm masks and dropout all follow from it

    # model
    vocab_size: int  # the tokenizer's own size; the mdm mask id is vocab_size
    d_model: int
    h_f: int  # SwiGLU hidden width
    heads: int
    head_dim: int
    layers: int
    dropout: float
    init_std: float
    seq_len: int

    # optimisation
    lr_peak: float
    lr_min: float
    warmup_steps: int
    steps: int  # optimizer steps of the whole trial
    schedule: Schedule
    decay_steps: int = 0  # wsd: optimizer steps of the final decay (planned from decay_fraction); else 0
    decay_shape: DecayShape = "1-sqrt"  # wsd: linear, cosine or 1-sqrt from lr_peak to lr_min
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    grad_clip: float | None
    batch_sequences: int  # global batch, all processes together
    micro_batch: int  # how: sequences per process per forward pass (the profile's sizing)

    # evaluation and checkpointing
    eval_steps: tuple[int, ...]  # optimizer steps after which to evaluate: 0 first, `steps` last
    mdm_eval_samples: int  # Monte-Carlo draws of t per validation sequence (stratified)
    checkpoint_every_steps: int  # how
    log_every_steps: int = 10  # how: train metrics between evaluations; each log is one host sync
    checkpoint_every_s: float = 0.0  # how: also checkpoint at the first log point this long after the last (0: off)

    # what, although it sounds like how: see HOW_KEYS
    precision: Precision

    # how (none of these change what is trained, only where and how fast)
    compile: bool
    device: str  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    peak_flops: float | None  # per device, for mfu; None: no mfu metric
    parallelism: Parallelism = "ddp"  # with several processes: replicate (ddp) or shard (fsdp)

    # options (OPTION_DEFAULTS), defaulting to what trials trained before they existed: old checkpoints load
    attention_dropout: float | None = None  # on attention probabilities; None: `dropout`
    input_mask_rate: float = 0.0  # ar: each input token replaced by the mask id with this probability
    orderings: int = 1  # ar: fixed token orderings, the first the identity (sweeper.trainer.orderings)
    mdm_loss_weight: LossWeight = "elbo"  # elbo: CE / p; unweighted: CE
    mdm_t_sampling: TimeSampling = "iid"  # t per training sequence: i.i.d., or one per stratum of the batch
    mdm_min_mask_rate: float = 1e-3  # training p = (1 - m)·t + m; validation keeps the paper's 1e-3
    ar_fraction: float = 0.5  # dual: probability that a training sequence is trained as ar, else as mdm
    dual_val_loss: DualValLoss = "ar"  # dual: which of val/loss_ar and val/loss_mdm is val/loss
    block_size: int = 4  # bd3lm: tokens per block; divides seq_len (1: ar's chain rule; seq_len: mdm)

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError(f"invalid TrialConfig {self.trial_id!r}: " + "; ".join(problems))

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def attention_dropout_rate(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def padded_vocab_size(self) -> int:
        return padded_vocab_size(self.vocab_size)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_sequences * self.seq_len

    @property
    def tokens_trained(self) -> int:
        """steps · tokens_per_step: what the trial trains, at least the planned `tokens` (D), since
        steps = ceil(D / tokens_per_step); e.g. U = 25M at one epoch, 524,288 tokens a step: 48 steps,
        25.17M tokens (+0.7%)."""
        return self.steps * self.tokens_per_step

    @property
    def epochs_trained(self) -> float:
        return self.tokens_trained / self.unique_tokens

    @property
    def decay_start(self) -> int:
        """wsd: optimizer steps before the decay, steps - decay_steps (planned: max(1, round(decay_fraction
        · steps)), halves to even); steps warmup_steps..decay_start - 1 run at lr_peak, so wsd trials alike
        but for `steps` train the same first min(decay_start) steps. cosine, linear: warmup_steps; constant: steps."""
        return {"wsd": self.steps - self.decay_steps, "constant": self.steps}.get(self.schedule, self.warmup_steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, for storage (a checkpoint's config.json); in memory it travels as is."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        return cls(**{**values, "betas": tuple(values["betas"]), "eval_steps": tuple(values["eval_steps"])})


def _problems(c: TrialConfig) -> list[str]:
    # A message is formatted only for a check that fails: the planner builds one config per trial.
    out: list[str] = []
    for name, kind in (("family", Family), ("schedule", Schedule), ("decay_shape", DecayShape),
                       ("mdm_loss_weight", LossWeight), ("mdm_t_sampling", TimeSampling),
                       ("precision", Precision), ("parallelism", Parallelism)):
        if getattr(c, name) not in get_args(kind):
            out.append(f"{name} must be one of {', '.join(get_args(kind))}, got {getattr(c, name)!r}")
    for name in ("num_params", "unique_tokens", "tokens", "vocab_size", "d_model", "h_f", "heads",
                 "head_dim", "layers", "seq_len", "steps", "batch_sequences", "micro_batch",
                 "mdm_eval_samples", "checkpoint_every_steps", "log_every_steps"):
        value = getattr(c, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            out.append(f"{name} must be a positive integer, got {value!r}")
    if not c.epochs > 0:
        out.append(f"epochs must be positive, got {c.epochs!r}")
    if not 0.0 <= c.dropout < 1.0:
        out.append(f"dropout must be in [0, 1), got {c.dropout!r}")
    if not (c.attention_dropout is None or 0.0 <= c.attention_dropout < 1.0):
        out.append(f"attention_dropout must be in [0, 1), or None for dropout, got {c.attention_dropout!r}")
    if not 0.0 <= c.input_mask_rate < 1.0:
        out.append(f"input_mask_rate must be in [0, 1), got {c.input_mask_rate!r}")
    if not (isinstance(c.orderings, int) and 1 <= c.orderings <= MAX_ORDERINGS):
        out.append(f"orderings must be an integer in [1, {MAX_ORDERINGS}], got {c.orderings!r}")
    if not 0.0 < c.mdm_min_mask_rate < 1.0:
        out.append(f"mdm_min_mask_rate must be in (0, 1), got {c.mdm_min_mask_rate!r}")
    if not (0.0 <= c.ar_fraction <= 1.0 and c.dual_val_loss in ("ar", "mdm")):
        out.append(f"need ar_fraction in [0, 1] and dual_val_loss 'ar' or 'mdm', got {c.ar_fraction!r}, "
                   f"{c.dual_val_loss!r}")
    if not (isinstance(c.block_size, int) and c.block_size > 0):
        out.append(f"block_size must be a positive integer, got {c.block_size!r}")
    elif c.family == "bd3lm" and c.seq_len % c.block_size:
        out.append(f"block_size {c.block_size} does not divide seq_len {c.seq_len}: pick a divisor")
    if c.family in FAMILIES:
        values = {name: getattr(c, name) for name in (*OPTION_DEFAULTS, "dropout")}
        problem = option_family_problem(c.family, values)
        if problem:
            out.append(problem)
    if not c.init_std > 0:
        out.append(f"init_std must be positive (the paper uses 0.02), got {c.init_std!r}")
    if c.head_dim % 2 != 0:
        out.append(f"head_dim must be even for rotary embeddings, got {c.head_dim!r}")
    if not (0 <= c.lr_min <= c.lr_peak and c.lr_peak > 0):
        out.append(f"need 0 <= lr_min <= lr_peak, got lr_min={c.lr_min!r} lr_peak={c.lr_peak!r}")
    if not (isinstance(c.warmup_steps, int) and 0 <= c.warmup_steps <= c.steps):
        out.append(f"warmup_steps must be an integer in [0, steps={c.steps}], got {c.warmup_steps!r}")
    elif not (c.decay_steps in range(1, c.steps - c.warmup_steps + 1) if c.schedule == "wsd" else c.decay_steps == 0):
        out.append(f"decay_steps must be in [1, steps - warmup_steps] with wsd, else 0, got {c.decay_steps!r}")
    if not (len(c.betas) == 2 and all(0.0 <= b < 1.0 for b in c.betas)):
        out.append(f"betas must be two numbers in [0, 1), got {c.betas!r}")
    if not c.eps > 0:
        out.append(f"eps must be positive, got {c.eps!r}")
    if not c.weight_decay >= 0:
        out.append(f"weight_decay must be >= 0, got {c.weight_decay!r}")
    if not (c.grad_clip is None or c.grad_clip > 0):
        out.append(f"grad_clip must be positive, or None to turn clipping off, got {c.grad_clip!r}")
    if isinstance(c.batch_sequences, int) and isinstance(c.micro_batch, int) and c.micro_batch > 0 \
            and c.batch_sequences % c.micro_batch != 0:
        out.append(f"batch_sequences={c.batch_sequences} is not a multiple of micro_batch="
                   f"{c.micro_batch}: pick a micro_batch that divides it")
    steps = list(c.eval_steps)
    if not (len(steps) >= 2 and steps[0] == 0 and steps[-1] == c.steps):
        out.append(f"eval_steps must start with 0 (the untrained model) and end with steps={c.steps}, "
                   f"got {tuple(steps)[:3]}...{tuple(steps)[-2:]}")
    if not (all(isinstance(s, int) for s in steps) and steps == sorted(set(steps))):
        out.append("eval_steps must be strictly increasing integers")
    if not (c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda")):
        out.append(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {c.device!r}")
    if not (c.peak_flops is None or c.peak_flops > 0):
        out.append(f"peak_flops must be positive, or None to leave mfu out, got {c.peak_flops!r}")
    return out


# FLOP accounting: the paper's C = 6·N·D bookkeeping and the PaLM MFU formula.

def training_flops(num_params: int, tokens: int) -> float:
    """C = 6·N·D (PAPER.md): N is the planned bookkeeping count, D the tokens seen."""
    return 6.0 * num_params * tokens


def processed_flops(num_params: int, tokens: int, family: str) -> float:
    """6·N·D times the tokens the family processes per trained token: the compute it really spends
    (bd3lm: 2·6·N·D), against the paper's C = 6·N·D, one pass per trained token for every family."""
    return training_flops(num_params, tokens) * processed_per_token(family)


def tokens_for_flops(flops: float, num_params: int) -> float:
    """D = C / (6·N), the same bookkeeping solved for the tokens (iso-FLOP budgets)."""
    return flops / (6 * num_params)


def palm_flops_per_token(num_params_actual: int, layers: int, heads: int, head_dim: int, seq_len: int) -> float:
    """Model FLOPs per trained token, PaLM (Chowdhery et al. 2022) appendix B: 6N + 12·L·H·Q·T.

    N is every parameter of the built model with the tied embedding counted once: the lookup costs no matmul
    but the tied output head is a vocab × d_model matmul, so counting it once is exact. The attention term
    counts the full T×T score matrix for every family (the formula gives causal attention no discount), so ar
    and mdm MFU compare directly. bd3lm's passes read x_t ⊕ x_0: its trainer counts processed_per_token(family)
    times this at seq_len 2L per trained token, what it really computes (its `flops` metric stays the paper's
    6ND)."""
    return 6.0 * num_params_actual + 12.0 * layers * heads * head_dim * seq_len


def model_flops_utilisation(flops_per_token: float, tokens_per_s: float,
                            peak_flops_per_device: float, devices: int) -> float:
    return flops_per_token * tokens_per_s / (peak_flops_per_device * devices)


# The metric names every trial reports: one table for the JSON lines, Ray Tune and MLflow.
#
# `tokens` is the step axis of every curve. A report carries whichever metrics exist at that point:
# the first (tokens = 0) holds the untrained model's evaluation; log points add the train metrics;
# evaluation points add `val/*`; the last report adds the `final/*` metrics and `num_params_actual`.
#
# | name | meaning |
# |---|---|
# | `tokens` | training tokens seen so far, all processes together (the step axis) |
# | `train/loss` | mean training loss over the optimizer steps since the previous log (nats/token) |
# | `val/loss` | validation loss (ar: mean CE; mdm, bd3lm: the ELBO over mdm_eval_samples stratified draws of t; dual: see below) |
# | `val/loss_ar`, `val/loss_mdm` | dual: both validation losses (`val/loss` is the one `dual_val_loss` names) |
# | `val/loss_best` | lowest `val/loss` so far |
# | `lr` | learning rate of the last optimizer step |
# | `grad_norm` | global gradient L2 norm of the last optimizer step, before clipping |
# | `epoch` | samples consumed / samples per epoch (fractional) |
# | `flops` | 6 · num_params · tokens, with num_params the planned bookkeeping N of PAPER.md |
# | `flops_processed` | bd3lm only: 6 · num_params · 2 · tokens, what its x_t ⊕ x_0 passes cost |
# | `tokens_per_s` | training throughput since the previous log, all processes, evaluation time excluded |
# | `mfu` | model FLOPs utilisation (PaLM appendix B): tokens_per_s · (6·num_params_actual + 12·layers·heads·head_dim·seq_len) / (peak_flops · processes), bd3lm twice that at 2·seq_len (x_t ⊕ x_0); absent when peak_flops is None |
# | `final/val_loss` | validation loss at the last step |
# | `final/val_loss_best` | lowest validation loss of the run |
# | `final/wall_s` | wall-clock seconds of this call of train(), evaluation and checkpoints included |
# | `final/tokens_per_s` | tokens trained in this call / seconds spent in training steps (compilation included) |
# | `final/tokens_trained` | tokens the trial has trained, all processes and earlier calls together (steps done · tokens per step) |
# | `final/epochs_trained` | final/tokens_trained / unique_tokens |
# | `num_params_actual` | parameters of the built model, the tied embedding counted once |
METRICS: dict[str, str] = {
    "tokens": "training tokens seen so far, all processes together (the step axis)",
    "train/loss": "mean training loss over the optimizer steps since the previous log (nats/token)",
    "val/loss": "validation loss: ar mean CE; mdm, bd3lm ELBO over mdm_eval_samples stratified t"
                " draws; dual the one dual_val_loss names",
    "val/loss_ar": "dual: validation cross-entropy of the model read causally (as ar)",
    "val/loss_mdm": "dual: validation ELBO of the model read bidirectionally (as mdm)",
    "val/loss_best": "lowest val/loss so far",
    "lr": "learning rate of the last optimizer step",
    "grad_norm": "global gradient L2 norm of the last optimizer step, before clipping",
    "epoch": "samples consumed / samples per epoch (fractional)",
    "flops": "6 * num_params * tokens (PAPER.md bookkeeping N)",
    "flops_processed": "bd3lm: 6 * num_params * 2 * tokens, the x_t ⊕ x_0 passes it really computes",
    "tokens_per_s": "training throughput since the previous log, evaluation excluded",
    "mfu": "PaLM App. B: tokens_per_s * (6*num_params_actual + 12*layers*heads*head_dim*seq_len)"
           " / (peak_flops * processes), bd3lm 2x that at 2*seq_len; absent without peak_flops",
    "final/val_loss": "validation loss at the last step",
    "final/val_loss_best": "lowest validation loss of the run",
    "final/wall_s": "wall-clock seconds of this train() call, evaluation and checkpoints included",
    "final/tokens_per_s": "tokens trained in this call / seconds in training steps",
    "final/tokens_trained": "tokens the trial has trained: steps done * tokens per step",
    "final/epochs_trained": "final/tokens_trained / unique_tokens",
    "num_params_actual": "parameters of the built model, tied embedding counted once",
}
