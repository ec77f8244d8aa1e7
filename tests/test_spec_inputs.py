"""Hostile and unusual spec text (issue 15): every input ends in the right plan, or exit 2 with one
line `file:line key.path: message`; never a traceback, a hang or a silently different value."""

from __future__ import annotations

import dataclasses
import json
import time
import typing

import pytest

from conftest import MINIMAL
from sweeper.spec.grid import ComputeOptimalLaw, IsoFlop
from sweeper.spec.presets import ModelSpec
from sweeper.profile import Hardware, Profile
from sweeper.spec import BundledSource, DataSpec, FilesSource, HFSource, SyntheticSource, TokenizerSpec, TrainSpec
from sweeper.spec.nodes import NumberRangeError, parse_bytes, parse_number


def replace(old: str, new: str) -> str:
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new)


def plan_json(write_spec, cli, text: str) -> dict:
    code, out, err = cli("plan", write_spec(text), "--format", "json")
    assert code == 0, err
    return json.loads(out)


def error_of(write_spec, cli, text: str) -> str:
    code, out, err = cli("validate", write_spec(text))
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip().removeprefix("error: ")


# --- 1. numbers are read by sweeper's decimal grammar, never YAML 1.1's forms --------------------

@pytest.mark.parametrize("written, expected", [
    ("010000", "spec.yaml:15 grid.unique_tokens: '010000' is an octal number to YAML 1.1; write a decimal number "
               "(25M, 1.5e18, 0.1), or quote it if it is text"),
    ("0x1000", "spec.yaml:15 grid.unique_tokens: '0x1000' is a hexadecimal number to YAML 1.1; write a decimal "
               "number (25M, 1.5e18, 0.1), or quote it if it is text"),
    ("0b1000000000000", "spec.yaml:15 grid.unique_tokens: '0b1000000000000' is a binary number to YAML 1.1; write "
                        "a decimal number (25M, 1.5e18, 0.1), or quote it if it is text"),
    ("1:10:00", "spec.yaml:15 grid.unique_tokens: '1:10:00' is a base-60 number to YAML 1.1; write a decimal number "
                "(25M, 1.5e18, 0.1), or quote it if it is text"),
    ('"010000"', "spec.yaml:15 grid.unique_tokens: expected a positive whole number, got '010000'"),
    ("２５M", "spec.yaml:15 grid.unique_tokens: expected a positive whole number, got '２５M'"),
    ("4０00", "spec.yaml:15 grid.unique_tokens: expected a positive whole number, got '4０00'"),
])
def test_yaml_number_forms_are_refused(write_spec, cli, written: str, expected: str) -> None:
    assert error_of(write_spec, cli, replace("unique_tokens: 4k", f"unique_tokens: {written}")) == expected


@pytest.mark.parametrize("written", ["010", "0o10", ".inf", ".nan", "-.inf", "0_1"])
def test_epochs_in_yaml_forms_are_refused(write_spec, cli, written: str) -> None:
    message = error_of(write_spec, cli, replace("epochs: [1, 2]", f"epochs: {written}"))
    assert message.startswith("spec.yaml:16 grid.epochs: ")


@pytest.mark.parametrize("written, unique_tokens, epochs", [
    ("unique_tokens: 10000\n  epochs: 10", 10_000, 10.0),
    ("unique_tokens: 10_000\n  epochs: 10.0", 10_000, 10.0),
    ("unique_tokens: 1e4\n  epochs: +10", 10_000, 10.0),
    ("unique_tokens: 10k\n  epochs: 1.0e1", 10_000, 10.0),
    ("unique_tokens: 0.01M\n  epochs: 2.5", 10_000, 2.5),
    ("unique_tokens: '10000'\n  epochs: '10'", 10_000, 10.0),
])
def test_decimal_numbers_plan_their_value(write_spec, cli, written: str, unique_tokens: int, epochs: float) -> None:
    text = replace("unique_tokens: 4k\n  epochs: [1, 2]", written)
    trials = plan_json(write_spec, cli, text)["trials"]
    assert {(t["unique_tokens"], t["epochs"], t["tokens"]) for t in trials} == \
        {(unique_tokens, epochs, round(unique_tokens * epochs))}


def test_the_grammar_is_ascii_decimal() -> None:
    assert parse_number("25M") == 25_000_000
    assert parse_number("1_000") == 1000
    assert parse_number("2e-4") == parse_number("0.0002")
    for text in ("２５M", "010", "0x10", "0b11", "1:30", "inf", "nan", "1e", "--1", "1__"[:0]):
        assert parse_number(text) is None, text
    assert parse_bytes("24GiB") == 24 * 2**30
    assert parse_bytes("０8GB") is None


