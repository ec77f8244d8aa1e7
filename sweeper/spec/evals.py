"""The spec's `evals` block: which downstream tasks (lm-evaluation-harness) score a finished trial.

    evals:
      tasks: [arc_easy, lambada_openai]   # lm-eval task names, or those of YAML files in task_dirs
      task_dirs: [tests/evals/tasks]      # folders of task YAML files (relative to the working folder)
      num_fewshot: 0
      limit: null                         # at most this many documents per task (null: all)
      at: final                           # the weights evaluated: final, or best (lowest val/loss
                                          # over the planned evaluations; kept in every checkpoint)
      mc_samples: 32                      # diffusion families: Monte-Carlo draws of t per request

Evaluating more tasks is not a different experiment, so nothing here is part of a trial id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sweeper.spec.schema import FieldError, spec_field


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalsSpec:
    tasks: tuple[str, ...]
    task_dirs: tuple[str, ...] = spec_field((), doc="folders of lm-eval task YAML files")
    num_fewshot: int = spec_field(0, min=0, max=1_000)
    limit: int | None = spec_field(None, positive=True, max=10**9, doc="documents per task; null: all")
    at: Literal["final", "best"] = "final"
    mc_samples: int = spec_field(32, positive=True, max=100_000,
                                 doc="diffusion families: Monte-Carlo draws of t per request (the paper's 32)")

    def __post_init__(self) -> None:
        repeated = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        if repeated:
            raise FieldError("tasks", f"task {repeated[0]!r} is listed twice")
