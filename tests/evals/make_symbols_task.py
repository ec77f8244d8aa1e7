"""Writes tests/evals/tasks/data/symbols_next.jsonl: pick the true next four symbols among four.

Each question is 12 symbols of an unseen document of tests/specs/smoke.yaml's synthetic source; the
choices are the 4 symbols that follow and three runs of 4 symbols drawn uniformly
(sweeper.data.synthetic.next_symbols_task). A model that learned which symbol may follow which
picks the true one far more often than chance (1/4). Run from the repository root:

    .venv/bin/python tests/evals/make_symbols_task.py
"""

from __future__ import annotations

import json
from pathlib import Path

from sweeper.data.synthetic import next_symbols_task
from sweeper.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "evals" / "tasks" / "data" / "symbols_next.jsonl"


def main() -> None:
    source = load_spec(ROOT / "tests" / "specs" / "smoke.yaml").data.train
    lines = [json.dumps(q) for q in next_symbols_task(source, questions=200, context=12, choice=4)]
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
