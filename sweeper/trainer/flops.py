"""FLOP accounting: the paper's C = 6·N·D bookkeeping and the PaLM MFU formula."""

from __future__ import annotations


def training_flops(num_params: int, tokens: int) -> float:
    """C = 6·N·D (PAPER.md): N is the planned bookkeeping count, D the tokens seen."""
    return 6.0 * num_params * tokens


def palm_flops_per_token(num_params_actual: int, layers: int, heads: int, head_dim: int,
                         seq_len: int) -> float:
    """Model FLOPs per trained token, PaLM (Chowdhery et al. 2022) appendix B: 6N + 12·L·H·Q·T.

    N is every parameter of the built model with the tied embedding counted once: the lookup costs
    no matmul but the tied output head is a vocab × d_model matmul, so counting it once is exact.
    The attention term counts the full T×T score matrix for both families (the formula gives
    causal attention no discount), so ar and mdm MFU compare directly.
    """
    return 6.0 * num_params_actual + 12.0 * layers * heads * head_dim * seq_len


def model_flops_utilisation(flops_per_token: float, tokens_per_s: float,
                            peak_flops_per_device: float, devices: int) -> float:
    return flops_per_token * tokens_per_s / (peak_flops_per_device * devices)
