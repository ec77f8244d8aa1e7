"""Writes tests/evals/tasks/data/symbols_next.jsonl: pick the true next four symbols among four.

Each question is 12 symbols of a document of tests/specs/smoke.yaml's synthetic source, drawn from
stream 2 (the train pools read stream 0 and the validation set stream 1, so these are unseen
documents of the same process); the choices are the 4 symbols that follow and three runs of 4
symbols drawn uniformly. A model that learned which symbol may follow which picks the true one far
more often than chance (1/4). Run from the repository root:

    .venv/bin/python tests/evals/make_symbols_task.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sweeper.data.synthetic import documents
from sweeper.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "evals" / "tasks" / "data" / "symbols_next.jsonl"
QUESTIONS, CONTEXT, CHOICE = 200, 12, 4


def main() -> None:
    source = load_spec(ROOT / "tests" / "specs" / "smoke.yaml").data.train
    block = next(documents(source, stream=2))
    rng = np.random.default_rng(2)
    lines = []
    for i in range(QUESTIONS):
        doc = block[i % len(block)]
        start = int(rng.integers(0, len(doc) - CONTEXT - CHOICE))
        context, truth = doc[start:start + CONTEXT], doc[start + CONTEXT:start + CONTEXT + CHOICE]
        choices = [truth.tolist()] + [rng.integers(0, source.symbols, CHOICE).tolist() for _ in range(3)]
        order = rng.permutation(4)
        lines.append(json.dumps({"id": f"symbols-{i}", "context": " ".join(map(str, context.tolist())),
                                 "choices": [" ".join(map(str, choices[k])) for k in order],
                                 "label": int(np.flatnonzero(order == 0)[0])}))
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
