"""Why a trial stopped early, as exception types a runner can route on.

`retryable` tells the runner (Ray Tune's failure handling, or a person) whether running the same
trial again could help: a diverged loss or a micro-batch that does not fit will fail the same way.
"""

from __future__ import annotations

import copyreg
from typing import Any


class TrialFailure(RuntimeError):
    retryable: bool = True

    def __reduce__(self) -> tuple[Any, ...]:
        # Ray carries a worker's error to the driver by pickling it; the default would call the class
        # with the message alone, which subclasses taking other arguments refuse.
        return copyreg.__newobj__, (type(self), *self.args), self.__dict__  # type: ignore[attr-defined]


class NonFiniteLoss(TrialFailure):
    """The training loss became NaN or infinite; rerunning the same config reproduces it."""

    retryable = False

    def __init__(self, step: int, tokens: int, value: float) -> None:
        self.step, self.tokens, self.value = step, tokens, value
        super().__init__(
            f"training loss is {value} at optimizer step {step} ({tokens:,} tokens): the run "
            "diverged; lower lr_peak, lengthen the warmup or set grad_clip (this trial is not retried)")


class TrialOutOfMemory(TrialFailure):
    """The device ran out of memory; only a smaller micro-batch (or sharding) can fix it."""

    retryable = False

    def __init__(self, micro_batch: int, device: str, detail: str) -> None:
        self.micro_batch, self.device = micro_batch, device
        smaller = max(1, micro_batch // 2)
        super().__init__(
            f"out of memory on {device} with micro_batch={micro_batch}: lower the micro-batch "
            f"(e.g. {smaller}; gradient accumulation keeps the global batch) or use "
            f"parallelism='fsdp' across several devices. {detail.splitlines()[0] if detail else ''}")


class CheckpointUnreadable(TrialFailure):
    """A checkpoint that is torn (its completion marker missing, or a file that does not match it),
    damaged or missing. A runner resuming a trial falls back to an older checkpoint, or step 0."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"the checkpoint {path} {problem}")
