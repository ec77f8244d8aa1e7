"""Generation from a trained model of any family.

ar: left to right, temperature and top-k. mdm (PAPER.md): start fully masked, unmask over S steps,
revealing about length/S positions per step, chosen at random or most-confident first, each
revealed token drawn from the model's prediction given everything revealed so far. bd3lm (BD3-LM,
arXiv 2503.09573, Sec. 3): blocks left to right, each unmasked as mdm's sequence is, over S steps of
its own, with block-causal attention to the blocks before it (the clean half of its training
mask). dual samples either way: causally as ar (the default) or as mdm. A prompt fixes the first
tokens in every family. All run the model on the whole sequence each step (no KV cache): simple,
and fast enough for inspecting a model.
"""

from __future__ import annotations

import os
from typing import Literal

import torch

from sweeper.trainer.checkpoint import read_best, read_checkpoint
from sweeper.trainer.errors import CheckpointUnreadable
from sweeper.trial import TrialConfig
from sweeper.trainer.distributed import resolve_device
from sweeper.trainer.model import ModelConfig, Transformer

UnmaskOrder = Literal["random", "confident"]


def load_weights(checkpoint: str | os.PathLike[str], device: str = "cpu",
                 weights: str = "final") -> tuple[Transformer, TrialConfig, int]:
    """(model in eval mode on `device`, its TrialConfig, the tokens those weights trained on) of a
    checkpoint folder (step_*); also one written before completion markers. `weights`: "final" (the
    checkpoint's own) or "best" (the best-validation weights it keeps, see train's keep_best). Raises
    CheckpointUnreadable when it does not load, or holds no best weights when asked for them."""
    config, state = read_checkpoint(checkpoint, marked_only=False)
    tokens = int(state["loop"]["step"]) * config.tokens_per_step
    if weights == "best":
        best = read_best(checkpoint)
        if best is None:
            raise CheckpointUnreadable(str(checkpoint), "keeps no best-validation weights (its trial was trained "
                                                        "without keeping them: evals.at: best was not set)")
        state, tokens = best, int(best["tokens"])
    model = Transformer(ModelConfig.from_trial(config))
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval(), config, tokens


def load_model(checkpoint: str | os.PathLike[str], device: str = "cpu",
               weights: str = "final") -> tuple[Transformer, TrialConfig]:
    """(model, config) of `load_weights`."""
    model, config, _ = load_weights(checkpoint, device, weights)
    return model, config


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
        logits = model(x[:, -model.config.seq_len:], causal=True)[:, -1]  # (n, V); a dual model too
        token, _ = _draw(logits, temperature, top_k, g)
        x = torch.cat((x, token[:, None]), dim=1)
    return x


def _check(c: ModelConfig, prompt: list[int], length: int, order: str) -> None:
    if not len(prompt) < length <= c.seq_len:
        raise ValueError(f"need len(prompt)={len(prompt)} < length={length} <= seq_len={c.seq_len}")
    if order not in ("random", "confident"):
        raise ValueError(f"order must be 'random' or 'confident', got {order!r}")


def _start(model: Transformer, prompt: list[int], num_samples: int, length: int) -> torch.Tensor:
    """(num_samples, length): the prompt, then mask ids."""
    device = next(model.parameters()).device
    x = torch.full((num_samples, length), model.config.vocab_size, dtype=torch.long, device=device)
    x[:, : len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
    return x


def _unmask(model: Transformer, x: torch.Tensor, steps: int, order: UnmaskOrder, temperature: float,
            top_k: int | None, g: torch.Generator, attention_mask: torch.Tensor | None = None) -> None:
    """Reveal every mask id of x (n, T) in place over at most `steps` model calls, an even share
    each, the most confident or random masked positions first."""
    mask_id = model.config.vocab_size
    to_reveal = int((x[0] == mask_id).sum())
    steps = max(1, min(steps, to_reveal))
    revealed = 0
    for s in range(steps):
        count = round(to_reveal * (s + 1) / steps) - revealed  # an even schedule over the steps
        revealed += count
        masked = x == mask_id  # (n, T)
        logits = model(x) if attention_mask is None else model(x, attention_mask=attention_mask)
        tokens, probs = _draw(logits, temperature, top_k, g)  # (n, T) each
        if order == "confident":
            score = probs
        else:
            score = torch.rand(x.shape, generator=g, device=x.device)
        score = score.masked_fill(~masked, float("-inf"))
        chosen = score.topk(count, dim=1).indices  # (n, count) masked positions to reveal now
        x.scatter_(1, chosen, tokens.gather(1, chosen))


@torch.no_grad()
def sample_mdm(model: Transformer, prompt: list[int] | None = None, *, num_samples: int = 1,
               length: int | None = None, steps: int = 64, order: UnmaskOrder = "confident",
               temperature: float = 1.0, top_k: int | None = None, seed: int = 0) -> torch.Tensor:
    """-> (num_samples, length): the prompt, then tokens unmasked over `steps` model calls."""
    c = model.config
    length = length or c.seq_len
    prompt = prompt or []
    _check(c, prompt, length, order)
    x = _start(model, prompt, num_samples, length)
    _unmask(model, x, steps, order, temperature, top_k, _generator(x.device, seed))
    return x


def block_causal_mask(length: int, block_size: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool, True where position i may attend to j: j's block is i's or an earlier one."""
    block = torch.arange(length, device=device) // block_size
    return block[None, :] <= block[:, None]


@torch.no_grad()
def sample_bd3lm(model: Transformer, block_size: int, prompt: list[int] | None = None, *,
                 num_samples: int = 1, length: int | None = None, steps: int = 64,
                 order: UnmaskOrder = "confident", temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0) -> torch.Tensor:
    """-> (num_samples, length): the prompt, then block after block of `block_size` tokens (the last
    may be shorter), each unmasked over at most `steps` model calls given the blocks before it."""
    c = model.config
    length = length or c.seq_len
    prompt = prompt or []
    _check(c, prompt, length, order)
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    x = _start(model, prompt, num_samples, length)
    g = _generator(x.device, seed)
    for end in range(block_size, length + block_size, block_size):
        window = x[:, : min(end, length)]  # a view: revealing in it fills x
        if bool((window == c.vocab_size).any()):
            _unmask(model, window, steps, order, temperature, top_k, g,
                    block_causal_mask(window.shape[1], block_size, x.device))
    return x