# --- 2. every number has a range, checked before it is converted ---------------------------------

RANGE = "is out of range: sweeper reads numbers of magnitude 1e-30 to 1e30 (or 0)"


@pytest.mark.parametrize("old, new, expected", [
    ("unique_tokens: 4k", "unique_tokens: 1e400", f"spec.yaml:15 grid.unique_tokens: '1e400' {RANGE}"),
    ("unique_tokens: 4k", "unique_tokens: 1e1000000", f"spec.yaml:15 grid.unique_tokens: '1e1000000' {RANGE}"),
    ("unique_tokens: 4k", "unique_tokens: 1e999999", f"spec.yaml:15 grid.unique_tokens: '1e999999' {RANGE}"),
    ("unique_tokens: 4k", "unique_tokens: 1e16",
     "spec.yaml:15 grid.unique_tokens: expected a value of at most 1e15, got '1e16'"),
    ("batch_sequences: 8", "batch_sequences: 8\n  lr_peak: 1e400", f"spec.yaml:10 train.lr_peak: '1e400' {RANGE}"),
    ("batch_sequences: 8", "batch_sequences: 8\n  lr_peak: 1.0e+400", f"spec.yaml:10 train.lr_peak: 1.0e+400 {RANGE}"),
    ("batch_sequences: 8", "batch_sequences: 8\n  eps: 1e-400", f"spec.yaml:10 train.eps: '1e-400' {RANGE}"),
    ("d_model: 32", "d_model: 1e160", f"spec.yaml:11 models.tiny.d_model: '1e160' {RANGE}"),
    ("d_model: 32", "d_model: 1e9", "spec.yaml:11 models.tiny.d_model: expected a value of at most 131,072, got '1e9'"),
    ("seq_len: 16", "seq_len: " + "1" * 5000,
     "spec.yaml:6 data.seq_len: " + "1" * 60 + "... (5,000 characters) has 5,000 characters, more than a number "
     "may; write it with an exponent (1.5e12) or a unit (1.5T)"),
    ("batch_sequences: 8", "batch_sequences: 8\n  eval_points: 1e9",
     "spec.yaml:10 train.eval_points: expected a value of at most 10,000, got '1e9'"),
    ("batch_sequences: 8", "batch_sequences: 8\n  seed: 1e12",
     "spec.yaml:10 train.seed: expected a value of at most 4,294,967,295, got '1e12'"),
    ("  epochs: [1, 2]\n", "  isoflop: {flops: [1e12], window: 1e300}\n",
     f"spec.yaml:16 grid.isoflop.window: '1e300' {RANGE}"),
    ("  epochs: [1, 2]\n", "  isoflop: {flops: [1e400]}\n", f"spec.yaml:16 grid.isoflop.flops[0]: '1e400' {RANGE}"),
    ("  epochs: [1, 2]\n", "  isoflop: {flops: [1e3], window: 1e6}\n",
     "spec.yaml:12 grid: 1000 FLOPs leave model tiny (N = 12,512) less than one token; raise the budget or narrow "
     "isoflop.window"),
    ("  epochs: [1, 2]\n", "  isoflop: {flops: [1e12], window: 1e6, law: {alpha: 1e-30, beta: 1e-30, A: 1e12}}\n",
     "spec.yaml:12 grid: the compute-optimal law overflows at 1e+12 FLOPs; check isoflop.law"),
])
def test_numbers_out_of_range_are_refused_quickly(write_spec, cli, old: str, new: str, expected: str) -> None:
    start = time.perf_counter()
    assert error_of(write_spec, cli, replace(old, new)) == expected
    assert time.perf_counter() - start < 30  # refused before expanding (0.3 s idle); a loaded machine is slower


def test_where_refuses_numbers_out_of_range(write_spec, cli) -> None:
    code, _, err = cli("plan", write_spec(MINIMAL), "--where", "flops<1e999999")
    assert code == 2
    assert err.strip() == ("error: --where 'flops<1e999999': the number is out of range: sweeper reads numbers of "
                           "magnitude 1e-30 to 1e30 (or 0)")


def test_parse_number_bounds_magnitude_before_converting() -> None:
    for text in ("1e400", "1e-400", "1e31", "1e1000000000000000000000", "9" * 41):
        with pytest.raises(NumberRangeError):
            parse_number(text)
    assert parse_number("1e30") == 10**30 and parse_number("-1e-30") == -parse_number("1e-30")
    assert parse_number("0e999") == 0


