"""TrialConfig rejects what the trainer cannot run, naming the fix."""

from __future__ import annotations

import json

import pytest

from sweeper.trainer import TrialConfig, padded_vocab_size

from .helpers import TINY, tiny_config


def test_round_trips_through_json() -> None:
    config = tiny_config(grad_clip=None)
    assert TrialConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_padding_leaves_room_for_the_mask_id() -> None:
    assert padded_vocab_size(50257) == 50304  # the paper's padded GPT-2 vocabulary
    assert padded_vocab_size(127) == 128
    assert padded_vocab_size(128) == 256  # 128 tokens + the mask id need a second block
    assert tiny_config().mask_id == TINY["vocab_size"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_sequences": 12, "micro_batch": 8}, "pick a micro_batch that divides it"),
        ({"eval_steps": (8, 16)}, "must start with 0"),
        ({"eval_steps": (0, 8)}, "end with steps=16"),
        ({"eval_steps": (0, 8, 8, 16)}, "strictly increasing"),
        ({"head_dim": 15}, "head_dim must be even"),
        ({"lr_min": 1.0}, "lr_min <= lr_peak"),
        ({"warmup_steps": 17}, "warmup_steps"),
        ({"grad_clip": 0.0}, "None to turn clipping off"),
        ({"family": "gpt"}, "family must be one of ar, mdm, dual, bd3lm"),
        ({"device": "tpu"}, "device must be"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
        ({"micro_batch": 0}, "micro_batch must be a positive integer"),
    ],
)
def test_rejects_bad_values_with_the_fix(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match="invalid TrialConfig 'tiny'") as error:
        tiny_config(**changes)
    assert message in str(error.value)


def test_is_frozen() -> None:
    config = tiny_config()
    with pytest.raises(AttributeError):
        config.steps = 3  # type: ignore[misc]
