"""How big a trial is on given hardware: memory, micro-batch, devices, resources, time. Pure.

Estimates, stated with their sources, so that `sweeper plan` can say before anything runs
whether a trial fits and roughly how long it takes:
- FLOPs per token for time: 6·P + 12·l·a·T (PaLM, Chowdhery et al. 2022, App. B), with P the
  parameters actually multiplied (lm head included) and a = heads·head_dim; C = 6ND stays the
  paper's bookkeeping for laws.
- Training memory per device: fp32 weights, grads and two AdamW moments (16 bytes/param, sharded
  over GPUs when a trial needs several, whole in each of a CPU trial's processes), plus
  activations per sequence at the micro-batch (the saved tensors of RMSNorm, q/k/v, SDPA output,
  SwiGLU and dropout masks per layer, no attention matrix since SDPA recomputes it; logits in
  compute dtype plus an fp32 softmax and gradient; after Korthikanti et al. 2022, "Reducing
  Activation Recomputation").
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from sweeper.spec import DataSpec
from sweeper.spec.presets import ModelSpec, num_params_actual
from sweeper.trial import padded_vocab_size, palm_flops_per_token, processed_per_token
from sweeper.profile import Hardware

USABLE_MEMORY = 0.9  # leave room for the allocator's fragmentation
RUNTIME_OVERHEAD = {"cuda": 1_500_000_000, "cpu": 500_000_000}  # CUDA context / interpreter and torch
RAY_RESOURCE_UNITS = 10_000  # Ray counts a resource in fixed-point units of 1e-4


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """Bytes on one device at the planned micro-batch."""

    weights: int
    grads: int
    optimizer: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.overhead


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizing:
    micro_batch: int  # sequences per device per forward pass
    grad_accum: int  # micro-batches per optimizer step on each device
    devices: int  # devices one trial spans (data-parallel, sharded when static state needs it)
    device_share: float  # fraction of one device a small trial takes when trials share
    memory: Memory
    fits: bool
    resources: Mapping[str, float]  # Ray resources of the trial, all its processes together


def flops_per_token(model: ModelSpec, vocab_size: int, seq_len: int) -> float:
    """Training FLOPs per token, forward and backward (PaLM App. B): 6·P + 12·l·a·T, of a planned model."""
    return palm_flops_per_token(num_params_actual(model, vocab_size), model.layers, model.heads,
                                model.head_dim, seq_len)  # type: ignore[arg-type]


def activation_bytes(model: ModelSpec, vocab_size: int, seq_len: int, precision: str) -> int:
    """Saved activations of one sequence for the backward pass."""
    elem = 2 if precision == "bf16" else 4
    d, a, h_f = model.d_model, model.attention_width, model.h_f
    per_layer_token = elem * (2 * d + 4 * a + 4 * h_f) + 8 * d + 2 * d  # + fp32 residual, dropout masks
    logits_token = padded_vocab_size(vocab_size) * (elem + 4 + 4)
    return seq_len * (model.layers * per_layer_token + logits_token + 4 * d)


@functools.lru_cache(maxsize=4096)
def size_trial(model: ModelSpec, *, vocab_size: int, seq_len: int, batch_sequences: int, precision: str,
               hardware: Hardware) -> Sizing:
    params = num_params_actual(model, vocab_size)
    static = 16 * params
    per_sequence = activation_bytes(model, vocab_size, seq_len, precision)
    overhead = RUNTIME_OVERHEAD[hardware.accelerator]
    usable = int(USABLE_MEMORY * hardware.memory_per_device)
    cuda = hardware.accelerator == "cuda"

    shares = 1
    if cuda and params < hardware.share_below_params:
        for k in range(hardware.max_trials_per_device, 1, -1):
            if _micro_batch(usable // k - overhead, static, per_sequence, batch_sequences, hardware):
                shares = k
                break
    devices, fits = (1 if cuda else _cpu_processes(batch_sequences, hardware)), True
    while True:
        per_device_batch = batch_sequences // devices
        budget = usable // shares - overhead
        micro = _micro_batch(budget, static // _shards(devices, cuda), per_sequence, per_device_batch, hardware)
        if micro and batch_sequences % devices == 0:
            break
        if not cuda or devices * 2 > hardware.total_devices or batch_sequences % (devices * 2):
            fits, micro = False, 1
            break
        devices *= 2

    per_device_batch = batch_sequences // devices
    shards = _shards(devices, cuda)
    memory = Memory(weights=4 * params // shards, grads=4 * params // shards, optimizer=8 * params // shards,
                    activations=micro * per_sequence, overhead=overhead)
    if cuda:
        resources = {"CPU": hardware.cpus_per_trial, "GPU": devices if shares == 1 else gpu_share(shares)}
    else:
        resources = {"CPU": hardware.cpus_per_trial * devices}
    return Sizing(micro_batch=micro, grad_accum=max(1, per_device_batch // micro), devices=devices,
                  device_share=1.0 / shares, memory=memory, fits=fits, resources=MappingProxyType(resources))


def gpu_share(shares: int) -> float:
    """One of `shares` trials' fraction of a GPU, rounded *down* to Ray's resolution (1e-4), so that
    `shares` of them always fit on one device: rounding 1/7 to 0.1429 would let Ray place only 6."""
    return math.floor(RAY_RESOURCE_UNITS / shares) / RAY_RESOURCE_UNITS


def _shards(devices: int, cuda: bool) -> int:
    """GPUs span devices to shard the state (FSDP); CPU processes each hold all of it (DDP)."""
    return devices if cuda else 1


def _cpu_processes(batch_sequences: int, hardware: Hardware) -> int:
    """processes_per_trial, or fewer where the global batch does not split evenly over that many."""
    return max(p for p in range(1, hardware.processes_per_trial + 1) if batch_sequences % p == 0)


def _micro_batch(budget: int, static: int, per_sequence: int, per_device_batch: int, hardware: Hardware) -> int:
    """The largest divisor of the per-device batch that fits `budget`, at most max_micro_batch; 0 if none."""
    for micro in range(min(per_device_batch, hardware.max_micro_batch), 0, -1):
        if per_device_batch % micro == 0 and static + micro * per_sequence <= budget:
            return micro
    return 0


def estimate_device_seconds(*, train_tokens: int, eval_tokens: int, model: ModelSpec, vocab_size: int,
                            seq_len: int, hardware: Hardware, steps: int = 0, eval_batches: int = 0) -> float:
    """Device-seconds: training (forward+backward) plus evaluation (forward only, a third as much), at the
    profile's FLOP/s; then the framework's own work, which FLOPs do not count: hardware.step_seconds
    for each of `steps` optimizer steps and a third of it for each of `eval_batches` forward-only
    batches. Without it (0 by default) a model of ~100k parameters on a CPU core is estimated
    several times too fast (benchmarks/plan_estimate.py). A trial's hardware.trial_seconds is
    the planner's to add, once (sweeper.plan.plan_trial)."""
    per_token = flops_per_token(model, vocab_size, seq_len)
    flop_seconds = (train_tokens * per_token + eval_tokens * per_token / 3) / hardware.effective_flops
    return flop_seconds + (steps + eval_batches / 3) * hardware.step_seconds


