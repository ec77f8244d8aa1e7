"""The one plain config a trial trains from.

The planner fills every count (steps, warmup, eval points, checkpoint cadence, micro-batch); the
trainer reads them and never recomputes them. Validation here rejects values the trainer cannot
run, with messages that name the fix. `TrialConfig.to_dict` / `from_dict` round-trip it through
JSON, which is how checkpoints carry the config that built their model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Family = Literal["ar", "mdm"]
Schedule = Literal["cosine", "linear", "constant"]
Precision = Literal["bf16", "fp32"]
Parallelism = Literal["ddp", "fsdp"]

EMBEDDING_ROW_MULTIPLE = 128  # embedding rows are padded to a multiple of this (DESIGN.md)


def padded_vocab_size(vocab_size: int) -> int:
    """Embedding rows: the tokenizer's tokens, the mask id, then padding to a multiple of 128."""
    return math.ceil((vocab_size + 1) / EMBEDDING_ROW_MULTIPLE) * EMBEDDING_ROW_MULTIPLE


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialConfig:
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
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    grad_clip: float | None
    batch_sequences: int  # global batch, all processes together
    micro_batch: int  # sequences per process per forward pass

    # evaluation and checkpointing
    eval_steps: tuple[int, ...]  # optimizer steps after which to evaluate: 0 first, `steps` last
    mdm_eval_samples: int  # Monte-Carlo draws of t per validation sequence (stratified)
    checkpoint_every_steps: int
    log_every_steps: int = 10  # train metrics between evaluations; each log is one host sync

    # how (none of these change what is trained, only where and how fast)
    precision: Precision
    compile: bool
    device: str  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    peak_flops: float | None  # per device, for mfu; None: no mfu metric
    parallelism: Parallelism = "ddp"  # with several processes: replicate (ddp) or shard (fsdp)

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ValueError(f"invalid TrialConfig {self.trial_id!r}: " + "; ".join(problems))

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def padded_vocab_size(self) -> int:
        return padded_vocab_size(self.vocab_size)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_sequences * self.seq_len

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        values = dict(values)
        values["betas"] = tuple(values["betas"])
        values["eval_steps"] = tuple(values["eval_steps"])
        return cls(**values)


def _problems(c: TrialConfig) -> list[str]:
    out: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            out.append(message)

    need(c.family in ("ar", "mdm"), f"family must be 'ar' or 'mdm', got {c.family!r}")
    for name in ("num_params", "unique_tokens", "tokens", "vocab_size", "d_model", "h_f", "heads",
                 "head_dim", "layers", "seq_len", "steps", "batch_sequences", "micro_batch",
                 "mdm_eval_samples", "checkpoint_every_steps", "log_every_steps"):
        value = getattr(c, name)
        need(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             f"{name} must be a positive integer, got {value!r}")
    need(c.epochs > 0, f"epochs must be positive, got {c.epochs!r}")
    need(0.0 <= c.dropout < 1.0, f"dropout must be in [0, 1), got {c.dropout!r}")
    need(c.init_std > 0, f"init_std must be positive (the paper uses 0.02), got {c.init_std!r}")
    need(c.head_dim % 2 == 0, f"head_dim must be even for rotary embeddings, got {c.head_dim!r}")
    need(0 <= c.lr_min <= c.lr_peak and c.lr_peak > 0,
         f"need 0 <= lr_min <= lr_peak, got lr_min={c.lr_min!r} lr_peak={c.lr_peak!r}")
    need(c.schedule in ("cosine", "linear", "constant"),
         f"schedule must be cosine, linear or constant, got {c.schedule!r}")
    need(isinstance(c.warmup_steps, int) and 0 <= c.warmup_steps <= c.steps,
         f"warmup_steps must be an integer in [0, steps={c.steps}], got {c.warmup_steps!r}")
    need(len(c.betas) == 2 and all(0.0 <= b < 1.0 for b in c.betas),
         f"betas must be two numbers in [0, 1), got {c.betas!r}")
    need(c.eps > 0, f"eps must be positive, got {c.eps!r}")
    need(c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay!r}")
    need(c.grad_clip is None or c.grad_clip > 0,
         f"grad_clip must be positive, or None to turn clipping off, got {c.grad_clip!r}")
    if isinstance(c.batch_sequences, int) and isinstance(c.micro_batch, int) and c.micro_batch > 0:
        need(c.batch_sequences % c.micro_batch == 0,
             f"batch_sequences={c.batch_sequences} is not a multiple of micro_batch="
             f"{c.micro_batch}: pick a micro_batch that divides it")
    steps = list(c.eval_steps)
    need(len(steps) >= 2 and steps[0] == 0 and steps[-1] == c.steps,
         f"eval_steps must start with 0 (the untrained model) and end with steps={c.steps}, "
         f"got {tuple(steps)[:3]}...{tuple(steps)[-2:]}")
    need(all(isinstance(s, int) for s in steps) and steps == sorted(set(steps)),
         "eval_steps must be strictly increasing integers")
    need(c.precision in ("bf16", "fp32"), f"precision must be 'bf16' or 'fp32', got {c.precision!r}")
    need(c.parallelism in ("ddp", "fsdp"),
         f"parallelism must be 'ddp' or 'fsdp', got {c.parallelism!r}")
    need(c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda"),
         f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {c.device!r}")
    need(c.peak_flops is None or c.peak_flops > 0,
         f"peak_flops must be positive, or None to leave mfu out, got {c.peak_flops!r}")
    return out
