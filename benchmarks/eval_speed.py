"""Time per downstream eval request for each family: `sweeper eval`'s cost per question.

Scores 4-choice questions (a context of `--context` tokens, choices of `--choice` tokens) through
sweeper.evals.harness.SweeperLM on untrained models (the time does not depend on the weights) of two
shapes: the tests' smoke model (1 layer, d_model 32, seq_len 16, 65 ids) and the quickstart's qs-m
(2 layers, d_model 64, seq_len 32, 129 ids), on the CPU with one thread. Each question costs ar one
batched causal pass; mdm and bd3lm `--mc-samples` masked passes (batched) for the ELBO and one pass
per continuation token for the greedy check. Prints one JSON object:

    .venv/bin/python benchmarks/eval_speed.py [--questions 50] [--mc-samples 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from evals.helpers import config, lm, model_of, symbols  # noqa: E402

SHAPES = {"smoke": dict(d_model=32, layers=1, heads=2, head_dim=16, h_f=64, seq_len=16, vocab_size=65),
          "qs-m": dict(d_model=64, layers=2, heads=4, head_dim=16, h_f=192, seq_len=32, vocab_size=129)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--mc-samples", type=int, default=32)
    parser.add_argument("--context", type=int, default=24)
    parser.add_argument("--choice", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for shape, dims in SHAPES.items():
        for family in ("ar", "mdm", "bd3lm"):
            c = config(family=family, block_size=4, **dims)
            harness = lm(c, symbols(), model_of(c).to(args.device), mc_samples=args.mc_samples)
            rng = torch.Generator().manual_seed(0)
            vocab = dims["vocab_size"] - 1
            pairs = []
            for _ in range(args.questions):
                context = torch.randint(0, vocab, (args.context,), generator=rng).tolist()
                pairs += [(context, torch.randint(0, vocab, (args.choice,), generator=rng).tolist()) for _ in range(4)]
            harness.score(pairs[:4])  # warm up
            started = time.perf_counter()
            harness.score(pairs)
            seconds = time.perf_counter() - started
            rows.append({"shape": shape, "family": family, "questions": args.questions,
                         "seconds": round(seconds, 3), "ms_per_question": round(1000 * seconds / args.questions, 2)})
            print(f"{shape:6} {family:6} {1000 * seconds / args.questions:8.2f} ms per 4-choice question",
                  file=sys.stderr)
    print(json.dumps({"mc_samples": args.mc_samples, "context": args.context, "choice": args.choice,
                      "device": args.device, "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
