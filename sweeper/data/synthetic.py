"""The synthetic source: a seeded hidden-Markov process whose entropy rate is known exactly.

Each of `states` states has `branching` outgoing moves (the first always to the next state round a
cycle, so every state is reachable and the stationary distribution is unique; the rest to distinct
random states), chosen with Dirichlet(1) probabilities. A move emits one of `emissions` symbols, again
with Dirichlet(1) probabilities, and the moves out of one state emit disjoint symbols. So the symbol
seen names the move, and from a known state the whole state path follows from the symbols: the
process is unifilar, and its entropy rate per symbol is exactly

    H = sum_s pi(s) * [ H(move | s) + sum_m P(m | s) * H(symbol | s, m) ]      (nats)

(Cover & Thomas, Elements of Information Theory, 2nd ed., Thm. 4.5.1: the lower bound
H(Y_n | Y^{n-1}, S_1) equals the sum above for every n once the state path is a function of S_1 and
the symbols.) A reader does not know the state at first and must infer it from context, which is
where a model's skill shows: the first symbols of a document cost more than H, the rest tend to H.

Documents are `document_length` symbols each, starting from the stationary distribution. They are
generated in blocks of BLOCK_DOCUMENTS, each block seeded by (seed, stream, block), so any prefix of
the stream is the same however much is generated; `stream` 0 feeds the train pools and 1 the
validation set, which are therefore independent draws from the same process.

The `symbols` tokenizer maps symbol s to id s and the end of a document to id `symbols`. Under it, H
is the irreducible loss per symbol; a text tokenizer sees symbol s as the character U+4E00 + s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sweeper.spec import SyntheticSource

BLOCK_DOCUMENTS = 256
TEXT_BASE = 0x4E00  # CJK unified ideographs: 20,992 letters, one per symbol
TEXT_SYMBOLS = 20_992


@dataclass(frozen=True, slots=True)
class HiddenMarkov:
    successors: np.ndarray  # (states, branching) next state of each move
    move_probs: np.ndarray  # (states, branching)
    emitted: np.ndarray  # (states, branching, emissions) symbol ids, disjoint within a state
    emission_probs: np.ndarray  # (states, branching, emissions)
    stationary: np.ndarray  # (states,)

    @property
    def states(self) -> int:
        return len(self.stationary)


def build(source: SyntheticSource) -> HiddenMarkov:
    rng = np.random.default_rng([source.seed, 0x5EED])
    states, branching, emissions = source.states, source.branching, source.emissions
    successors = np.empty((states, branching), dtype=np.int64)
    emitted = np.empty((states, branching, emissions), dtype=np.int64)
    for s in range(states):
        cycle_next = (s + 1) % states
        # branching - 1 distinct states other than cycle_next: draw positions in that list of the
        # states - 1 others (what Generator.choice over the list itself draws) and map them back
        picks = rng.choice(states - 1, size=branching - 1, replace=False)
        successors[s, 0] = cycle_next
        successors[s, 1:] = picks + (picks >= cycle_next)
        emitted[s] = rng.choice(source.symbols, size=branching * emissions, replace=False).reshape(branching, emissions)
    move_probs = rng.dirichlet(np.ones(branching), size=states)
    emission_probs = rng.dirichlet(np.ones(emissions), size=(states, branching))
    transition = np.zeros((states, states))
    np.add.at(transition, (np.repeat(np.arange(states), branching), successors.ravel()), move_probs.ravel())
    return HiddenMarkov(successors, move_probs, emitted, emission_probs, _stationary(transition))


def _stationary(transition: np.ndarray) -> np.ndarray:
    """pi with pi P = pi, sum pi = 1 (unique: the cycle makes the chain irreducible)."""
    n = len(transition)
    system = np.vstack([transition.T - np.eye(n), np.ones(n)])
    target = np.zeros(n + 1)
    target[-1] = 1.0
    pi = np.linalg.lstsq(system, target, rcond=None)[0]
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats along the last axis."""
    safe = np.where(probs > 0, probs, 1.0)
    return -(probs * np.log(safe)).sum(axis=-1)


