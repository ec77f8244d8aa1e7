"""Trainer tests run on a small CPU shared with other work. One intra-op thread: with two, each
op's threads spin-wait whenever another process holds a core, which made small models here
several times slower, not faster."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    torch.set_num_threads(1)
