"""Tiny models of every family, tokenizers and the shipped offline tasks, for the eval tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from sweeper.evals.harness import Samplers, SweeperLM
from sweeper.trainer import TrialConfig, sample_ar, sample_bd3lm, sample_mdm
from sweeper.trainer.model import ModelConfig, Transformer

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tests" / "evals" / "tasks"
SAMPLERS = Samplers(ar=sample_ar, mdm=sample_mdm, bd3lm=sample_bd3lm)

TINY: dict[str, Any] = dict(
    trial_id="tiny", family="ar", num_params=100_000, unique_tokens=8_192, epochs=1.0, tokens=8_192,
    vocab_size=65, d_model=32, h_f=64, heads=2, head_dim=16, layers=1, dropout=0.0, init_std=0.02,
    seq_len=32, lr_peak=3e-3, lr_min=3e-4, warmup_steps=2, steps=16, schedule="cosine",
    betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0, batch_sequences=16, micro_batch=16,
    eval_steps=(0, 16), mdm_eval_samples=4, checkpoint_every_steps=16, log_every_steps=4,
    precision="fp32", compile=False, seed=7, device="cpu", peak_flops=None,
)


def config(**overrides: Any) -> TrialConfig:
    return TrialConfig(**{**TINY, **overrides})


def model_of(c: TrialConfig, seed: int = 0) -> Transformer:
    model = Transformer(ModelConfig.from_trial(c))
    model.init_weights(0.5, seed)  # a large std: an untrained model with opinions
    return model.eval()


class ByteTokenizer:
    """Bytes 0-255 and an end-of-document id 256, shaped as sweeper's text tokenizers."""

    vocab_size, eod_id, description = 257, 256, "bytes"

    def __init__(self) -> None:
        self.tokenizer = SimpleNamespace(encode=lambda text, add_special_tokens=False:
                                         SimpleNamespace(ids=list(text.encode())))

    def decode(self, ids: Any) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode(errors="replace")


def symbols() -> Any:
    from sweeper.data.tokenizer import SymbolTokenizer

    return SymbolTokenizer(64)


def lm(c: TrialConfig, tokenizer: Any, model: torch.nn.Module | None = None, mc_samples: int = 8) -> SweeperLM:
    return SweeperLM(model if model is not None else model_of(c), c, tokenizer, samplers=SAMPLERS,
                     mc_samples=mc_samples)
