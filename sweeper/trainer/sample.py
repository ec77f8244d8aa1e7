"""Generation from a trained model of either family.

ar: left to right, temperature and top-k. mdm (PAPER.md): start fully masked, unmask over S steps,
revealing about length/S positions per step, chosen at random or most-confident first, each
revealed token drawn from the model's prediction given everything revealed so far. A prompt fixes
the first tokens in both families. Both run the model on the whole sequence each step (no KV
cache): simple, and fast enough for inspecting a model.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from sweeper.trainer.checkpoint import read_checkpoint
from sweeper.trial import TrialConfig
from sweeper.trainer.distributed import resolve_device
from sweeper.trainer.model import ModelConfig, Transformer

UnmaskOrder = Literal["random", "confident"]


def load_model(checkpoint: str | os.PathLike[str], device: str = "cpu") -> tuple[Transformer, TrialConfig]:
    """Rebuild the model a checkpoint folder (step_*) holds, in eval mode, on `device`; also from a
    checkpoint written before completion markers. Raises CheckpointUnreadable when it does not load."""
    config, state = read_checkpoint(checkpoint, marked_only=False)
    model = Transformer(ModelConfig.from_trial(config))
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval(), config


def _draw(logits: torch.Tensor, temperature: float, top_k: int | None,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (..., V) -> sampled tokens (...), their probabilities (...). temperature 0: greedy."""
    logits = logits.float()
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if temperature == 0:
        probs = torch.softmax(logits, dim=-1)
        tokens = probs.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / temperature, dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        tokens = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
    return tokens, probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def sample_ar(model: Transformer, prompt: list[int], *, num_samples: int = 1, max_new_tokens: int = 64,
              temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> torch.Tensor:
    """-> (num_samples, len(prompt) + max_new_tokens). The prompt needs at least one token (an
    end-of-document token starts a fresh document)."""
    if not prompt:
        raise ValueError("ar sampling needs a prompt of at least one token, e.g. the end-of-document id")
    device = next(model.parameters()).device
    g = _generator(device, seed)
    x = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)  # (n, T)
    for _ in range(max_new_tokens):
        logits = model(x[:, -model.config.seq_len:])[:, -1]  # (n, V)
        token, _ = _draw(logits, temperature, top_k, g)
        x = torch.cat((x, token[:, None]), dim=1)
    return x


@torch.no_grad()
def sample_mdm(model: Transformer, prompt: list[int] | None = None, *, num_samples: int = 1,
               length: int | None = None, steps: int = 64, order: UnmaskOrder = "confident",
               temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> torch.Tensor:
    """-> (num_samples, length): the prompt, then tokens unmasked over `steps` model calls."""
    c = model.config
    length = length or c.seq_len
    prompt = prompt or []
    if not len(prompt) < length <= c.seq_len:
        raise ValueError(f"need len(prompt)={len(prompt)} < length={length} <= seq_len={c.seq_len}")
    if order not in ("random", "confident"):
        raise ValueError(f"order must be 'random' or 'confident', got {order!r}")
    device = next(model.parameters()).device
    g = _generator(device, seed)
    mask_id = c.vocab_size
    x = torch.full((num_samples, length), mask_id, dtype=torch.long, device=device)
    x[:, : len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
    to_reveal = length - len(prompt)
    steps = max(1, min(steps, to_reveal))
    revealed = 0
    for s in range(steps):
        count = round(to_reveal * (s + 1) / steps) - revealed  # an even schedule over the steps
        revealed += count
        masked = x == mask_id  # (n, T)
        tokens, probs = _draw(model(x), temperature, top_k, g)  # (n, T) each
        if order == "confident":
            score = probs
        else:
            score = torch.rand(x.shape, generator=g, device=device)
        score = score.masked_fill(~masked, float("-inf"))
        chosen = score.topk(count, dim=1).indices  # (n, count) masked positions to reveal now
        x.scatter_(1, chosen, tokens.gather(1, chosen))
    return x
