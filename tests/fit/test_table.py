"""Reading trials from CSV and averaging repeated seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sweeper.console import UserError
from sweeper.fit.table import average_seeds, read_csv


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trials.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_the_results_columns_and_ignores_others(tmp_path: Path) -> None:
    trials = read_csv(write(tmp_path, "trial_id,family,params,tokens,unique_tokens,loss\n"
                                      "t1,ar,1e8,2e9,1e9,3.5\n"
                                      "t2,mdm,1e8,2e9,,3.9\n"))
    assert list(trials.family) == ["ar", "mdm"]
    assert trials.num_params.tolist() == [1e8, 1e8]
    assert trials.unique_tokens[0] == 1e9 and math.isnan(trials.unique_tokens[1])
    assert trials.loss.tolist() == [3.5, 3.9]


def test_without_a_family_column_every_row_is_family_all(tmp_path: Path) -> None:
    trials = read_csv(write(tmp_path, "params,tokens,unique_tokens,loss\n1e8,2e9,1e9,3.5\n"))
    assert list(trials.family) == ["all"]


def test_single_epoch_rows_are_those_without_repeats(tmp_path: Path) -> None:
    observations = average_seeds(read_csv(write(
        tmp_path, "params,tokens,unique_tokens,loss\n"
                  "1e8,2e9,,3.5\n"  # no U: single epoch
                  "1e8,2e9,2e9,3.5\n"  # exactly one epoch
                  "1e8,2e9,1e10,3.5\n"  # part of a bigger pool
                  "1e8,4e9,1e9,3.4\n")))  # four epochs
    order = np.lexsort((observations.unique_tokens, observations.tokens))
    assert observations.single_epoch[order].tolist() == [True, True, True, False]
    assert observations.epochs[order].tolist() == [1.0, 1.0, 1.0, 4.0]


def test_a_trial_planned_at_one_epoch_stays_single_epoch_after_rounding_up_to_whole_steps(
        tmp_path: Path) -> None:
    # sweeper's results: U = 4000 at one epoch trains 32 steps of 128 tokens = 4096 tokens
    observations = average_seeds(read_csv(write(
        tmp_path, "params,tokens,unique_tokens,loss,tokens_planned,epochs_planned\n"
                  "1e8,4096,4000,3.5,4000,1.0\n"  # planned one epoch: single, though 4096 > 4000
                  "1e8,8064,4000,3.4,8000,2.0\n"  # planned two epochs: repeated
                  "1e8,4096,4000,3.6,,\n")))  # nothing planned known: by tokens, repeated
    order = np.lexsort((observations.loss,))
    assert observations.single_epoch[order].tolist() == [False, True, False]
    assert observations.tokens[order].tolist() == [8064, 4096, 4096]  # the fit counts tokens trained
    assert observations.epochs[order][1] == 4096 / 4000


def test_repeated_seeds_are_one_configuration_with_a_spread(tmp_path: Path) -> None:
    observations = average_seeds(read_csv(write(
        tmp_path, "family,params,tokens,unique_tokens,loss,seed\n"
                  "ar,1e8,2e9,1e9,3.4,1\n"
                  "ar,1e8,2e9,1e9,3.6,2\n"
                  "mdm,1e8,2e9,1e9,3.9,1\n")))
    assert len(observations) == 2
    ar = observations.of_family("ar")
    assert ar.loss[0] == pytest.approx(3.5)
    assert ar.loss_std[0] == pytest.approx(np.std([3.4, 3.6], ddof=1))
    assert ar.num_seeds[0] == 2
    assert math.isnan(observations.of_family("mdm").loss_std[0])


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("params,tokens,unique_tokens,loss\n", "no data rows"),
    ("params,tokens,unique_tokens\n1,2,3\n", "missing required column(s) loss"),
    ("params,tokens,loss\n1e8,ten,3.5\n", ":2: column 'tokens': expected a number, got 'ten'"),
    ("params,tokens,loss\n1e8,1e9,-1\n", ":2: column 'loss': expected a positive number"),
    ("params,tokens,loss\n1e8,1e9\n", ":2: expected 3 columns, got 2"),
    ("family,params,tokens,loss\n,1e8,1e9,3\n", ":2: column 'family' is empty"),
])
def test_unusable_input_is_a_user_error_naming_file_and_line(tmp_path: Path, text: str,
                                                              message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=None) as error:
        read_csv(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_a_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        read_csv(tmp_path / "absent.csv")


def test_a_binary_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "trials.csv"
    path.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(UserError, match="not a readable CSV"):
        read_csv(path)


DATABLATIONS = Path(__file__).parent / "data" / "datablations_fit_182_c4_val_loss.csv"


def test_published_spellings_are_recognised() -> None:
    """datablations' columns: run_name, params_N, tokens_D, unique_tokens_U, epochs, val_loss."""
    trials = read_csv(DATABLATIONS)
    assert len(trials) == 182
    assert trials.num_params[0] == 2.81e9 and trials.tokens[0] == 32e9
    assert trials.unique_tokens[0] == 4e9 and trials.loss[0] == 2.722962


