"""The device check: MFU of the paper's presets, packed small trials, and a real training run, as one
JSON report on stdout (progress on stderr).

(a) mfu: the 140M and 425M presets, ar and mdm, seq 2048, bf16, compiled, trained through
    `sweeper.trainer.train` for `--warmup` steps (compilation, allocator warmup) and then `--steps`
    measured ones, at the largest micro-batch that fits: the plan's micro-batch for this device
    (sweeper.plan.sizing) first, halved on every out-of-memory. Model FLOPs follow PaLM appendix B
    (sweeper.trial); hardware FLOPs count what the kernels do: causal attention skips half
    of the score and value matmuls (ar), and mdm scores only its masked positions (half on average).
(b) packing: the 7M and 14M presets (ar), `--pack-processes` trainer processes sharing the device
    against one alone, each measured over the same `--pack-seconds` of wall time after warm-up.
(c) training_run: benchmarks/device_train_check.py, `sweeper train` killed by SIGKILL and resumed,
    compared point by point with an uninterrupted run, then `sweeper sample`.
(d) between the trials this one process runs, the CUDA allocator's cache is released (with the
    compiled graphs), as a reused worker must; each row says what was reserved before and after.

    python3 benchmarks/gpu_mfu.py                      # one H100/H200: under 5 minutes
    .venv/bin/python benchmarks/gpu_mfu.py --tiny      # CPU, tiny shapes, a few steps (the tests)

Imports no Ray and no MLflow (the report says so: `imports_ray_or_mlflow`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweeper.spec.presets import PAPER_VOCAB_SIZE, PRESETS, ModelSpec, num_params, num_params_actual
from sweeper.profile import Hardware
from sweeper.plan.sizing import size_trial
from sweeper.trainer import TrialConfig, TrialOutOfMemory, train
from sweeper.trial import padded_vocab_size, palm_flops_per_token
from sweeper.trainer.objectives import MIN_MASK_RATE

REPO = Path(__file__).resolve().parents[1]
# dense bf16 tensor-core peaks per device (vendor datasheets, SXM parts)
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 125e12}
TINY = ModelSpec(name="tiny", d_model=64, layers=2, heads=2, head_dim=32, h_f=128)
MDM_MASKED_FRACTION = (1.0 - MIN_MASK_RATE) * 0.5 + MIN_MASK_RATE  # E[p] for t ~ U(0, 1)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def model_of(name: str) -> ModelSpec:
    return TINY if name == "tiny" else PRESETS[name]


def detect_peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def hardware_flops_per_token(model: ModelSpec, vocab_size: int, seq_len: int, family: str) -> float:
    """What the kernels execute per trained token: 6·(N - head) + 6·head·f + c·12·l·a·T, with f the
    fraction of positions the output head scores (1 for ar, E[p] for mdm) and c = 1/2 for causal
    attention (flash kernels skip the masked half), 1 for mdm's bidirectional attention."""
    head = padded_vocab_size(vocab_size) * model.d_model
    body = num_params_actual(model, vocab_size) - head
    f, c = (1.0, 0.5) if family == "ar" else (MDM_MASKED_FRACTION, 1.0)
    return 6.0 * body + 6.0 * head * f + c * 12.0 * model.layers * model.attention_width * seq_len


def device_hardware(args: argparse.Namespace, share: int = 1) -> Hardware:
    """This device as a profile's hardware, for the plan's micro-batch and memory estimate."""
    if args.device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(args.device)).total_memory
        return Hardware(accelerator="cuda", name=torch.cuda.get_device_name(), devices_per_node=1,
                        memory_per_device=total // share, peak_flops=args.peak or 1e15, assumed_mfu=0.4,
                        max_micro_batch=args.max_micro_batch)
    return Hardware(accelerator="cpu", name="cpu", devices_per_node=1, memory_per_device=(4 << 30) // share,
                    sustained_flops=1e10, max_micro_batch=args.max_micro_batch)


def release_device_memory(device: str) -> dict[str, float | None]:
    """(d): drop the compiled graphs and return the allocator's cached blocks to the driver."""
    torch._dynamo.reset()
    gc.collect()
    if not device.startswith("cuda"):
        return {"reserved_before_release_gib": None, "reserved_after_release_gib": None}
    before = torch.cuda.memory_reserved() / 2**30
    torch.cuda.empty_cache()
    return {"reserved_before_release_gib": round(before, 2),
            "reserved_after_release_gib": round(torch.cuda.memory_reserved() / 2**30, 2)}


