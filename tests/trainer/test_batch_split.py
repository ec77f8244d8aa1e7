"""The micro-batch is a how-setting (left out of the trial id): however a step's global batch is
split, into micro-batches or over processes, the trial trains the same model. mdm's masks follow
the sequence, not the micro-batch that carries it (sweeper.trainer.objectives)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweeper.trainer import TrialConfig, latest_checkpoint, train
from sweeper.trainer.checkpoint import read_checkpoint

from .helpers import Recorder, tiny_config
from .test_processes import load_inputs, two_processes, write_inputs

FAMILIES = ["ar", "mdm"]


def split_config(family: str, micro_batch: int, **options: object) -> TrialConfig:
    # batch 8, three steps, dropout 0 (at dropout > 0 its masks are drawn per process: README), the
    # spec's default learning rates. Adam moves a weight by about lr_peak · g / (|g| + eps) whatever
    # its gradient's size, so at eps 1e-8 the float rounding of a differently ordered sum turns a
    # near-zero gradient (~1e-10) into a 1e-5 difference of one weight; at eps 1e-6 the splits
    # differ by at most 4e-7 (measured), while chunk-keyed masks (recipe 1) differed by 8e-4
    return tiny_config(family=family, batch_sequences=8, micro_batch=micro_batch, steps=3, warmup_steps=1,
                       lr_peak=2e-4, lr_min=2e-5, eps=1e-6,
                       eval_steps=(0, 3), checkpoint_every_steps=3, log_every_steps=1, dropout=0.0,
                       **options)


def parameters_after(checkpoint_root: Path) -> dict[str, torch.Tensor]:
    checkpoint = latest_checkpoint(checkpoint_root)
    assert checkpoint is not None and checkpoint.endswith("step_00000003")
    return read_checkpoint(checkpoint)[1]["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def trained_in_one_process(tmp_path: Path, family: str, micro_batch: int,
                           **options: object) -> dict[str, torch.Tensor]:
    root = tmp_path / f"micro{micro_batch}"
    train(split_config(family, micro_batch, **options), *load_inputs(tmp_path), Recorder(),
          checkpoint_dir=str(root))
    return parameters_after(root)


@pytest.mark.parametrize("family", FAMILIES)
def test_micro_batch_split_trains_the_same_parameters(tmp_path: Path, family: str) -> None:
    write_inputs(tmp_path, split_config(family, 8))
    whole = trained_in_one_process(tmp_path, family, 8)  # 8 × 1
    accumulated = trained_in_one_process(tmp_path, family, 2)  # 2 × 4
    assert max_difference(whole, accumulated) <= 1e-6


@pytest.mark.parametrize("family, options", [
    ("mdm", {"mdm_t_sampling": "stratified"}),  # t per stratum of the global batch, keyed by step
    ("ar", {"orderings": 4, "input_mask_rate": 0.25}),  # orders and input masks keyed the same way
])
def test_options_keep_the_micro_batch_a_how_setting(tmp_path: Path, family: str, options: dict) -> None:
    write_inputs(tmp_path, split_config(family, 8, **options))
    whole = trained_in_one_process(tmp_path, family, 8, **options)  # 8 × 1
    accumulated = trained_in_one_process(tmp_path, family, 2, **options)  # 2 × 4
    assert max_difference(whole, accumulated) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_two_processes_train_the_same_parameters_as_one(tmp_path: Path, family: str) -> None:
    config = split_config(family, 2)  # 2 × 2 micro-batches on each of 2 processes
    args = write_inputs(tmp_path, config)
    two_processes([*args, "--checkpoint-dir", str(tmp_path / "two")])
    whole = trained_in_one_process(tmp_path, family, 8)
    assert max_difference(whole, parameters_after(tmp_path / "two")) <= 1e-6
