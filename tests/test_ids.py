"""Trial ids: stable across formatting, units, key order and profiles; sensitive to what is trained."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import MINIMAL, SMOKE_SPEC
from sweeper.plan import plan_sweep
from sweeper.profile import load_profile
from sweeper.spec import load_spec

REPO = Path(__file__).resolve().parent.parent


def ids(path: Path, profile: str = "local") -> dict[str, str]:
    plan = plan_sweep(load_spec(path), load_profile(REPO / "backends" / f"{profile}.yaml"))
    return {t.name: t.id for t in plan.trials}


def test_smoke_ids_are_pinned() -> None:
    # These ids key dedupe and resume in every tracking store: changing them orphans finished trials.
    assert ids(SMOKE_SPEC) == {"ar-smoke-1L-U4k-e2": "0ac65a38acd7", "mdm-smoke-1L-U4k-e2": "5af7b9c6ff36"}


# Every shipped spec's ids: the count and the sha256 of the sorted ids, one per line, planned under
# backends/local.yaml. Computed before the package was restructured into layers (issue 12); a change
# here orphans every finished trial of that spec in every tracking store.
PINNED_IDS = {
    "sweeps/chinchilla.yaml": (52, "c36d3b5c64332dfb6a79bdf7ae8ee409da8afed232ecdc0f8eea8e4706a4d5fa"),
    "sweeps/crossover-cpu.yaml": (6, "0f560536bbfc7ee38ef3c28d8db8f6e59cdc2d14743bbe83fee88297eccdf7b8"),
    "sweeps/grid.yaml": (200, "6a901fd07043dcf45abc660eaf448b45d54afcc36b58904e1ad811d04e330fc7"),
    "sweeps/quickstart.yaml": (45, "a967ce581f1585d240de80edd5b2d95fedc188d5e6023e04d08dbc8a67eca6a2"),
    "tests/specs/device_run.yaml": (2, "4b510bd5d0b0235a58a2133f3727d176ee8e62e72aa7f5ca589728743478c8eb"),
    "tests/specs/smoke.yaml": (2, "ae44f7f0424c84ef20bce315611fc83f02701adc2a884e84076f9c1fe4075eac"),
}


def test_every_shipped_spec_keeps_its_ids() -> None:
    shipped = sorted(str(p.relative_to(REPO)) for pattern in ("sweeps/*.yaml", "tests/specs/*.yaml")
                     for p in REPO.glob(pattern))
    assert shipped == sorted(PINNED_IDS), "pin the ids of a new spec here (count, sha256 of its sorted ids)"
    for spec, pinned in PINNED_IDS.items():
        trial_ids = sorted(ids(REPO / spec).values())
        assert (len(trial_ids), hashlib.sha256("\n".join(trial_ids).encode()).hexdigest()) == pinned, spec


def test_same_ids_under_every_profile() -> None:
    for spec in ("sweeps/quickstart.yaml", "sweeps/grid.yaml", "tests/specs/smoke.yaml"):
        assert ids(REPO / spec, "local") == ids(REPO / spec, "cluster")


def test_units_formatting_and_key_order_do_not_change_ids(write_spec) -> None:
    base = ids(write_spec(MINIMAL, "a.yaml"))
    rewritten = """\
    # the same sweep, written differently
    name: t
    version: 1
    models:
      tiny:
        heads: 2
        h_f: 64
        layers: 1
        d_model: 32
    train: {batch_sequences: 8, lr_peak: 0.0002, lr_min: 2.0e-5, seed: 1234}
    grid: {epochs: [1.0, 2], unique_tokens: 4000, model: [tiny], family: [ar, mdm]}
    data:
      validation_tokens: 1_024
      seq_len: 16
      tokenizer: {vocab_size: 65, kind: symbols}
      train: {symbols: 64, kind: synthetic, states: 64}
    """
    assert ids(write_spec(rewritten, "b.yaml")) == base


def test_how_settings_do_not_change_ids(write_spec) -> None:
    base = ids(write_spec(MINIMAL, "a.yaml"))
    how = MINIMAL.replace("batch_sequences: 8", "batch_sequences: 8\n  compile: false\n  checkpoint_every_minutes: 5")
    assert ids(write_spec(how, "b.yaml")) == base


def test_names_of_models_do_not_change_ids(write_spec) -> None:
    base = ids(write_spec(MINIMAL, "a.yaml"))
    renamed = MINIMAL.replace("tiny", "small")
    assert set(ids(write_spec(renamed, "b.yaml")).values()) == set(base.values())


def test_what_is_trained_changes_ids(write_spec) -> None:
    base = set(ids(write_spec(MINIMAL, "a.yaml")).values())
    changes = [
        ("batch_sequences: 8", "batch_sequences: 8\n  lr_peak: 3e-4"),
        ("batch_sequences: 8", "batch_sequences: 8\n  seed: 7"),
        ("batch_sequences: 8", "batch_sequences: 8\n  precision: fp32"),
        ("batch_sequences: 8", "batch_sequences: 8\n  mdm_eval_samples: 8"),
        ("batch_sequences: 8", "batch_sequences: 16"),
        ("seq_len: 16", "seq_len: 32"),
        ("validation_tokens: 1024", "validation_tokens: 2048"),
        ("symbols: 64}", "symbols: 64, seed: 3}"),
        ("unique_tokens: 4k", "unique_tokens: 5k"),
        ("d_model: 32", "d_model: 64"),
    ]
    for i, (old, new) in enumerate(changes):
        changed = set(ids(write_spec(MINIMAL.replace(old, new), f"c{i}.yaml")).values())
        assert changed.isdisjoint(base), new


NUMBER_SPELLINGS = {
    4000: ["4k", "4000", "4_000", "4.0k", "4e3", "0.004M"],
    0.0002: ["2e-4", "0.0002", "2.0e-4", "0.2e-3", "200e-6"],
}


@settings(max_examples=40, deadline=None)
@given(
    unique=st.sampled_from(NUMBER_SPELLINGS[4000]),
    lr=st.sampled_from(NUMBER_SPELLINGS[0.0002]),
    order=st.permutations(["batch_sequences: 8", "lr_peak: {lr}", "seed: 1234", "dropout: 0.1"]),
    flow=st.booleans(),
)
def test_ids_are_invariant_to_spelling(tmp_path_factory, unique: str, lr: str, order: list[str], flow: bool) -> None:
    folder = tmp_path_factory.mktemp("spelling")
    reference = folder / "reference.yaml"
    reference.write_text(MINIMAL)
    items = [item.format(lr=lr) for item in order]
    train = ("train: {" + ", ".join(items) + "}\n") if flow else "train:\n" + "".join(f"  {i}\n" for i in items)
    text = MINIMAL.replace("train:\n  batch_sequences: 8\n", train).replace("unique_tokens: 4k", f"unique_tokens: {unique}")
    variant = folder / "variant.yaml"
    variant.write_text(text)
    assert ids(variant) == ids(reference)
