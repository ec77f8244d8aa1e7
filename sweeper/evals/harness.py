"""The lm-evaluation-harness model class for sweeper checkpoints of every family (`sweeper`).

lm-eval hands a model flat lists of requests (lm_eval.api.model.LM): `loglikelihood` of a
continuation given a context, `loglikelihood_rolling` of a whole text, and `generate_until`.
`SweeperLM` answers them from a loaded Transformer, its TrialConfig and the trial's own tokenizer
(trained BPE, GPT-2 or a synthetic source's symbols); tokenization of a context and continuation,
and the empty context, are lm-eval's (TemplateLM). Every context is read after an end-of-document
token, as a document starts in training, and a context longer than a window is cut from the left.

How each family answers (the estimators and their sources: sweeper.evals.estimators):
- ar, and dual where the trial's `dual_val_loss` is ar (read causally): `loglikelihood` exact,
  greedy when every continuation token is the argmax; `loglikelihood_rolling` exact, in windows of
  seq_len; `generate_until` by sampling, left to right (greedy unless the task asks to sample).
- mdm, bd3lm, and dual read as mdm: `loglikelihood` is minus the Monte-Carlo ELBO of the
  continuation given the context (`mc_samples` stratified draws keyed by the context), a lower
  bound on the log-likelihood; it is greedy when confidence-ordered greedy unmasking of the
  continuation (one token per step, the paper's LAMBADA decoding) gives it back.
  `loglikelihood_rolling` is minus the ELBO of the whole text, window by window: a bound, not the
  exact value. `generate_until` unmasks at most seq_len - 1 new tokens after the context, most
  confident first.

The model and the samplers come in from the caller (the layer above loads checkpoints), so this
module imports neither the trainer nor the data layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from sweeper.evals.estimators import causal_scores, diffusion_nelbo, windows
from sweeper.trial import TrialConfig

GENERATE_CHUNK = 32  # ar generates this many tokens between looks for a stop string
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default when a task names none


@dataclass(frozen=True, slots=True)
class Samplers:
    """sweeper.trainer's sample_ar, sample_mdm and sample_bd3lm (their signatures)."""

    ar: Callable[..., torch.Tensor]
    mdm: Callable[..., torch.Tensor]
    bd3lm: Callable[..., torch.Tensor]


def text_codec(tokenizer: Any) -> Callable[[str], list[int]]:
    """text -> ids for a sweeper tokenizer: a `tokenizers` one (trained BPE, pretrained), or a
    synthetic source's symbols, written as whitespace-separated numbers (`<eod>` for the end of a
    document, as `decode` writes them). Raises ValueError for a word that is not a symbol."""
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:
        return lambda text: list(inner.encode(text, add_special_tokens=False).ids)
    symbols = tokenizer.symbols

    def encode(text: str) -> list[int]:
        ids = []
        for word in text.split():
            if word == "<eod>":
                ids.append(tokenizer.eod_id)
            elif word.isdigit() and int(word) < symbols:
                ids.append(int(word))
            else:
                raise ValueError(f"{word[:40]!r} is not one of the {symbols} symbols of this tokenizer")
        return ids

    return encode


def read_as(config: TrialConfig) -> str:
    """How a model of this trial is scored: 'ar', 'mdm' or 'bd3lm' (dual: as its val/loss reads it)."""
    if config.family == "dual":
        return config.dual_val_loss
    return config.family


