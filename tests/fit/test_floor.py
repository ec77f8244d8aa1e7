"""A synthetic source's exact entropy rate is the floor of every loss, set beside the fitted E."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sweeper.data.synthetic import entropy_rate_nats
from sweeper.cli import fit as command
from sweeper.fit import analysis, render, report
from sweeper.spec import SyntheticSource, TokenizerSpec

from .synthetic import AR_TRUTH, MDM_TRUTH, draw, join

SOURCE = SyntheticSource(kind="synthetic", states=256, symbols=128, branching=2, emissions=2,
                         document_length=256, seed=0)


def spec(source, tokenizer: str = "symbols", validation=None) -> SimpleNamespace:
    tokenizer_spec = TokenizerSpec(kind=tokenizer, vocab_size=129) if tokenizer == "symbols" \
        else SimpleNamespace(kind=tokenizer)
    return SimpleNamespace(data=SimpleNamespace(train=source, validation=validation,
                                                tokenizer=tokenizer_spec))


def test_the_floor_is_the_synthetic_sources_entropy_rate() -> None:
    rate = entropy_rate_nats(SOURCE)
    assert 0 < rate < np.log(128)
    assert command.entropy_floor([spec(SOURCE)]) == rate
    assert command.entropy_floor([spec(SOURCE), spec(SOURCE)]) == rate
    # a text tokenizer reads symbols as characters: H per token is then unknown
    assert command.entropy_floor([spec(SOURCE, tokenizer="train_bpe")]) is None
    assert command.entropy_floor([spec(SimpleNamespace(kind="bundled"))]) is None
    other = dataclasses.replace(SOURCE, seed=1)
    assert command.entropy_floor([spec(SOURCE), spec(other)]) is None


def test_the_report_draws_the_floor_and_sets_e_beside_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = join(draw("ar", AR_TRUTH, rng, single=30, repeated=45, noise=0.005),
                draw("mdm", MDM_TRUTH, rng, single=30, repeated=45, noise=0.005))
    result = analysis.analyse(data, {"ar": 75, "mdm": 75},
                              analysis.FitOptions(resamples=10, cv_folds=4, profiles=False))
    result = dataclasses.replace(result, entropy_rate=1.8)
    sentence = render.floor_sentence(result)
    e_ar = result.families["ar"].estimates["E"].value
    assert sentence.startswith("The validation source's entropy rate H = 1.8000 nats per token")
    assert f"ar {render.number(e_ar)}" in sentence
    written = report.write_report(result, tmp_path, source="synthetic", loss="csv", curves=None)
    assert "entropy rate H = 1.8000" in written.markdown.read_text(encoding="utf-8")
    assert json.loads(json.dumps(render.to_json(result, source="x", loss="csv")))[
        "entropy_rate"] == pytest.approx(1.8)
    assert (tmp_path / "figures" / "loss_vs_flops.png").exists()
