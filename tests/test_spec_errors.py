"""Every class of spec mistake: one clear line naming file:line and key path, exit code 2, no traceback."""

from __future__ import annotations

import time

import pytest

from conftest import MINIMAL
from sweeper.spec import load_spec
from sweeper.spec.nodes import SpecError


def replace(old: str, new: str) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new)


# (case id, spec text, the exact error after "error: ")
CASES = [
    ("unknown key", replace("train:\n", "trian:\n"),
     "spec.yaml:8 trian: unknown key 'trian' in the spec; did you mean 'train'?"),
    ("unknown nested key", replace("  batch_sequences: 8\n", "  batch_sequence: 8\n"),
     "spec.yaml:9 train.batch_sequence: unknown key 'batch_sequence' in train; did you mean 'batch_sequences'?"),
    ("wrong type in an axis", replace("epochs: [1, 2]", "epochs: [1, 2, 4, ten]"),
     "spec.yaml:16 grid.epochs[3]: expected a positive number, got 'ten'"),
    ("wrong type", replace("seq_len: 16", "seq_len: sixteen"),
     "spec.yaml:6 data.seq_len: expected a positive whole number, got 'sixteen'"),
    ("fractional count", replace("seq_len: 16", "seq_len: 16.5"),
     "spec.yaml:6 data.seq_len: expected a positive whole number, got 16.5"),
    ("empty axis", replace("epochs: [1, 2]", "epochs: []"),
     "spec.yaml:16 grid.epochs: empty axis: give at least one value"),
    ("unknown preset", replace("  model: tiny\n", "  model: [tiny, 7m]\n"),
     "spec.yaml:14 grid.model[1]: unknown model preset '7m'; did you mean '7M'?"),
    ("synthetic source too large to build", replace("kind: synthetic, symbols: 64", "kind: synthetic, symbols: 64, states: 8192"),
     "spec.yaml:4 data.train.states: expected a value of at most 4,096, got 8192"),
    ("zero count", replace("batch_sequences: 8", "batch_sequences: 0"),
     "spec.yaml:9 train.batch_sequences: expected a positive whole number, got 0"),
    ("negative number", replace("batch_sequences: 8", "batch_sequences: 8\n  lr_peak: -1e-3"),
     "spec.yaml:10 train.lr_peak: expected a positive number, got '-1e-3'"),
    ("contradiction", replace("batch_sequences: 8", "batch_sequences: 8\n  lr_peak: 1e-4\n  lr_min: 2e-4"),
     "spec.yaml:11 train.lr_min: lr_min 0.0002 is above lr_peak 0.0001"),
    ("epochs below one", replace("epochs: [1, 2]", "epochs: [1, 0.5]"),
     "spec.yaml:16 grid.epochs[1]: epochs must be at least 1, got 0.5 (for less data, lower unique_tokens)"),
    ("bad enum", replace("family: [ar, mdm]", "family: [ar, mdn]"),
     "spec.yaml:13 grid.family[1]: expected one of ar, mdm, dual, bd3lm, got 'mdn'; did you mean 'mdm'?"),
    ("tab indentation", replace("  seq_len: 16", "\tseq_len: 16"),
     "spec.yaml:6: invalid YAML: a tab character: YAML indentation must use spaces"),
    ("bad indentation", replace("  seq_len: 16", "   seq_len: 16"),
     "spec.yaml:6: invalid YAML: expected <block end>, but found '<block mapping start>' "
     "(while parsing a block mapping)"),
    ("duplicate key", replace("  seq_len: 16\n", "  seq_len: 16\n  seq_len: 32\n"),
     "spec.yaml:7 data.seq_len: duplicate key 'seq_len' (first at line 6); YAML would silently keep only the last"),
    ("object tag", replace("name: t", "name: !!python/object/apply:os.system [echo hi]"),
     "spec.yaml:2 name: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed in a spec "
     "(only plain values)"),
    ("merge key", replace("  batch_sequences: 8\n", "  <<: {batch_sequences: 8}\n"),
     "spec.yaml:9 train: YAML merge keys (<<) are not supported; use `extends` or repeat the keys"),
    ("missing section", replace("grid:\n  family: [ar, mdm]\n  model: tiny\n  unique_tokens: 4k\n  epochs: [1, 2]\n", ""),
     "spec.yaml:1: missing required key 'grid'"),
    ("missing nested key", replace("  seq_len: 16\n", ""),
     "spec.yaml:3 data: missing required key 'seq_len' in data"),
    ("unsupported version", replace("version: 1", "version: 7"),
     "spec.yaml:1 version: unsupported spec version 7; this sweeper reads version 1"),
    ("missing axis", replace("  unique_tokens: 4k\n", ""),
     "spec.yaml:12 grid: missing axis 'unique_tokens' in this grid block"),
    ("pool smaller than a sample", replace("unique_tokens: 4k", "unique_tokens: 10"),
     "spec.yaml:12 grid: unique_tokens 10 is less than one sample (seq_len + 1 = 17 tokens)"),
    ("duplicate axis value", replace("epochs: [1, 2]", "epochs: [1, 2, 2]"),
     "spec.yaml:16 grid.epochs[2]: duplicate value 2 in axis 'epochs'"),
    ("unknown source kind", replace("{kind: synthetic, symbols: 64}", "{kind: hff, dataset: c4}"),
     "spec.yaml:4 data.train.kind: expected one of hf, files, bundled, synthetic, got 'hff'; did you mean 'hf'?"),
    ("tokenizer mismatch", replace("vocab_size: 65", "vocab_size: 64"),
     "spec.yaml:5 data.tokenizer: tokenizer.vocab_size must be symbols + 1 (end of document) = 65, got 64"),
    ("validation too small", replace("validation_tokens: 1024", "validation_tokens: 10"),
     "spec.yaml:7 data.validation_tokens: validation_tokens 10 is less than one sample (seq_len + 1 = 17 tokens)"),
    ("redefined preset", replace("  tiny: {", "  7M: {"),
     "spec.yaml:11 models.7M: '7M' is a built-in preset; give your model another name"),
    ("not a mapping", "- just\n- a list\n", "spec.yaml:1: a spec must be a YAML mapping of sections"),
    ("empty file", "", "spec.yaml:1: the file is empty; a spec is one YAML mapping"),
    ("zip lengths", replace("  epochs: [1, 2]\n", "  zip:\n    - {epochs: [1, 2], lr_peak: [1e-3]}\n"),
     "spec.yaml:17 grid.zip[0]: zipped axes must have equal lengths, got epochs: 2, lr_peak: 1"),
    ("isoflop with epochs", replace("  epochs: [1, 2]\n", "  epochs: [1, 2]\n  isoflop: {flops: [1e12]}\n"),
     "spec.yaml:12 grid: an isoflop block derives epochs from its FLOP budgets; remove `epochs`"),
    ("override contradiction",
     MINIMAL + "overrides:\n  - when: {family: mdm}\n    set: {lr_min: 1.0}\n",
     "spec.yaml:12 grid: lr_min 1 is above lr_peak 0.0002 (after this block's settings and overrides)"),
    ("unknown override key", MINIMAL + "overrides:\n  - when: {family: mdm}\n    set: {lr: 1.0}\n",
     "spec.yaml:19 overrides[0].set.lr: unknown key 'lr' in override settings (train keys) (known keys: "
     "ar_fraction, attention_dropout, batch_sequences, betas, block_size, checkpoint_every_minutes, compile, "
     "decay_fraction, decay_shape, dropout, dual_val_loss, eps, eval_points, eval_spacing, grad_clip, init_std, "
     "input_mask_rate, lr_min, lr_peak, mdm_eval_samples, mdm_loss_weight, mdm_min_mask_rate, mdm_t_sampling, "
     "optimizer, orderings, precision, schedule, seed, share_prefix, warmup_fraction, warmup_steps, "
     "weight_decay)"),
    ("include with a list", MINIMAL + "include:\n  - {family: ar, model: tiny, unique_tokens: [8k, 9k]}\n",
     "spec.yaml:18 include[0].unique_tokens: an include entry is one point: give one value (use a grid block for lists)"),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_names_file_line_and_key(write_spec, cli, text: str, expected: str) -> None:
    path = write_spec(text)
    code, out, err = cli("validate", path)
    assert code == 2
    assert out == ""
    assert err.strip() == f"error: {expected}"
    assert "Traceback" not in err


def test_billion_laughs_is_refused_quickly(write_spec, cli) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    path = write_spec("\n".join(lines) + "\n")
    start = time.perf_counter()
    code, _, err = cli("validate", path)
    # Expanded, the document would hold 10^10 strings (hours, and far more memory than a machine
    # has). Refused, it took 0.4 s on an idle 2-core machine and 2.0 s on a loaded one: the bound
    # tells the two cases apart without failing on a busy machine.
    assert time.perf_counter() - start < 30
    assert code == 2
    assert "once aliases are expanded; refusing to expand further" in err


def test_recursive_alias_is_refused(write_spec) -> None:
    path = write_spec("version: 1\nloop: &x [*x]\n")
    with pytest.raises(SpecError):
        load_spec(path)


def test_missing_file_is_a_clear_error(cli, tmp_path) -> None:
    code, _, err = cli("validate", tmp_path / "nope.yaml")
    assert code == 2
    assert err.strip().startswith("error: file not found:") and err.strip().endswith("nope.yaml")


def test_extends_errors_name_the_file(write_spec, cli) -> None:
    path = write_spec("version: 1\nname: child\nextends: base.yaml\n")
    code, _, err = cli("validate", path)
    assert code == 2 and "spec.yaml:3 extends: extends 'base.yaml': no such file base.yaml" in err
    write_spec("extends: b.yaml\n", "a.yaml")
    write_spec("extends: a.yaml\n", "b.yaml")
    code, _, err = cli("validate", "a.yaml")
    assert code == 2 and "`extends` loops: a.yaml -> b.yaml -> a.yaml" in err


def test_error_in_extended_file_points_into_that_file(write_spec, cli) -> None:
    write_spec(MINIMAL.replace("batch_sequences: 8", "batch_sequences: -8"), "base.yaml")
    child = write_spec("extends: base.yaml\nname: child\n", "child.yaml")
    code, _, err = cli("validate", child)
    assert code == 2
    assert err.strip() == "error: base.yaml:9 train.batch_sequences: expected a positive whole number, got -8"
