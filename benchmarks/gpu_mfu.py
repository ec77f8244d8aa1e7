"""Model FLOPs utilisation of the trainer on one GPU: the paper's presets at its context length.

For each preset (140M and 425M first, then 14M) and family, trains `--warmup` steps (compilation
and allocator warmup) then `--steps` measured steps through `sweeper.trainer.train`, seq 2048,
bf16, compiled, and prints one JSON line per run, then a summary. MFU follows PaLM appendix B
(sweeper.trainer.flops): tokens/s x (6 N_actual + 12 layers heads head_dim seq) / peak.

    .venv/bin/python benchmarks/gpu_mfu.py                           # an H100: a few minutes
    .venv/bin/python benchmarks/gpu_mfu.py --device cpu --steps 2    # CI: keeps the script working

On the CPU the defaults shrink to what a CI machine runs in seconds (14M, seq 128, micro-batch 1,
eager); every default can be overridden by its flag.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from sweeper.presets import PAPER_VOCAB_SIZE, PRESETS, num_params
from sweeper.trainer import TrialConfig, train

# dense bf16 tensor-core peaks per device (vendor datasheets, SXM parts)
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12}
# micro-batches that fit an 80 GB H100 at seq 2048 in bf16 with room to spare
GPU_MICRO_BATCH = {"14M": 32, "140M": 16, "425M": 8}


def detect_peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def measure(preset: str, family: str, args: argparse.Namespace, peak: float | None) -> dict:
    spec = PRESETS[preset]
    micro = args.micro_batch or (GPU_MICRO_BATCH.get(preset, 8) if args.device != "cpu" else 1)
    total = args.warmup + args.steps
    step_tokens = micro * args.seq_len
    rng = np.random.default_rng(0)
    pool = rng.integers(0, PAPER_VOCAB_SIZE, total * step_tokens + 1).astype(np.uint16)
    val = rng.integers(0, PAPER_VOCAB_SIZE, args.seq_len + 1).astype(np.uint16)
    config = TrialConfig(
        trial_id=f"mfu-{preset}-{family}", family=family, num_params=num_params(spec, PAPER_VOCAB_SIZE),
        unique_tokens=len(pool), epochs=1.0, tokens=total * step_tokens, vocab_size=PAPER_VOCAB_SIZE,
        d_model=spec.d_model, h_f=spec.h_f, heads=spec.heads, head_dim=spec.head_dim,  # type: ignore[arg-type]
        layers=spec.layers, dropout=0.0, init_std=0.02, seq_len=args.seq_len, lr_peak=2e-4,
        lr_min=2e-5, warmup_steps=1, steps=total, schedule="cosine", betas=(0.9, 0.95), eps=1e-8,
        weight_decay=0.1, grad_clip=1.0, batch_sequences=micro, micro_batch=micro,
        eval_steps=(0, total), mdm_eval_samples=1, checkpoint_every_steps=total,
        log_every_steps=args.warmup, precision=args.precision, compile=args.compile, seed=1234,
        device=args.device, peak_flops=peak)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    # each run compiles from scratch: graphs of earlier presets would otherwise count against
    # dynamo's recompile limit and push it into dynamic shapes
    torch._dynamo.reset()
    reports: list[dict] = []
    started = time.perf_counter()
    result = train(config, pool, val, lambda m, _: reports.append(m))
    last = reports[-1]  # the window of the measured steps only
    row = {"preset": preset, "family": family, "device": args.device, "precision": args.precision,
           "compile": args.compile, "seq_len": args.seq_len, "micro_batch": micro,
           "num_params_actual": result.num_params_actual, "tokens_per_s": round(last["tokens_per_s"], 1),
           "mfu": round(last["mfu"], 4) if "mfu" in last else None,
           "wall_s": round(time.perf_counter() - started, 1)}
    if args.device.startswith("cuda"):
        row["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--presets", default=None, help="default: 140M,425M,14M (cpu: 14M)")
    parser.add_argument("--families", default="ar,mdm")
    parser.add_argument("--seq-len", type=int, default=None, help="default 2048 (cpu: 128)")
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on for cuda, off for cpu")
    parser.add_argument("--warmup", type=int, default=None, help="default 5 (cpu: 1)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-flops", type=float, default=None, help="default: known GPU peak")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="start no new run after this many seconds")
    args = parser.parse_args()
    on_cpu = args.device == "cpu"
    args.presets = args.presets or ("14M" if on_cpu else "140M,425M,14M")
    args.seq_len = args.seq_len or (128 if on_cpu else 2048)
    args.compile = (not on_cpu) if args.compile is None else args.compile
    args.warmup = args.warmup if args.warmup is not None else (1 if on_cpu else 5)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # only touches fp32 runs
    peak = args.peak_flops or detect_peak(args.device)
    started = time.perf_counter()
    rows = []
    for preset in args.presets.split(","):
        for family in args.families.split(","):
            if time.perf_counter() - started > args.budget_s:
                print(json.dumps({"skipped": f"{preset} {family}", "reason": "--budget-s reached"}))
                continue
            rows.append(measure(preset, family, args, peak))
            print(json.dumps(rows[-1]), flush=True)
    machine = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else
               (platform.processor() or platform.machine()), "peak_flops": peak,
               "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps({"machine": machine, "warmup_steps": args.warmup, "measured_steps": args.steps,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
