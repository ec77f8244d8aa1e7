"""Training throughput of the embedded trainer against a pinned plain-PyTorch reference.

Prints JSON: tokens/s (and MFU where --peak-flops is given) per family, preset, device, precision
and compile mode, measured through `sweeper.trainer.train` itself (loader, masking, accumulation,
clipping, schedule, all included), and in the same run the reference: the same model shape in a
plain eager fp32 loop (SDPA, AdamW with defaults, the same threads and batch), written once and
not tuned. Each measurement is `--windows` windows of `--window-steps` optimizer steps after one
warmup window (compilation, allocator warmup), and every trainer window is followed at once by a
reference window; medians are printed, and `vs_reference` is the median of the paired ratios.

    .venv/bin/python benchmarks/trainer_throughput.py                 # the CPU table of the README
    .venv/bin/python benchmarks/trainer_throughput.py --device cuda --peak-flops 989e12
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sweeper.trainer import TrialConfig, train
from sweeper.trial import model_flops_utilisation, palm_flops_per_token


@dataclass(frozen=True)
class Shape:
    name: str
    d_model: int
    h_f: int
    heads: int
    head_dim: int
    layers: int
    vocab_size: int
    seq_len: int
    batch: int


# the probe model of the trainer issue: 6 layers, d 256, vocab 8k, seq 256, batch 16 (~7M params)
SHAPES = {"cpu-d256": Shape("cpu-d256", 256, 640, 4, 64, 6, 8192, 256, 16),
          "tiny-d64": Shape("tiny-d64", 64, 128, 4, 16, 2, 512, 64, 8)}


# ---- the pinned reference: plain eager PyTorch, written once, not tuned -----------------------
class RefBlock(nn.Module):
    def __init__(self, s: Shape, causal: bool) -> None:
        super().__init__()
        w = s.heads * s.head_dim
        self.s, self.causal = s, causal
        self.n1, self.n2 = nn.RMSNorm(s.d_model), nn.RMSNorm(s.d_model)
        self.q, self.k, self.v = (nn.Linear(s.d_model, w, bias=False) for _ in range(3))
        self.o = nn.Linear(w, s.d_model, bias=False)
        self.w1 = nn.Linear(s.d_model, s.h_f, bias=False)
        self.w3 = nn.Linear(s.d_model, s.h_f, bias=False)
        self.w2 = nn.Linear(s.h_f, s.d_model, bias=False)

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        T, D = x.shape[-2], x.shape[-1]
        freqs = 1.0 / 10000 ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
        ang = torch.outer(torch.arange(T, dtype=torch.float32), freqs)
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        h = self.n1(x)
        q = self.q(h).view(B, T, self.s.heads, self.s.head_dim).transpose(1, 2)
        k = self.k(h).view(B, T, self.s.heads, self.s.head_dim).transpose(1, 2)
        v = self.v(h).view(B, T, self.s.heads, self.s.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=self.causal)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, -1))
        h = self.n2(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class RefModel(nn.Module):
    def __init__(self, s: Shape, causal: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(s.vocab_size + 1, s.d_model)
        self.blocks = nn.ModuleList(RefBlock(s, causal) for _ in range(s.layers))
        self.norm = nn.RMSNorm(s.d_model)
        self.vocab = s.vocab_size

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.norm(x) @ self.emb.weight[: self.vocab].T


class ReferenceLoop:
    """The reference training loop, run a window of steps at a time."""

    def __init__(self, s: Shape, family: str, device: str) -> None:
        torch.manual_seed(0)
        self.s, self.family, self.device = s, family, torch.device(device)
        self.model = RefModel(s, causal=family == "ar").to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def step(self) -> None:
        s = self.s
        x = torch.randint(0, s.vocab_size, (s.batch, s.seq_len + 1), device=self.device)
        if self.family == "ar":
            logits, target = self.model(x[:, :-1]), x[:, 1:]
            loss = F.cross_entropy(logits.reshape(-1, s.vocab_size), target.reshape(-1))
        else:
            x0 = x[:, :-1]
            p = torch.rand(s.batch, 1, device=self.device) * 0.999 + 0.001
            masked = torch.rand(x0.shape, device=self.device) < p
            logits = self.model(torch.where(masked, s.vocab_size, x0))
            ce = F.cross_entropy(logits.reshape(-1, s.vocab_size), x0.reshape(-1), reduction="none")
            loss = (ce.view_as(x0) * masked / p).sum() / x0.numel()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        loss.item()

    def window(self, steps: int) -> float:
        """tokens/s over `steps` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * self.s.batch * self.s.seq_len / (time.perf_counter() - start)