def trial_device_seconds(*, family: str, model: ModelSpec, data: DataSpec, vocab_size: int, batch_sequences: int,
                         micro_batch: int, mdm_eval_samples: int, hardware: Hardware, steps: int,
                         evaluations: int) -> float:
    """Estimated device-seconds of a trial's `steps` optimizer steps and `evaluations` validation passes
    of `data`, each pass read in batches of `micro_batch` sequences."""
    processed = processed_per_token(family)  # bd3lm reads x_t ⊕ x_0: twice the tokens, sequences 2L long
    val_samples = {"ar": 1, "dual": 1 + mdm_eval_samples}.get(family, mdm_eval_samples)
    val_sequences = -(-data.validation_tokens // data.seq_len)
    return estimate_device_seconds(train_tokens=processed * steps * batch_sequences * data.seq_len,
                                   eval_tokens=processed * evaluations * data.validation_tokens * val_samples,
                                   model=model, vocab_size=vocab_size, seq_len=processed * data.seq_len,
                                   hardware=hardware, steps=steps,
                                   eval_batches=evaluations * val_samples * -(-val_sequences // micro_batch))


def wall_seconds(device_seconds: float, sizing: Sizing, hardware: Hardware) -> float:
    """A trial spanning `devices` runs that much faster; one sharing a device runs that much slower.
    On CPUs a trial's span is its cores: cpus_per_trial for each of its processes."""
    span = sizing.devices * sizing.device_share
    if hardware.accelerator == "cpu":
        span = hardware.cpus_per_trial * sizing.devices
    return device_seconds / span


# The eval stage (the spec's `evals`: lm-eval tasks scored after training, sweeper.driver.evals).
EVAL_TASK_OVERHEAD_S = 0.5  # lm-eval's own setup per task and trial (benchmarks/README.md, eval_speed.py)
EVAL_ASSUMED_DOCUMENTS = 1000  # documents of a task without `limit`: the planner reads no task files
EVAL_CHOICES = 4  # answers scored per document (multiple choice; a generation task is one)


def downstream_seconds(*, family: str, model: ModelSpec, vocab_size: int, seq_len: int, hardware: Hardware,
                       tasks: int, limit: int | None, mc_samples: int) -> float:
    """Device-seconds of one trial's eval stage: per task, lm-eval's setup (EVAL_TASK_OVERHEAD_S) and
    `limit` documents (EVAL_ASSUMED_DOCUMENTS without one) of EVAL_CHOICES answers, each read in one
    window of seq_len tokens, forward only: ar one pass an answer, the diffusion families
    `mc_samples` passes for the ELBO and about 4 for the greedy check (sweeper.evals.harness).
    bd3lm's passes read twice the tokens. On the 2-core machine of benchmarks/eval_speed.py this
    comes within ~2x of the measured time per question (qs-m: ar 1.3 ms, mdm 52 ms at 32 draws)."""
    passes = 1 if family == "ar" else mc_samples + 4
    processed = 2 if family == "bd3lm" else 1
    documents = EVAL_ASSUMED_DOCUMENTS if limit is None else limit
    tokens = tasks * documents * EVAL_CHOICES * passes * processed * seq_len
    per_token = flops_per_token(model, vocab_size, processed * seq_len)
    return tasks * EVAL_TASK_OVERHEAD_S + tokens * per_token / 3 / hardware.effective_flops
