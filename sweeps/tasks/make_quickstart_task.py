"""Writes sweeps/tasks/data/quickstart_next.jsonl, the quickstart's downstream task, offline.

200 questions on a play no quickstart trial trains on: the last of the bundled corpus in its fixed
order (Timon of Athens; the quickstart's validation set is the start of the first play and its pools
end within the first third of the corpus). Each question gives 48 characters of the play, ending
inside a word, and asks which 8 characters follow, among four; the three wrong ones are 8
characters from other places of the same play that also start inside a word, so each reads like
the play by itself and only a model that follows the context picks the true one. Chance is 1/4. Run from the repository root:

    .venv/bin/python sweeps/tasks/make_quickstart_task.py [OUT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from sweeper.data.sources import document_batches
from sweeper.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "sweeps" / "tasks" / "data" / "quickstart_next.jsonl"


def continuation_task(text: str, *, questions: int, context: int, choice: int, seed: int = 2) -> list[dict[str, object]]:
    """Multiple-choice questions on `text`: after `context` characters, which `choice` characters
    follow. Every span (true or wrong) starts inside a word and holds no line break; wrong spans
    come from elsewhere in `text`. Each question is an lm-eval document {"id", "context", "choices", "label"}."""
    rng = np.random.default_rng(seed)
    starts = [i for i in range(context, len(text) - choice)
              if text[i - 1].isalpha() and text[i].isalpha() and "\n" not in text[i:i + choice]]
    out: list[dict[str, object]] = []
    while len(out) < questions:
        at = starts[int(rng.integers(len(starts)))]
        truth = text[at:at + choice]
        wrong: list[str] = []
        while len(wrong) < 3:
            other = starts[int(rng.integers(len(starts)))]
            span = text[other:other + choice]
            if abs(other - at) > 4 * context and span != truth and span not in wrong:
                wrong.append(span)
        label = int(rng.integers(4))
        choices = wrong[:label] + [truth] + wrong[label:]
        out.append({"id": len(out), "context": text[at - context:at], "choices": choices, "label": label})
    return out


def main(out: Path = OUT) -> None:
    source = load_spec(ROOT / "sweeps" / "quickstart.yaml").data.train
    plays = [doc for batch in document_batches(source, "data.train", storage=None) for doc in batch]  # type: ignore[arg-type]
    questions = continuation_task(plays[-1], questions=200, context=48, choice=8)
    out.write_text("\n".join(json.dumps(q) for q in questions) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