# ---- the trainer, through its public entry point, each window paired with a reference one ------
def paired_windows(s: Shape, family: str, device: str, precision: str, compiled: bool,
                   windows: int, window_steps: int) -> tuple[list[float], list[float], int]:
    """(trainer tokens/s per window, reference tokens/s per window, trainer parameter count).

    The trainer's own `tokens_per_s` metric times each window of `window_steps` steps; right after
    each window, inside the reporter (whose time the trainer does not count), the reference runs a
    window of its own. Adjacent windows see the same load from other processes, so their ratio is
    far steadier on a shared machine than two separate runs would be."""
    total = (windows + 1) * window_steps
    tokens_per_step = s.batch * s.seq_len
    rng = np.random.default_rng(0)
    pool = rng.integers(0, s.vocab_size, total * tokens_per_step + 1, dtype=np.int64).astype(np.uint32)
    val = rng.integers(0, s.vocab_size, s.seq_len + 1, dtype=np.int64).astype(np.uint32)
    config = TrialConfig(
        trial_id=f"bench-{s.name}-{family}", family=family, num_params=1, unique_tokens=len(pool),
        epochs=1.0, tokens=total * tokens_per_step, vocab_size=s.vocab_size, d_model=s.d_model,
        h_f=s.h_f, heads=s.heads, head_dim=s.head_dim, layers=s.layers, dropout=0.0, init_std=0.02,
        seq_len=s.seq_len, lr_peak=1e-4, lr_min=1e-5, warmup_steps=1, steps=total, schedule="cosine",
        betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0, batch_sequences=s.batch,
        micro_batch=s.batch, eval_steps=(0, total), mdm_eval_samples=1,
        checkpoint_every_steps=total, log_every_steps=window_steps, precision=precision,
        compile=compiled, seed=0, device=device, peak_flops=None)
    torch._dynamo.reset()  # compile from scratch: earlier runs' graphs do not count against this one
    reference = ReferenceLoop(s, family, device)
    reference.window(window_steps)  # warmup
    trainer_rates: list[float] = []
    reference_rates: list[float] = []

    def report(metrics: dict[str, float], _: str | None) -> None:
        if "tokens_per_s" in metrics:
            trainer_rates.append(metrics["tokens_per_s"])
            reference_rates.append(reference.window(window_steps))

    result = train(config, pool, val, report)
    # the first window is warmup (and compilation)
    return trainer_rates[1:], reference_rates[1:], result.num_params_actual


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="cpu-d256", choices=sorted(SHAPES))
    parser.add_argument("--families", default="ar,mdm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default="fp32-eager,bf16-eager,fp32-compile,bf16-compile",
                        help="comma-separated precision-compilemode pairs")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--window-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--peak-flops", type=float, default=None, help="per device, for MFU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = SHAPES[args.shape]
    rows = []
    for family in args.families.split(","):
        for mode in args.modes.split(","):
            precision, compile_mode = mode.split("-")
            mine, ref, n_params = paired_windows(s, family, args.device, precision,
                                                 compile_mode == "compile", args.windows,
                                                 args.window_steps)
            ratios = [a / b for a, b in zip(mine, ref)]
            row = {"family": family, "preset": s.name, "device": args.device, "precision": precision,
                   "compile": compile_mode, "tokens_per_s": round(statistics.median(mine), 1),
                   "reference_tokens_per_s": round(statistics.median(ref), 1),
                   "vs_reference": round(statistics.median(ratios), 2),
                   "vs_reference_range": [round(min(ratios), 2), round(max(ratios), 2)]}
            if args.peak_flops:
                per_token = palm_flops_per_token(n_params, s.layers, s.heads, s.head_dim, s.seq_len)
                row["mfu"] = round(model_flops_utilisation(per_token, statistics.median(mine),
                                                           args.peak_flops, 1), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
               "torch": torch.__version__, "python": platform.python_version(),
               "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print(json.dumps({"machine": machine, "shape": s.__dict__, "windows": args.windows,
                      "window_steps": args.window_steps, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
