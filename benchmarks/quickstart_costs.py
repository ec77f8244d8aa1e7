"""What the quickstart's compute buys: the mdm head on masked positions only, evaluation against
training, and bf16 against fp32 on the CPU at hand.

Prints JSON, one line per measurement and a summary. Every figure is a ratio of two measurements
taken in the same run, window by window, so both see the same load from other processes:

- `masked_head`: mdm training tokens/s with the output head and cross-entropy computed only at
  the masked positions (the trainer today) against the previous code, pinned below, which scored
  every position and multiplied the unmasked ones by zero. Windows of the two alternate inside one
  training run (the same model, data and noise), switched in the reporter.
- `evaluation`: seconds of one validation pass (mdm: `mdm_eval_samples` draws of t per sequence)
  in training-token equivalents, i.e. how many tokens the trial could have trained instead.
- `precision`: bf16 autocast against fp32, alternate windows of two runs of the same trial.
- `compile`: torch.compile against eager, both fp32: the steady rate of each (runs alternating)
  and what compiling costs once per process, in seconds and in training-token equivalents.

    .venv/bin/python benchmarks/quickstart_costs.py                 # the shapes below, 1 thread
    .venv/bin/python benchmarks/quickstart_costs.py --shapes quickstart --windows 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

import sweeper.trainer.loop as loop_module
from sweeper.trainer import TrialConfig, train
from sweeper.trainer.objectives import family_loss_sums, sequence_loss_sums


@dataclass(frozen=True)
class Shape:
    name: str
    vocab_size: int
    d_model: int
    h_f: int
    heads: int
    layers: int
    seq_len: int
    batch: int
    val_tokens: int
    eval_samples: int


SHAPES = {
    # sweeps/hmm-cpu.yaml's middle model (the quickstart's until it moved to text, whose qs-m has V = 260)
    "quickstart": Shape("quickstart", 129, 64, 192, 4, 2, 32, 8, 4096, 4),
    # the quickstart before it: a 2,048-token BPE, qs-1M, 128-token samples
    "bpe-2k": Shape("bpe-2k", 2048, 128, 320, 4, 4, 128, 16, 16384, 4),
    # trainer_throughput.py's cpu-d256: an 8k vocabulary, where the head is a large share
    "cpu-d256": Shape("cpu-d256", 8192, 256, 640, 4, 6, 256, 16, 16384, 4),
}


def full_head_loss_sums(model: Callable[..., torch.Tensor], tokens: torch.Tensor,
                        masked: torch.Tensor | None, p: torch.Tensor | None,
                        mask_id: int) -> torch.Tensor:
    """The previous mdm loss, pinned: logits at every position, weights masked / p."""
    if masked is None or p is None:
        return sequence_loss_sums(model, tokens[:, :-1], tokens[:, 1:])
    x0 = tokens[:, :-1]
    logits = model(torch.where(masked, mask_id, x0))  # (B, L, V)
    B, L, V = logits.shape
    ce = F.cross_entropy(logits.reshape(B * L, V), x0.reshape(B * L), reduction="none")
    return (ce.view(B, L).float() * masked.float() / p[:, None]).sum(dim=1)


def config_for(s: Shape, family: str, steps: int, window: int, precision: str,
               eval_steps: tuple[int, ...] | None = None, compile: bool = False) -> TrialConfig:
    tokens = steps * s.batch * s.seq_len
    return TrialConfig(
        trial_id=f"bench-{s.name}-{family}", family=family, num_params=1, unique_tokens=tokens + 1,
        epochs=1.0, tokens=tokens, vocab_size=s.vocab_size, d_model=s.d_model, h_f=s.h_f,
        heads=s.heads, head_dim=s.d_model // s.heads, layers=s.layers, dropout=0.0, init_std=0.02,
        seq_len=s.seq_len, lr_peak=1e-3, lr_min=1e-4, warmup_steps=1, steps=steps,
        schedule="cosine", betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0,
        batch_sequences=s.batch, micro_batch=s.batch, eval_steps=eval_steps or (0, steps),
        mdm_eval_samples=s.eval_samples, checkpoint_every_steps=steps, log_every_steps=window,
        precision=precision, compile=compile, seed=0, device="cpu", peak_flops=None)


def data(s: Shape, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pool = rng.integers(0, s.vocab_size, tokens + s.seq_len + 1).astype(np.uint32)
    val = rng.integers(0, s.vocab_size, s.val_tokens + 1).astype(np.uint32)
    return pool, val


def masked_head(s: Shape, windows: int, window: int) -> dict[str, object]:
    """Alternate windows of the current and the pinned previous mdm loss in one run."""
    steps = (2 * windows + 1) * window
    config = config_for(s, "mdm", steps, window, "fp32")
    pool, val = data(s, config.tokens)
    rates: dict[str, list[float]] = {"masked": [], "full": []}
    variants = ["masked", "full"]
    active = {"i": 0}

    def report(metrics: dict[str, float], _: str | None) -> None:
        if "tokens_per_s" not in metrics:
            return
        if metrics["tokens"] > window * s.batch * s.seq_len:  # the first window warms up
            rates[variants[active["i"] % 2]].append(metrics["tokens_per_s"])
        active["i"] += 1
        loop_module.family_loss_sums = (family_loss_sums if active["i"] % 2 == 0
                                        else full_head_loss_sums)

    loop_module.family_loss_sums = family_loss_sums
    try:
        train(config, pool, val, report)
    finally:
        loop_module.family_loss_sums = family_loss_sums
    pairs = [a / b for a, b in zip(rates["masked"], rates["full"])]
    return {"measure": "masked_head", "shape": s.name,
            "masked_tokens_per_s": round(statistics.median(rates["masked"])),
            "full_tokens_per_s": round(statistics.median(rates["full"])),
            "speedup": round(statistics.median(pairs), 3),
            "speedup_range": [round(min(pairs), 3), round(max(pairs), 3)]}


def evaluation(s: Shape, family: str, window: int) -> dict[str, object]:
    """One validation pass against training, in training-token equivalents."""
    steps = 3 * window
    evals = (0, window, 2 * window, steps)
    with_evals = config_for(s, family, steps, window, "fp32", eval_steps=evals)
    pool, val = data(s, with_evals.tokens)
    train_rates: list[float] = []
    times: list[float] = []
    clock = {"t": time.perf_counter()}

    def report(metrics: dict[str, float], _: str | None) -> None:
        now = time.perf_counter()
        if "tokens_per_s" in metrics:
            train_rates.append(metrics["tokens_per_s"])
            # the window's training time is its tokens over its rate; the rest was validation
            window_train = window * s.batch * s.seq_len / metrics["tokens_per_s"]
            times.append(now - clock["t"] - window_train)
        clock["t"] = time.perf_counter()

    train(with_evals, pool, val, report)
    rate = statistics.median(train_rates[1:])
    seconds = statistics.median(times[1:])
    return {"measure": "evaluation", "shape": s.name, "family": family,
            "validation_tokens": s.val_tokens,
            "draws_of_t": s.eval_samples if family == "mdm" else 1,
            "seconds_per_evaluation": round(seconds, 3), "train_tokens_per_s": round(rate),
            "train_token_equivalents": round(seconds * rate)}


def precision(s: Shape, family: str, windows: int, window: int) -> dict[str, object]:
    """bf16 autocast against fp32: two runs, one window of each in turn."""
    steps = (windows + 1) * window
    rates: dict[str, list[float]] = {"bf16": [], "fp32": []}
    for _ in range(windows):
        for mode in ("fp32", "bf16"):
            config = replace(config_for(s, family, 2 * window, window, mode))
            pool, val = data(s, config.tokens)
            got: list[float] = []
            train(config, pool, val, lambda m, _: got.append(m["tokens_per_s"])
                  if "tokens_per_s" in m else None)
            rates[mode].append(got[-1])  # the second window: the first warms up
    del steps
    pairs = [a / b for a, b in zip(rates["bf16"], rates["fp32"])]
    return {"measure": "precision", "shape": s.name, "family": family,
            "fp32_tokens_per_s": round(statistics.median(rates["fp32"])),
            "bf16_tokens_per_s": round(statistics.median(rates["bf16"])),
            "bf16_over_fp32": round(statistics.median(pairs), 3),
            "range": [round(min(pairs), 3), round(max(pairs), 3)]}


def compiled(s: Shape, family: str, windows: int, window: int) -> dict[str, object]:
    """torch.compile against eager (fp32): steady windows of alternating runs, and the extra time
    of the first compiled run's first window, which is what compiling costs a process once per
    shape (later runs in the same process reuse the compiled graph; a new process reads
    inductor's disk cache, cheaper than a cold compile but not free)."""
    rates: dict[str, list[float]] = {"eager": [], "compile": []}
    first_window_s: list[float] = []
    steps = 4 * window
    for _ in range(windows):
        for mode in ("eager", "compile"):
            config = config_for(s, family, steps, window, "fp32", compile=mode == "compile")
            pool, val = data(s, config.tokens)
            got: list[float] = []
            train(config, pool, val, lambda m, _: got.append(m["tokens_per_s"])
                  if "tokens_per_s" in m else None)
            rates[mode].append(statistics.median(got[1:]))  # the first window compiles or warms
            if mode == "compile":
                first_window_s.append(window * s.batch * s.seq_len / got[0])
    pairs = [a / b for a, b in zip(rates["compile"], rates["eager"])]
    steady = statistics.median(rates["compile"])
    window_s = window * s.batch * s.seq_len / steady
    cost = first_window_s[0] - window_s
    return {"measure": "compile", "shape": s.name, "family": family,
            "eager_tokens_per_s": round(statistics.median(rates["eager"])),
            "compile_tokens_per_s": round(steady),
            "compile_over_eager": round(statistics.median(pairs), 3),
            "range": [round(min(pairs), 3), round(max(pairs), 3)],
            "compile_seconds": round(cost, 1),
            "compile_token_equivalents": round(cost * statistics.median(rates["eager"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="quickstart,bpe-2k,cpu-d256")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--window-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--measures", default="masked_head,evaluation,precision,compile",
                        help="which of the measurements to take (comma-separated)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.shapes.split(","):
        s = SHAPES[name]
        window = args.window_steps if s.name == "quickstart" else max(3, args.window_steps // 5)
        measures = {
            "masked_head": lambda: [masked_head(s, args.windows, window)],
            "evaluation": lambda: [evaluation(s, f, window) for f in ("ar", "mdm")],
            "precision": lambda: [precision(s, f, args.windows, window) for f in ("ar", "mdm")],
            "compile": lambda: [compiled(s, f, args.windows, window * 10) for f in ("ar", "mdm")],
        }
        for row in (r for m in args.measures.split(",") for r in measures[m]()):
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = {"cpu": _cpu_name(), "threads": args.threads, "torch": torch.__version__,
               "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    print(json.dumps({"machine": machine, "results": rows}, indent=1))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
