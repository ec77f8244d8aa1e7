"""How long `sweeper plan` takes for a 10,000-trial spec (target: well under a second).

Prints JSON: the time to load and validate the spec, to plan it (expand, id, size every trial),
and, as a reference measured in the same run, a bare loop that only hashes each grid point's
canonical JSON — the least any planner with content-addressed ids must do.

    .venv/bin/python benchmarks/plan_speed.py
"""

from __future__ import annotations

import hashlib
import itertools
import json
import platform
import tempfile
import time
from pathlib import Path

from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
MODELS = ["7M", "14M", "20M", "35M", "44M", "57M", "74M", "90M", "106M", "117M"]
UNIQUE = [f"{u}M" for u in range(10, 260, 10)]  # 25 values
EPOCHS = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 25, 30, 40, 50, 75, 100, 200, 300, 400, 500]  # 20 values


def spec_text() -> str:
    return f"""\
version: 1
name: bench
data:
  train: {{kind: hf, dataset: allenai/c4, config: en}}
  tokenizer: {{kind: pretrained, name: gpt2, vocab_size: 50257}}
  seq_len: 2048
  validation_tokens: 4M
grid:
  family: [ar, mdm]
  model: [{", ".join(MODELS)}]
  unique_tokens: [{", ".join(UNIQUE)}]
  epochs: [{", ".join(map(str, EPOCHS))}]
"""


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.yaml"
        path.write_text(spec_text())
        profile = load_profile(REPO / "backends" / "cluster.yaml")
        load_s, spec = best_of(3, lambda: load_spec(path))
        plan_s, plan = best_of(3, lambda: plan_sweep(spec, profile))

        def reference() -> int:
            points = itertools.product(["ar", "mdm"], MODELS, UNIQUE, EPOCHS)
            return len({hashlib.sha256(json.dumps(p).encode()).hexdigest() for p in points})

        reference_s, _ = best_of(3, reference)
    print(json.dumps({
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "trials": len(plan.trials),
        "load_validate_s": round(load_s, 4),
        "plan_s": round(plan_s, 4),
        "total_s": round(load_s + plan_s, 4),
        "trials_per_s": round(len(plan.trials) / (load_s + plan_s)),
        "reference_hash_only_s": round(reference_s, 4),
        "target_total_s": 1.0,
    }, indent=2))


if __name__ == "__main__":
    main()