NUMERIC_CONFIGS = (SyntheticSource, HFSource, FilesSource, BundledSource, TokenizerSpec, DataSpec, TrainSpec,
                   ModelSpec, ComputeOptimalLaw, IsoFlop, Hardware, Profile)


@pytest.mark.parametrize("cls", NUMERIC_CONFIGS, ids=lambda c: c.__name__)
def test_every_numeric_key_declares_an_upper_bound(cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "int" in str(hints[f.name]) or "float" in str(hints[f.name]):
            assert f.metadata.get("max") is not None or f.metadata.get("below") is not None, f"{cls.__name__}.{f.name}"


def test_every_planned_count_is_finite_and_positive_at_the_bounds(write_spec, cli) -> None:
    text = replace("unique_tokens: 4k\n  epochs: [1, 2]", "unique_tokens: 1e15\n  epochs: 1e6")
    text = text.replace("batch_sequences: 8", "batch_sequences: 8\n  eval_points: 10000\n  eps: 1e-30")
    trial = plan_json(write_spec, cli, text)["trials"][0]
    assert trial["tokens"] == 10**21 and trial["steps"] == 10**21 // (8 * 16)
    for key in ("flops", "device_hours", "wall_hours"):
        if key in trial:
            assert 0 < trial[key] < float("inf")


# --- 3. explicit tags and structure ----------------------------------------------------------------

@pytest.mark.parametrize("old, new, expected", [
    ("seq_len: 16", "seq_len: !!int abc", "spec.yaml:6 data.seq_len: YAML tag '!!int' needs a decimal number, got 'abc'"),
    ("seq_len: 16", "seq_len: !!int ''", "spec.yaml:6 data.seq_len: YAML tag '!!int' needs a decimal number, got ''"),
    ("seq_len: 16", "seq_len: !!float 0x10",
     "spec.yaml:6 data.seq_len: YAML tag '!!float' needs a decimal number, got '0x10'"),
    ("batch_sequences: 8", "batch_sequences: 8\n  compile: !!bool maybe",
     "spec.yaml:10 train.compile: YAML tag '!!bool' on 'maybe': write true or false"),
    ("seq_len: 16", "seq_len: !!binary aGk=",
     "spec.yaml:6 data.seq_len: YAML tag 'tag:yaml.org,2002:binary' is not allowed in a spec (only plain values)"),
])
def test_explicit_tags_are_checked(write_spec, cli, old: str, new: str, expected: str) -> None:
    assert error_of(write_spec, cli, replace(old, new)) == expected


def test_explicit_tags_with_right_values_plan_them(write_spec, cli) -> None:
    text = replace("seq_len: 16", "seq_len: !!int 16").replace("batch_sequences: 8", "batch_sequences: !!int '8'")
    trials = plan_json(write_spec, cli, text)["trials"]
    assert {t["steps"] for t in trials} == {32, 63}  # 4,000 and 8,000 tokens at 8 x 16 per step


@pytest.mark.parametrize("nested", ["[" * 1000 + "]" * 1000, "{a: " * 1000 + "1" + "}" * 1000,
                                    "\n" + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "x"])
def test_deep_nesting_is_refused_before_the_stack_runs_out(write_spec, cli, nested: str) -> None:
    start = time.perf_counter()
    message = error_of(write_spec, cli, MINIMAL + "include: " + nested + "\n")
    assert time.perf_counter() - start < 30  # refused before expanding (0.3 s idle); a loaded machine is slower
    assert message.endswith("nested deeper than 64 levels") and message.startswith("spec.yaml:")


def test_an_extends_name_too_long_for_the_filesystem(write_spec, cli) -> None:
    name = "a" * 300 + ".yaml"
    assert error_of(write_spec, cli, f"extends: {name}\n" + MINIMAL) == \
        f"spec.yaml:1 extends: extends '{'a' * 60}'... (305 characters): File name too long"
    assert error_of(write_spec, cli, 'extends: "a\\0b.yaml"\n' + MINIMAL).startswith(
        "spec.yaml:1 extends: extends 'a\\x00b.yaml': no such file ")


# --- 4. one line, escaped ---------------------------------------------------------------------------

@pytest.mark.parametrize("byte, shown", [("\x00", "\\x00"), ("\x07", "\\x07"), ("\x1b", "\\x1b"), ("\x7f", "\\x7f")])
def test_a_control_byte_is_one_located_line(write_spec, cli, byte: str, shown: str) -> None:
    message = error_of(write_spec, cli, MINIMAL + f"description: a{byte}b\n")
    assert message == (f"spec.yaml:17: invalid YAML: character U+{ord(byte):04X} at column 15 is not allowed; "
                       f"inside double quotes write it as {shown}")


@pytest.mark.parametrize("key, shown", [
    ('"a\\nb"', "a\\nb"), ('"a\\x1b[31mred"', "a\\x1b[31mred"), ('"a\\u2028b"', "a\\u2028b"),
    ('"\\u202etxt"', "\\u202etxt"),
])
def test_keys_with_control_characters_are_escaped(write_spec, cli, key: str, shown: str) -> None:
    message = error_of(write_spec, cli, MINIMAL + f"{key}: 1\n")
    assert message.startswith(f"spec.yaml:17 {shown}: unknown key '{shown}' in the spec")
    assert "\x1b" not in message and "\u2028" not in message and "\u202e" not in message


def test_values_with_escape_sequences_are_escaped(write_spec, cli) -> None:
    message = error_of(write_spec, cli, replace("model: tiny", 'model: "t\\x1b[2Jiny"'))
    assert message == "spec.yaml:14 grid.model: unknown model preset 't\\x1b[2Jiny'; did you mean 'tiny'?"


@pytest.mark.parametrize("key", ["family", "model", "compile", "betas", "precision"])
def test_a_range_on_a_key_that_is_not_a_number(write_spec, cli, key: str) -> None:
    message = error_of(write_spec, cli, MINIMAL + f"exclude: [{{{key}: {{min: 1}}}}]\n")
    assert message == f"spec.yaml:17 exclude[0].{key}: a {{min, max}} range needs a numeric key; '{key}' takes a " \
                      "value or a list"


def test_a_range_on_a_train_key_switched_off_matches_nothing(write_spec, cli) -> None:
    text = replace("batch_sequences: 8", "batch_sequences: 8\n  grad_clip: null")
    assert len(plan_json(write_spec, cli, text + "exclude: [{grad_clip: {min: 1}}]\n")["trials"]) == 4
    assert len(plan_json(write_spec, cli, MINIMAL + "exclude: [{grad_clip: {min: 1}}]\n")["trials"]) == 0


# --- 5. names that reach folders and MLflow ----------------------------------------------------------

ONLY = "may use only letters, digits, '_', '.' and '-', starting with a letter or digit"
FOLDER = "names the sweep's folder under storage.path, so it may not contain '/' or '\\' or be '.' or '..'"


@pytest.mark.parametrize("written, expected", [
    ('name: "t\\n"', f"spec.yaml:2 name: name 't\\n' {ONLY}"),
    ('name: "t\\r"', f"spec.yaml:2 name: name 't\\r' {ONLY}"),
    ("name: t/../x", f"spec.yaml:2 name: name 't/../x' {ONLY}"),
    ("name: " + "t" * 101, "spec.yaml:2 name: name '" + "t" * 60 + "'... (101 characters) is 101 characters; "
                           "a name may have at most 100"),
])
def test_sweep_names(write_spec, cli, written: str, expected: str) -> None:
    assert error_of(write_spec, cli, replace("name: t", written)) == expected


def test_model_names(write_spec, cli) -> None:
    text = replace("  tiny: {", '  "tiny\\n": {').replace("model: tiny", 'model: "tiny\\n"')
    assert error_of(write_spec, cli, text) == f"spec.yaml:11 models.tiny\\n: model name 'tiny\\n' {ONLY}"


@pytest.mark.parametrize("experiment, expected", [
    ("../../etc", f"experiment '../../etc' {FOLDER}"),
    ("/tmp/elsewhere", f"experiment '/tmp/elsewhere' {FOLDER}"),
    ("a/b", f"experiment 'a/b' {FOLDER}"),
    ('"a\\\\b"', f"experiment 'a\\\\b' {FOLDER}"),
    ("..", f"experiment '..' {FOLDER}"),
    ('"a\\tb"', "experiment 'a\\tb' may not contain control characters"),
    ('" padded"', "experiment ' padded' may not begin or end with a space"),
    ("e" * 501, "experiment '" + "e" * 60 + "'... (501 characters) is too long: MLflow keeps at most 250 "
                "characters, a folder name 255 bytes"),
    ("é" * 200, "experiment '" + "é" * 60 + "'... (200 characters) is too long: MLflow keeps at most 250 "
                "characters, a folder name 255 bytes"),
])
def test_experiment_names_that_leave_the_storage_folder_or_break_mlflow(write_spec, cli, experiment: str,
                                                                         expected: str) -> None:
    text = MINIMAL + f"tracking: {{experiment: {experiment}}}\n"
    assert error_of(write_spec, cli, text) == f"spec.yaml:17 tracking.experiment: {expected}"


@pytest.mark.parametrize("experiment", ["diffusion vs AR (C4), run 2", "e" * 250, "étude-données", "a.b_c-d"])
def test_safe_experiment_names_are_kept_as_written(write_spec, cli, experiment: str) -> None:
    plan = plan_json(write_spec, cli, MINIMAL + f"tracking: {{experiment: '{experiment}'}}\n")
    assert plan["experiment"] == experiment


def test_the_longest_names_fit_mlflow_run_names(write_spec, cli) -> None:
    model = "m" * 100
    text = replace("name: t", "name: " + "t" * 100).replace("  tiny: {", f"  {model}: {{")
    text = text.replace("model: tiny", f"model: {model}").replace("unique_tokens: 4k\n  epochs: [1, 2]",
                                                                   "unique_tokens: 1e15\n  epochs: 999999.5\n  seed: 4294967295")
    names = [t["name"] for t in plan_json(write_spec, cli, text)["trials"]]
    assert names and all(len(name) <= 250 for name in names)


# --- 6. a grid's size is counted before it is expanded ---------------------------------------------

def axis(values: range, fmt: str = "{}") -> str:
    return "[" + ", ".join(fmt.format(v) for v in values) + "]"


def test_an_exploding_grid_is_refused_from_its_axis_lengths(write_spec, cli) -> None:
    text = replace("family: [ar, mdm]", "family: ar").replace(
        "  epochs: [1, 2]\n", f"  epochs: {axis(range(1, 33))}\n  lr_peak: {axis(range(1, 33), '{}e-5')}\n"
                              f"  seed: {axis(range(32))}\n  weight_decay: {axis(range(32), '0.{:02d}')}\n")
    start = time.perf_counter()
    message = error_of(write_spec, cli, text)
    assert time.perf_counter() - start < 30  # refused before expanding (0.3 s idle); a loaded machine is slower
    assert message == ("spec.yaml:12 grid: this block expands to 1,048,576 points (family 1 x model 1 x "
                       "unique_tokens 1 x epochs 32 x lr_peak 32 x seed 32 x weight_decay 32), over the limit of "
                       "10,000; set `max_grid_points: 1048576` at the top of the spec to plan them all")


def test_the_limit_counts_every_block_zip_budget_and_include(write_spec, cli) -> None:
    grid = (f"grid:\n  - {{family: [ar, mdm], model: tiny, unique_tokens: 4k, epochs: {axis(range(1, 11))}}}\n"
            f"  - family: ar\n    model: tiny\n    unique_tokens: 8k\n"
            f"    zip: [{{epochs: {axis(range(1, 5))}, seed: {axis(range(4))}}}]\n"
            f"include:\n  - {{family: mdm, model: tiny, unique_tokens: 9k}}\n")
    text = MINIMAL[:MINIMAL.index("grid:")] + grid  # 20 + 4 + 1 points
    assert error_of(write_spec, cli, text + "max_grid_points: 24\n") == (
        "spec.yaml:13 grid[0]: this block expands to 20 points (family 2 x model 1 x unique_tokens 1 x epochs 10); "
        "the grid has 25 in all, over the limit of 24; set `max_grid_points: 25` at the top of the spec to plan "
        "them all")
    assert len(plan_json(write_spec, cli, text + "max_grid_points: 25\n")["trials"]) == 25


def test_an_isoflop_block_counts_its_budgets(write_spec, cli) -> None:
    text = replace("  epochs: [1, 2]\n", f"  isoflop: {{flops: {axis(range(1, 11), '{}e12')}}}\n")
    message = error_of(write_spec, cli, text + "max_grid_points: 19\n")
    assert message.startswith("spec.yaml:12 grid: this block expands to 20 points (family 2 x model 1 x "
                              "unique_tokens 1 x isoflop.flops 10), over the limit of 19")


def test_the_limit_itself_is_bounded(write_spec, cli) -> None:
    assert error_of(write_spec, cli, MINIMAL + "max_grid_points: 1e9\n") == \
        "spec.yaml:17 max_grid_points: expected a value of at most 10,000,000, got '1e9'"
    assert error_of(write_spec, cli, MINIMAL + "max_grid_points: 0\n") == \
        "spec.yaml:17 max_grid_points: expected a positive whole number, got 0"
