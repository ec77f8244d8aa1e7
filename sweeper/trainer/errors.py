"""Why a trial stopped early, as exception types a runner can route on.

`retryable` tells the runner (Ray Tune's failure handling, or a person) whether running the same
trial again could help: a diverged loss or a micro-batch that does not fit will fail the same way.
"""

from __future__ import annotations


class TrialFailure(RuntimeError):
    retryable: bool = True


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
