"""The synthetic source: its reported entropy rate is what the generated tokens actually carry."""

from __future__ import annotations

import numpy as np
import pytest

from sweeper.storage import StorageLocation
from sweeper.data import entropy_rate_nats, open_pool, prepare
from sweeper.data.synthetic import as_text, build, documents
from sweeper.spec.schema import FieldError
from sweeper.spec import SyntheticSource

from .helpers import synthetic_data

BURN_IN = 64  # symbols a reader needs to work out the hidden state; the rate is the limit after


def forward_log_loss(source: SyntheticSource, docs: np.ndarray) -> np.ndarray:
    """-log P(y_t | y_<t) for every symbol of every document, by the forward algorithm on the hidden
    states (starting from the stationary distribution): (documents, length)."""
    hmm = build(source)
    # joint[y, s, s']: probability of emitting y while moving from s to s'.
    joint = np.zeros((source.symbols, hmm.states, hmm.states))
    for s in range(hmm.states):
        for m in range(source.branching):
            for k in range(source.emissions):
                probability = hmm.move_probs[s, m] * hmm.emission_probs[s, m, k]
                joint[hmm.emitted[s, m, k], s, hmm.successors[s, m]] += probability
    belief = np.tile(hmm.stationary, (len(docs), 1))
    losses = np.empty(docs.shape)
    for t in range(docs.shape[1]):
        belief = np.einsum("ds,dst->dt", belief, joint[docs[:, t]])
        p = belief.sum(axis=1)
        belief /= p[:, None]
        losses[:, t] = -np.log(p)
    return losses


@pytest.mark.parametrize("settings", [
    {"states": 16, "symbols": 64, "branching": 2, "emissions": 2, "seed": 0},
    {"states": 8, "symbols": 40, "branching": 3, "emissions": 4, "seed": 3},
])
def test_entropy_rate_matches_an_estimate_from_the_cached_tokens(settings: dict, storage: StorageLocation) -> None:
    data = synthetic_data(**settings)
    manifest = prepare(data, [600 * 257], storage).manifest
    source = data.train
    rate = entropy_rate_nats(source)
    assert manifest.entropy_rate_nats_per_symbol == pytest.approx(rate)
    # The pool is whole documents of 256 symbols + end of document, starting on a boundary.
    pool = np.asarray(open_pool(manifest, 600 * 257)).reshape(600, 257)
    assert (pool[:, -1] == source.symbols).all() and (pool[:, :-1] < source.symbols).all()
    losses = forward_log_loss(source, pool[:, :-1].astype(np.int64))[:, BURN_IN:]
    per_document = losses.mean(axis=1)
    estimate, standard_error = per_document.mean(), per_document.std(ddof=1) / np.sqrt(len(per_document))
    assert abs(estimate - rate) < max(4 * standard_error, 0.01 * rate)
    # Context decides much of each symbol: far below the entropy of the symbol frequencies.
    counts = np.bincount(pool[:, :-1].ravel(), minlength=source.symbols) / pool[:, :-1].size
    unigram = -(counts[counts > 0] * np.log(counts[counts > 0])).sum()
    assert rate < 0.7 * unigram


def test_documents_do_not_depend_on_how_many_are_drawn() -> None:
    source = SyntheticSource(kind="synthetic", states=8, symbols=32, document_length=50, seed=7)
    first = next(documents(source, 0))
    stream = documents(source, 0)
    assert np.array_equal(next(stream), first) and not np.array_equal(next(stream), first)
    assert not np.array_equal(next(documents(source, 1)), first)
    assert as_text(first[0][:3]) == "".join(chr(0x4E00 + int(s)) for s in first[0][:3])


def test_a_state_needs_room_for_disjoint_symbols() -> None:
    with pytest.raises(FieldError, match=r"branching x emissions = 12 exceeds symbols 10"):
        SyntheticSource(kind="synthetic", states=8, symbols=10, branching=3, emissions=4)


def _successors_drawn_from_the_list(source: SyntheticSource) -> np.ndarray:
    """The successor draw as first written: Generator.choice over the explicit list of the states
    other than the cycle's next, then the symbols; build() draws positions in that list instead."""
    rng = np.random.default_rng([source.seed, 0x5EED])
    out = np.empty((source.states, source.branching), dtype=np.int64)
    for s in range(source.states):
        cycle_next = (s + 1) % source.states
        others = np.array([t for t in range(source.states) if t != cycle_next], dtype=np.int64)
        out[s, 0] = cycle_next
        out[s, 1:] = rng.choice(others, size=source.branching - 1, replace=False)
        rng.choice(source.symbols, size=source.branching * source.emissions, replace=False)
    return out


@pytest.mark.parametrize("states,branching,seed", [(1, 1, 0), (2, 2, 0), (5, 3, 7), (64, 4, 1), (300, 2, 0)])
def test_a_source_draws_the_same_process_as_before(states: int, branching: int, seed: int) -> None:
    """Same settings, same tokens: a cached pool and every trial id trained on it stay true."""
    source = SyntheticSource(kind="synthetic", states=states, symbols=128, branching=branching,
                             emissions=2, document_length=64, seed=seed)
    assert np.array_equal(build(source).successors, _successors_drawn_from_the_list(source))
