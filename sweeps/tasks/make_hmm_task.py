"""Writes sweeps/tasks/data/hmm_next.jsonl, sweeps/hmm-cpu.yaml's downstream task, offline.

200 questions on unseen documents of sweeps/hmm-cpu.yaml's synthetic source: after 24 symbols,
pick the 4 that follow among four, the three wrong ones runs of the source taken from other
documents, so that each is a likely run of the process by itself and only a model that tracks the
hidden state through the context picks the true one (sweeper.data.synthetic.next_symbols_task).
Chance is 1/4. Run from the repository root:

    .venv/bin/python sweeps/tasks/make_hmm_task.py [OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sweeper.data.synthetic import next_symbols_task
from sweeper.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "sweeps" / "tasks" / "data" / "hmm_next.jsonl"


def main(out: Path = OUT) -> None:
    source = load_spec(ROOT / "sweeps" / "hmm-cpu.yaml").data.train
    questions = next_symbols_task(source, questions=200, context=24, choice=4, distractors="source")
    out.write_text("\n".join(json.dumps(q) for q in questions) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
