"""The estimators behind every lm-eval request: ar's log-likelihood is the chain rule exactly; the
diffusion families' Monte-Carlo ELBO is unbiased where the exact value is known, its spread falls at
least as fast as 1/√samples, and one question's choices share their draws."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sweeper.evals.estimators import context_key, diffusion_nelbo, stratified_draws, windows
from sweeper.evals.harness import text_codec

from .helpers import ByteTokenizer, config, lm, model_of, symbols


@torch.no_grad()
def direct_logprob(model: torch.nn.Module, tokens: list[int], first: int) -> float:
    """Σ log p(tokens[i] | tokens[:i]) for i >= first, from one causal pass over the whole sequence."""
    logits = model(torch.tensor([tokens[:-1]]), causal=True)[0].double()
    logprobs = F.log_softmax(logits, dim=-1)
    return float(sum(logprobs[i - 1, tokens[i]] for i in range(first, len(tokens))))


def test_ar_loglikelihood_is_the_sum_of_log_probabilities() -> None:
    c = config(family="ar", vocab_size=257)
    model = model_of(c, seed=1)
    harness = lm(c, ByteTokenizer(), model)
    requests = [SimpleNamespace(args=("The cat sat on", " the mat")), SimpleNamespace(args=("", "Hello")),
                SimpleNamespace(args=("Question: 2+2?\nAnswer:", " four"))]
    got = harness.loglikelihood(requests)
    for request, (logprob, _) in zip(requests, got):
        context, continuation = request.args
        ids = [256, *context.encode()]  # the end-of-document token a document starts after
        whole = ids + list(continuation.encode())
        # float32 logits from batches of other shapes: kernels round differently per CPU kind (an AVX2
        # machine gave 1.1e-6 apart on -75.3)
        assert logprob == pytest.approx(direct_logprob(model, whole, len(ids)), abs=1e-5)
    # greedy: the continuation the model's own argmax gives back
    prompt = [256, *b"ab"]
    best = int(model(torch.tensor([prompt]), causal=True)[0, -1].argmax())
    assert harness.score([(prompt, [best])])[0][1] is True
    assert harness.score([(prompt, [(best + 1) % 256])])[0][1] is False


def test_ar_cuts_a_long_context_from_the_left_and_scores_a_long_continuation_by_windows() -> None:
    c = config(family="ar", vocab_size=257, seq_len=32)
    model = model_of(c, seed=2)
    harness = lm(c, ByteTokenizer(), model)
    context, continuation = list(range(40, 90)), list(range(100, 160))  # 50 + 60 tokens, seq_len 32
    expected = 0.0
    for ctx, piece in windows([256, *context], continuation, 33):
        assert len(ctx) + len(piece) <= 33 and ctx
        expected += direct_logprob(model, ctx + piece, len(ctx))
    assert harness.score([(context, continuation)])[0][0] == pytest.approx(expected, abs=1e-6)
    pieces = list(windows([1, 2, 3], list(range(10, 20)), 5))
    assert [p for _, p in pieces] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19]]
    assert [c for c, _ in pieces] == [[3], [13], [15, 16, 17]]


class ConstantLogits(torch.nn.Module):
    """A 'model' whose logits depend on nothing: -log p(continuation) is Σ -log softmax(logits)[x_i]."""

    def __init__(self, vocab_size: int, seq_len: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size, seq_len=seq_len)
        self.logits = torch.nn.Parameter(torch.randn(vocab_size, generator=torch.Generator().manual_seed(0)) * 2)

    def forward(self, idx: torch.Tensor, select: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        rows = int(select.sum()) if select is not None else idx.numel()
        return self.logits.expand(rows, -1)


@pytest.mark.parametrize("block_size", [None, 4])
def test_the_diffusion_estimator_is_unbiased_and_its_spread_falls_as_one_over_root_samples(block_size) -> None:
    model = ConstantLogits(vocab_size=16, seq_len=32)
    continuation = [3, 7, 1, 12, 5, 9]
    exact = -float(F.log_softmax(model.logits.detach().double(), dim=-1)[continuation].sum())
    spreads = {}
    for samples in (2, 8, 32):
        estimates = torch.tensor([diffusion_nelbo(model, [15, k % 16, k // 16], continuation, num_mc=samples,
                                                  block_size=block_size) for k in range(256)])
        mean, sd = float(estimates.mean()), float(estimates.std())
        assert abs(mean - exact) < 4 * sd / math.sqrt(len(estimates)), (samples, mean, exact, sd)
        spreads[samples] = sd
    # no slower than 1/√samples (stratifying t makes it faster), with room for sampling noise
    assert spreads[8] * math.sqrt(8) <= 1.25 * spreads[2] * math.sqrt(2)
    assert spreads[32] * math.sqrt(32) <= 1.25 * spreads[8] * math.sqrt(8)


def test_one_questions_choices_share_their_draws() -> None:
    context = [64, 3, 4, 5]
    p1, u1 = stratified_draws(context_key(context), 32, 16)
    p2, u2 = stratified_draws(context_key(list(context)), 32, 16)
    assert torch.equal(p1, p2) and torch.equal(u1, u2)
    p3, _ = stratified_draws(context_key([64, 3, 4, 6]), 32, 16)
    assert not torch.equal(p1, p3)
    strata = torch.floor((p1[:, 0] - 1e-3) / (1 - 1e-3) * 32)
    assert strata.tolist() == list(range(32))  # one t in each stratum
    c = config(family="mdm")
    model = model_of(c, seed=3)
    first = diffusion_nelbo(model, context, [7, 8], num_mc=8)
    assert diffusion_nelbo(model, context, [7, 8], num_mc=8) == first  # the same noise every time


def test_symbol_text_reads_as_the_symbols_tokenizer_writes_it() -> None:
    tokenizer = symbols()
    encode = text_codec(tokenizer)
    assert encode("3 17 <eod> 63") == [3, 17, 64, 63]
    assert encode(tokenizer.decode([5, 64, 6])) == [5, 64, 6]
    with pytest.raises(ValueError, match="'cat' is not one of the 64 symbols"):
        encode("3 cat")