def entropy_rate_nats(source: SyntheticSource) -> float:
    """The exact entropy rate per symbol, in nats (module docstring)."""
    hmm = build(source)
    per_state = _entropy(hmm.move_probs) + (hmm.move_probs * _entropy(hmm.emission_probs)).sum(axis=1)
    return float(hmm.stationary @ per_state)


def documents(source: SyntheticSource, stream: int) -> Iterator[np.ndarray]:
    """Endless (BLOCK_DOCUMENTS, document_length) blocks of symbol ids."""
    hmm = build(source)
    dtype = np.uint16 if source.symbols <= 2**16 else np.uint32
    cum_moves = np.cumsum(hmm.move_probs, axis=1)
    cum_emissions = np.cumsum(hmm.emission_probs, axis=2)
    block = 0
    while True:
        rng = np.random.default_rng([source.seed, stream, block])
        yield _generate(hmm, rng, cum_moves, cum_emissions, BLOCK_DOCUMENTS, source.document_length, dtype)
        block += 1


def _generate(hmm: HiddenMarkov, rng: np.random.Generator, cum_moves: np.ndarray, cum_emissions: np.ndarray,
              count: int, length: int, dtype: type) -> np.ndarray:
    out = np.empty((count, length), dtype=dtype)
    state = rng.choice(hmm.states, size=count, p=hmm.stationary)
    uniforms = rng.random((length, 2, count))
    last_move, last_symbol = cum_moves.shape[1] - 1, cum_emissions.shape[2] - 1
    for t in range(length):  # vectorised over the block's documents
        move = np.minimum((uniforms[t, 0, :, None] > cum_moves[state]).sum(axis=1), last_move)
        pick = np.minimum((uniforms[t, 1, :, None] > cum_emissions[state, move]).sum(axis=1), last_symbol)
        out[:, t] = hmm.emitted[state, move, pick]
        state = hmm.successors[state, move]
    return out


def as_text(symbols: np.ndarray) -> str:
    """A document as text for a text tokenizer: symbol s is the letter U+4E00 + s."""
    return (symbols.astype(np.uint32) + TEXT_BASE).astype("<u4").tobytes().decode("utf-32-le")


def next_symbols_task(source: SyntheticSource, *, questions: int, context: int, choice: int,
                      distractors: str = "uniform", stream: int = 2, seed: int = 2) -> list[dict[str, object]]:
    """A multiple-choice task on unseen documents of `source` (stream 2: pools read stream 0 and a
    validation set stream 1): after `context` symbols of a document, pick the `choice` symbols that
    follow among four. The three wrong choices are `choice` symbols drawn uniformly ("uniform": a
    model that learned which symbol may follow which tells them apart) or runs of the source taken
    from other documents ("source": each is a likely run of the process on its own, so only a model
    that tracks the hidden state through the context picks the true one). Chance is 1/4. Each
    question is an lm-eval document: {"id", "context", "choices", "label"}, symbols written as
    space-separated numbers (the symbol tokenizer's text form)."""
    if distractors not in ("uniform", "source"):
        raise ValueError(f"distractors must be uniform or source, got {distractors!r}")
    block = next(documents(source, stream=stream))
    if context + choice > block.shape[1]:
        raise ValueError(f"context + choice = {context + choice} symbols exceed a document ({block.shape[1]})")
    rng = np.random.default_rng(seed)
    out: list[dict[str, object]] = []
    for i in range(questions):
        doc = block[i % len(block)]
        start = int(rng.integers(0, len(doc) - context - choice))
        prompt, truth = doc[start:start + context], doc[start + context:start + context + choice]
        if distractors == "uniform":
            wrong = [rng.integers(0, source.symbols, choice).tolist() for _ in range(3)]
        else:
            wrong = []
            while len(wrong) < 3:
                other = block[int(rng.integers(0, len(block)))]
                at = int(rng.integers(0, len(other) - choice))
                run = other[at:at + choice].tolist()
                if run != truth.tolist() and run not in wrong:
                    wrong.append(run)
        choices = [truth.tolist(), *wrong]
        order = rng.permutation(4)
        out.append({"id": f"symbols-{i}", "context": " ".join(map(str, prompt.tolist())),
                    "choices": [" ".join(map(str, choices[k])) for k in order],
                    "label": int(np.flatnonzero(order == 0)[0])})
    return out