@register_model("sweeper")
class SweeperLM(TemplateLM):
    """A sweeper checkpoint as an lm-eval model (module docstring). `model` is in eval mode on its
    device; `tokenizer` has `decode`, `eod_id` and `vocab_size` (sweeper.data); `mc_samples` draws
    per diffusion request. `on_progress(n)`, if set, is called as requests are answered."""

    def __init__(self, model: torch.nn.Module, config: TrialConfig, tokenizer: Any, *, samplers: Samplers,
                 mc_samples: int = 32, on_progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.model, self.config, self.samplers = model, config, samplers
        self.sweeper_tokenizer = tokenizer
        self.encode = text_codec(tokenizer)
        self.mc_samples, self.kind = mc_samples, read_as(config)
        self.on_progress = on_progress or (lambda n: None)

    # --- what TemplateLM asks for -------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return int(self.sweeper_tokenizer.eod_id)

    @property
    def tokenizer_name(self) -> str:
        return f"sweeper:{self.sweeper_tokenizer.description}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.encode(string)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=True)  # the caller shows progress (on_progress)

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              **kwargs: Any) -> list[tuple[float, bool]]:
        return self.score([(context, continuation) for _, context, continuation in requests])

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        return [logprob for logprob, _ in self.score([([], self.encode(r.args[0])) for r in requests])]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in requests:
            context, options = request.args[0], dict(request.args[1] if len(request.args) > 1 else {})
            until = options.get("until") or [self.sweeper_tokenizer.decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(options.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            temperature = float(options.get("temperature", 0.0)) if options.get("do_sample") else 0.0
            text = self._generate(self._with_eod(self.encode(context)), max_new, temperature, until)
            cut = min((i for i in (text.find(u) for u in until if u) if i >= 0), default=len(text))
            out.append(text[:cut])
            self.on_progress(1)
        return out

    # --- scoring -------------------------------------------------------------------------------------

    def _with_eod(self, context: Sequence[int]) -> list[int]:
        context = list(context)
        return context if context[:1] == [self.eot_token_id] else [self.eot_token_id, *context]

    def score(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (log-likelihood in nats, greedy), module docstring;
        an empty continuation scores (0, True)."""
        seq_len = self.config.seq_len
        if self.kind == "ar":
            pieces = [list(windows(self._with_eod(c), x, seq_len + 1)) if x else [] for c, x in pairs]
            flat = [p for ps in pieces for p in ps]
            scores = iter(causal_scores(self.model, flat, causal=True))
            out = []
            for ps in pieces:
                got = [next(scores) for _ in ps]
                out.append((sum(s for s, _ in got), all(g for _, g in got)))
                self.on_progress(1)
            return out
        out = []
        block_size = self.config.block_size if self.kind == "bd3lm" else None
        for context, continuation in pairs:
            total, greedy = 0.0, True
            for ctx, piece in (windows(self._with_eod(context), continuation, seq_len) if continuation else ()):
                total -= diffusion_nelbo(self.model, ctx, piece, num_mc=self.mc_samples, block_size=block_size)
                greedy = greedy and self._unmask(ctx, len(piece), 0.0) == piece
            out.append((total, greedy))
            self.on_progress(1)
        return out

    def _unmask(self, prompt: list[int], count: int, temperature: float) -> list[int]:
        """Diffusion families: `count` tokens after `prompt` (prompt + count <= seq_len), unmasked
        one per step, most confident first."""
        length = len(prompt) + count
        if self.kind == "bd3lm":
            ids = self.samplers.bd3lm(self.model, self.config.block_size, prompt, length=length,
                                      steps=self.config.block_size, order="confident", temperature=temperature)
        else:
            ids = self.samplers.mdm(self.model, prompt, length=length, steps=count, order="confident",
                                    temperature=temperature)
        return ids[0, len(prompt):].tolist()

    def _generate(self, prompt: list[int], max_new: int, temperature: float, until: list[str]) -> str:
        seq_len = self.config.seq_len
        if self.kind != "ar":
            count = max(1, min(max_new, seq_len - 1))
            return self.sweeper_tokenizer.decode(self._unmask(prompt[-(seq_len - count):], count, temperature))
        ids = prompt[-seq_len:]
        new: list[int] = []
        while len(new) < max_new:
            chunk = min(GENERATE_CHUNK, max_new - len(new))
            out = self.samplers.ar(self.model, ids, max_new_tokens=chunk, temperature=temperature,
                                   seed=len(new))[0, len(ids):].tolist()
            new += out
            ids = (ids + out)[-seq_len:]
            if any(u and u in self.sweeper_tokenizer.decode(new) for u in until):
                break
        return self.sweeper_tokenizer.decode(new)