def trial_config(model: ModelSpec, family: str, micro: int, total: int, log_every: int,
                 args: argparse.Namespace, tag: str) -> TrialConfig:
    return TrialConfig(
        trial_id=f"{tag}-{model.name}-{family}", family=family,  # type: ignore[arg-type]
        num_params=num_params(model, args.vocab_size), unique_tokens=(total * micro + 1) * args.seq_len + 1,
        epochs=1.0, tokens=total * micro * args.seq_len, vocab_size=args.vocab_size, d_model=model.d_model,
        h_f=model.h_f, heads=model.heads, head_dim=model.head_dim, layers=model.layers,  # type: ignore[arg-type]
        dropout=0.0, init_std=0.02, seq_len=args.seq_len, lr_peak=2e-4, lr_min=2e-5, warmup_steps=1, steps=total,
        schedule="cosine", betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0, batch_sequences=micro,
        micro_batch=micro, eval_steps=(0, total), mdm_eval_samples=1, checkpoint_every_steps=total,
        log_every_steps=log_every, precision=args.precision, compile=args.compile, seed=1234, device=args.device,
        peak_flops=None)


def token_arrays(config: TrialConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pool = rng.integers(0, config.vocab_size, config.unique_tokens).astype(np.uint16)
    return pool, rng.integers(0, config.vocab_size, config.seq_len + 1).astype(np.uint16)


def measure(model: ModelSpec, family: str, micro: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run at one micro-batch: tokens/s over the windows after the warm-up one."""
    total = args.warmup + args.steps
    config = trial_config(model, family, micro, total, args.warmup, args, "mfu")
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    reports: list[dict] = []
    result = train(config, *token_arrays(config), lambda m, _: reports.append(m))
    windows = [r for r in reports if "tokens_per_s" in r]
    measured = [(b["tokens"] - a["tokens"], b["tokens_per_s"]) for a, b in zip(windows, windows[1:])]
    tokens_per_s = sum(t for t, _ in measured) / sum(t / rate for t, rate in measured)
    row: dict[str, Any] = {"micro_batch": micro, "num_params_actual": result.num_params_actual,
                           "tokens_per_s": round(tokens_per_s, 1)}
    if args.device.startswith("cuda"):
        row["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def mfu_row(name: str, family: str, args: argparse.Namespace) -> dict[str, Any]:
    """The largest micro-batch that fits: the plan's (or --micro-batch) first, halved on OOM."""
    model = model_of(name)
    sizing = size_trial(model, vocab_size=args.vocab_size, seq_len=args.seq_len,
                        batch_sequences=args.max_micro_batch, precision=args.precision, hardware=device_hardware(args))
    micro, out_of_memory, started = args.micro_batch or sizing.micro_batch, [], time.perf_counter()
    while True:
        try:
            row = measure(model, family, micro, args)
            break
        except TrialOutOfMemory:
            out_of_memory.append(micro)
        # outside the except clause: its traceback holds the failed run's tensors
        release_device_memory(args.device)
        if micro == 1:
            return {"preset": name, "family": family, "error": "out of memory at micro-batch 1",
                    "out_of_memory_at": out_of_memory}
        micro //= 2
    model_flops = palm_flops_per_token(row["num_params_actual"], model.layers, model.heads,
                                       model.head_dim, args.seq_len)  # type: ignore[arg-type]
    hardware_flops = hardware_flops_per_token(model, args.vocab_size, args.seq_len, family)
    rate = row["tokens_per_s"]
    row = {"preset": name, "family": family, **row,
           "model_flops_per_token": model_flops, "hardware_flops_per_token": hardware_flops,
           "mfu": round(model_flops * rate / args.peak, 4) if args.peak else None,
           "hardware_mfu": round(hardware_flops * rate / args.peak, 4) if args.peak else None,
           "plan_micro_batch": sizing.micro_batch, "plan_memory_gib": round(sizing.memory.total / 2**30, 2),
           "plan_fits": sizing.fits, "out_of_memory_at": out_of_memory,
           "wall_s": round(time.perf_counter() - started, 1)}
    return {**row, **release_device_memory(args.device)}


class _Measured(Exception):
    """Raised by a packing worker's reporter to end its run once the measured time is over."""


def pack_worker(payload: dict[str, Any]) -> None:
    """One of the trainer processes sharing the device: warm up, say ready, wait for the go-file,
    train for `seconds` and print tokens and the wall-clock window."""
    args = argparse.Namespace(**payload["args"])
    go, seconds, warmup = Path(payload["go_file"]), payload["seconds"], payload["warmup"]
    config = trial_config(model_of(payload["preset"]), "ar", payload["micro"], 1_000_000, payload["log_every"],
                          args, "pack")
    state: dict[str, Any] = {}

    def reporter(metrics: dict[str, float], _: str | None) -> None:
        step = metrics["tokens"] // config.tokens_per_step
        if "t0" not in state and step >= warmup:
            print(json.dumps({"ready": True}), flush=True)
            while not go.exists():
                time.sleep(0.005)
            state.update(t0=time.time(), tokens0=metrics["tokens"])
        elif "t0" in state and time.time() - state["t0"] >= seconds:
            state.update(t1=time.time(), tokens1=metrics["tokens"])
            raise _Measured

    pool = np.random.default_rng(0).integers(0, config.vocab_size, 64 * config.tokens_per_step + 1)
    try:
        train(config, pool.astype(np.uint16), pool[: config.seq_len + 1].astype(np.uint16), reporter)
    except _Measured:
        pass
    memory = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
    print(json.dumps({"tokens": state["tokens1"] - state["tokens0"], "t0": state["t0"], "t1": state["t1"],
                      "max_memory_allocated_gib": memory}), flush=True)


def run_packed(name: str, processes: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """`processes` workers side by side, released together; aggregate tokens/s over the union of
    their measured windows (the first start to the last end)."""
    # the micro-batch of a trial planned to share the device, alone or not, so only sharing differs
    micro = size_trial(model_of(name), vocab_size=args.vocab_size, seq_len=args.seq_len,
                       batch_sequences=args.max_micro_batch, precision=args.precision,
                       hardware=device_hardware(args, share=args.pack_processes)).micro_batch
    go = scratch / f"go-{name}-{processes}"
    worker_args = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}
    payload = json.dumps({"args": worker_args, "preset": name, "micro": micro, "go_file": str(go),
                          "seconds": args.pack_seconds, "warmup": args.warmup, "log_every": args.pack_log_every})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if not args.device.startswith("cuda"):
        env["OMP_NUM_THREADS"] = "1"
    logs = [scratch / f"pack-{name}-{processes}-{i}.log" for i in range(processes)]  # files: no pipe fills up
    workers = [subprocess.Popen([sys.executable, __file__, "--pack-worker", payload], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=open(log_file, "w")) for log_file in logs]
    for worker, log_file in zip(workers, logs):
        assert worker.stdout is not None
        if '"ready"' not in worker.stdout.readline():
            worker.wait()
            raise RuntimeError(f"a packing worker of {name} failed: {log_file.read_text().strip()[-2000:]}")
    go.touch()
    results = []
    for worker, log_file in zip(workers, logs):
        out, _ = worker.communicate(timeout=600)
        if worker.returncode != 0:
            raise RuntimeError(f"a packing worker of {name} exited {worker.returncode}: "
                               f"{log_file.read_text().strip()[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return {"processes": processes, "micro_batch": micro, "tokens_per_s": round(sum(r["tokens"] for r in results) / span, 1),
            "per_process_tokens_per_s": [round(r["tokens"] / (r["t1"] - r["t0"]), 1) for r in results],
            "max_memory_allocated_gib": [r["max_memory_allocated_gib"] for r in results]}


def packing_row(name: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    alone = run_packed(name, 1, args, scratch)
    shared = run_packed(name, args.pack_processes, args, scratch)
    return {"preset": name, "family": "ar", "alone": alone, "shared": shared,
            "ratio": round(shared["tokens_per_s"] / alone["tokens_per_s"], 2)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny shapes, a few steps: the tests' mode")
    parser.add_argument("--device", default=None, help="default cuda (--tiny: cpu)")
    parser.add_argument("--parts", default="train,mfu,pack", help="which parts, in this order")
    parser.add_argument("--presets", default=None, help="mfu presets; default 140M,425M (--tiny: tiny)")
    parser.add_argument("--families", default="ar,mdm")
    parser.add_argument("--seq-len", type=int, default=None, help="default 2048 (--tiny: 64)")
    parser.add_argument("--vocab-size", type=int, default=None, help=f"default {PAPER_VOCAB_SIZE} (--tiny: 512)")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: the plan's for this device")
    parser.add_argument("--max-micro-batch", type=int, default=None, help="the plan's cap; default 64 (--tiny: 4)")
    parser.add_argument("--precision", default=None, choices=["bf16", "fp32"], help="default bf16 (--tiny: fp32)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on for cuda, off for cpu")
    parser.add_argument("--warmup", type=int, default=None, help="steps before measuring; default 5 (--tiny: 1)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps; default 10 (--tiny: 2)")
    parser.add_argument("--peak-flops", type=float, default=None, help="default: known GPU peak")
    parser.add_argument("--pack-presets", default=None, help="default 7M,14M (--tiny: tiny)")
    parser.add_argument("--pack-processes", type=int, default=None, help="default 4 (--tiny: 2)")
    parser.add_argument("--pack-seconds", type=float, default=None, help="default 10 (--tiny: 0.5)")
    parser.add_argument("--pack-log-every", type=int, default=None, help="default 10 (--tiny: 1)")
    parser.add_argument("--train-spec", default=None,
                        help="default tests/specs/device_run.yaml (--tiny: tests/specs/smoke.yaml)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="start nothing new after this many seconds")
    parser.add_argument("--report-file", default=None, help="also write the report here, updated after every result")
    parser.add_argument("--pack-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tiny = args.tiny

    def default(name: str, device_value: Any, tiny_value: Any) -> None:
        if getattr(args, name) is None:
            setattr(args, name, tiny_value if tiny else device_value)

    for name, device_value, tiny_value in (
            ("device", "cuda", "cpu"), ("presets", "140M,425M", "tiny"), ("seq_len", 2048, 64),
            ("vocab_size", PAPER_VOCAB_SIZE, 512), ("max_micro_batch", 64, 4), ("warmup", 5, 1), ("steps", 10, 2),
            ("pack_presets", "7M,14M", "tiny"), ("pack_processes", 4, 2), ("pack_seconds", 10.0, 0.5),
            ("pack_log_every", 10, 1), ("precision", "bf16", "fp32"),
            ("train_spec", "tests/specs/device_run.yaml", "tests/specs/smoke.yaml")):
        default(name, device_value, tiny_value)
    args.compile = args.device.startswith("cuda") if args.compile is None else args.compile
    return args


def main() -> None:
    args = parse_args()
    if args.pack_worker:
        pack_worker(json.loads(args.pack_worker))
        return
    args.peak = args.peak_flops or detect_peak(args.device)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "tiny" if args.tiny else "device",
        "machine": {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else
                    (platform.processor() or platform.machine()), "peak_flops": args.peak,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "threads": torch.get_num_threads()},
        "settings": {k: getattr(args, k) for k in (
            "device", "seq_len", "vocab_size", "precision", "compile", "warmup", "steps", "max_micro_batch",
            "pack_processes", "pack_seconds", "train_spec", "budget_s")},
        "skipped": []}

    def in_budget(what: str) -> bool:
        if time.perf_counter() - started <= args.budget_s:
            log(f"{time.perf_counter() - started:6.1f}s  {what}")
            return True
        report["skipped"].append({"what": what, "reason": f"--budget-s {args.budget_s:g} reached"})
        return False

    def add(part: str, row: dict[str, Any], one: bool = False) -> None:
        """Each result as soon as it is known: a line on stderr, and the report file so far, so a
        run stopped by a timeout still leaves what it measured."""
        if one:
            report[part] = row
        else:
            report.setdefault(part, []).append(row)
        log(json.dumps(row))
        if args.report_file:
            Path(args.report_file).write_text(json.dumps(report, indent=1))

    def guarded(what: dict[str, Any], measure_row: Any) -> dict[str, Any]:
        try:
            return measure_row()
        except Exception as error:  # the report says what broke; the other rows still run
            return {**what, "error": f"{type(error).__name__}: {str(error)[-2000:]}"}

    with tempfile.TemporaryDirectory(prefix="sweeper-gpu-check-") as scratch:
        for part in args.parts.split(","):
            if part == "train" and in_budget("training run"):
                sys.path.insert(0, str(Path(__file__).parent))
                from device_train_check import run_check

                spec = (REPO / args.train_spec).resolve()
                row = guarded({}, lambda: run_check(spec, args.device, threads=1 if args.tiny else None))
                add("training_run", row, one=True)
            for name in args.presets.split(",") if part == "mfu" else []:
                for family in args.families.split(","):
                    if in_budget(f"mfu {name} {family}"):
                        add("mfu", guarded({"preset": name, "family": family},
                                           lambda: mfu_row(name, family, args)))
            for name in args.pack_presets.split(",") if part == "pack" else []:
                if in_budget(f"packing {name}"):
                    add("packing", guarded({"preset": name}, lambda: packing_row(name, args, Path(scratch))))
    report["imports_ray_or_mlflow"] = sorted(m for m in ("ray", "mlflow") if m in sys.modules)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    if args.report_file:
        Path(args.report_file).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