def test_flops_stand_in_for_tokens(tmp_path: Path) -> None:
    """Epoch AI's Chinchilla file: Model Size, Training FLOP, loss (and no tokens): D = C/6N."""
    trials = read_csv(write(tmp_path, "x,y,Model Size,Training FLOP,loss\n"
                                      "1,2,6795600349.289497,9.993852799709755e+18,5.0\n"))
    assert trials.tokens[0] == pytest.approx(9.993852799709755e18 / (6 * 6795600349.289497))
    assert math.isnan(trials.unique_tokens[0])


def test_a_column_mapping_names_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "size,seen,nats\n1e8,2e9,3.5\n")
    trials = read_csv(path, {"params": "size", "tokens": "seen", "loss": "nats"})
    assert (trials.num_params[0], trials.tokens[0], trials.loss[0]) == (1e8, 2e9, 3.5)
    with pytest.raises(UserError) as error:
        read_csv(path, {"loss": "perplexity"})
    assert str(error.value) == (f"{path}:1: --columns loss=perplexity: no such column "
                                "(found: 'size', 'seen', 'nats')")


def test_missing_columns_list_the_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path, "size,seen,nats\n1e8,2e9,3.5\n")
    with pytest.raises(UserError) as error:
        read_csv(path)
    assert str(error.value) == (
        f"{path}:1: missing required column(s) params, tokens (or flops), loss (found: 'size', "
        "'seen', 'nats'); name them with --columns KEY=COLUMN,...")


def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    """Spreadsheets write UTF-8 with a BOM; the first column is still 'params'."""
    path = tmp_path / "trials.csv"
    path.write_bytes("params,tokens,loss\n1e8,2e9,3.5\n1e9,2e10,3.0\n".encode("utf-8-sig"))
    assert read_csv(path).num_params.tolist() == [1e8, 1e9]


def test_all_losses_equal_is_a_user_error(tmp_path: Path) -> None:
    path = write(tmp_path, "params,tokens,loss\n1e8,2e9,3.5\n1e9,2e10,3.5\n1e7,1e9,3.5\n")
    with pytest.raises(UserError) as error:
        read_csv(path)
    assert str(error.value) == (f"{path}: all 3 rows have the same loss (3.5), so there is "
                                "nothing for a scaling law to explain; check the loss column")


def test_an_implausible_per_token_loss_is_refused_naming_its_row(tmp_path: Path) -> None:
    """Chinchilla's losses ×100 (≈ 190-500) are no per-token losses in nats."""
    path = write(tmp_path, "params,tokens,loss\n1e8,2e9,3.5\n1e9,2e10,300\n")
    with pytest.raises(UserError) as error:
        read_csv(path)
    assert str(error.value).startswith(f"{path}:3: column 'loss': 300 is no per-token loss")
