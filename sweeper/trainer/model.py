"""The transformer every family shares (PAPER.md): RoPE, SwiGLU, RMSNorm, no biases, tied embeddings.

`ar` attends causally, `mdm` bidirectionally; nothing else differs, and mdm gets no time input.
`dual` is one model of both: bidirectional by default, causal where a call says `causal=True` (its
ar sequences). `bd3lm` attends by an explicit mask (`attention_mask`: block-causal, or the x_t ⊕ x_0
mask of sweeper.trainer.objectives.block_diffusion_mask).
An ar model trained on several token orderings (sweeper.trainer.orderings) rotates each query by
the original position of the token it is to predict, and each key by its own token's.
Attention width is heads * head_dim, which may differ from d_model: q/k/v map d_model to that width
and the output projection maps it back. The embedding has `padded_vocab_size` rows (the tokenizer's
tokens, the mdm mask id, padding); the output head scores the tokenizer's tokens only, so the mask
id and padding are never predicted and an untrained model scores ln(vocab_size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sweeper.trial import TrialConfig, padded_vocab_size


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    vocab_size: int
    d_model: int
    h_f: int
    heads: int
    head_dim: int
    layers: int
    seq_len: int
    dropout: float  # on the embedding and on each block's two residual branches
    causal: bool
    attention_dropout: float | None = None  # on attention probabilities; None: `dropout`
    orderings: int = 1  # ar: >1 rotates queries by the next token's position (sweeper.trainer.orderings)
    rope_base: float = 10_000.0
    norm_eps: float = 1e-5

    @classmethod
    def from_trial(cls, c: TrialConfig) -> ModelConfig:
        return cls(vocab_size=c.vocab_size, d_model=c.d_model, h_f=c.h_f, heads=c.heads,
                   head_dim=c.head_dim, layers=c.layers, seq_len=c.seq_len, dropout=c.dropout,
                   causal=c.family == "ar", attention_dropout=c.attention_dropout_rate,
                   orderings=c.orderings)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def rotary_tables(head_dim: int, seq_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of position * frequency for the rotate-half layout (GPT-NeoX, Megatron:
    the two halves of each head are the pair coordinates), each (seq_len, head_dim), fp32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)  # (T, hs/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1).float(), torch.cat((-sin, sin), dim=-1).float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, nh, T, hs), cos and sin (T, hs) or, per sequence, (B, 1, T, hs):
    (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) per half. Written as
    x * cos + swap(x) * signed sin: two full-width multiplies instead of four half-width ones,
    about half the time on a CPU, and one fusion under compile."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat((x2, x1), dim=-1) * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.heads, self.head_dim, self.causal = c.heads, c.head_dim, c.causal
        self.dropout = c.dropout if c.attention_dropout is None else c.attention_dropout
        width = c.heads * c.head_dim
        self.qkv = nn.Linear(c.d_model, 3 * width, bias=False)
        self.out = nn.Linear(width, c.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                query_rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | bool | None = None) -> torch.Tensor:
        """query_rope: other (cos, sin) for the queries than the keys' (several orderings). mask:
        None for the model's own attention, a bool for causal or not, or a (T, T) bool tensor, True
        where a query (row) may attend to a key."""
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, nh, T, hs) each
        q, k = apply_rotary(q, *(query_rope or (cos, sin))), apply_rotary(k, cos, sin)
        tensor_mask = mask if isinstance(mask, torch.Tensor) else None
        causal = self.causal if mask is None else (mask if isinstance(mask, bool) else False)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=tensor_mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, nh * hs)
        return self.out(y)


class SwiGLU(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(c.d_model, 2 * c.h_f, bias=False)  # one matmul for both branches
        self.down = nn.Linear(c.h_f, c.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, h_f) each
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(c.d_model, c.norm_eps)
        self.attn = Attention(c)
        self.mlp_norm = RMSNorm(c.d_model, c.norm_eps)
        self.mlp = SwiGLU(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                query_rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | bool | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, query_rope, mask))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


RESIDUAL_OUTPUTS = ("attn.out.weight", "mlp.down.weight")  # the matrices that write into the residual


class Transformer(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(padded_vocab_size(c.vocab_size), c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.d_model, c.norm_eps)
        # several orderings read positions 0..seq_len (a sample holds seq_len + 1 tokens)
        cos, sin = rotary_tables(c.head_dim, c.seq_len + (c.orderings > 1), c.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def init_weights(self, std: float, seed: int) -> None:
        """Normal(0, std) for every matrix (embedding included), except the two that write into the
        residual stream, the attention output and the MLP down-projection: Normal(0, std/√(2·layers)),
        as Megatron-LM draws them (`scaled_init_method_normal`, after GPT-2's residual scaling), which
        the paper trained with unchanged; ones for the norms. Seeded here, on the CPU, so the same
        seed gives the same weights on every device and process."""
        generator = torch.Generator().manual_seed(seed)
        residual_std = std / math.sqrt(2 * self.config.layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    scale = residual_std if name.endswith(RESIDUAL_OUTPUTS) else std
                    p.copy_(torch.randn(p.shape, generator=generator) * scale)
                else:  # RMSNorm gains, the only vectors (no biases anywhere)
                    p.fill_(1.0)

    def forward(self, idx: torch.Tensor, select: torch.Tensor | None = None,
                positions: torch.Tensor | None = None,
                next_positions: torch.Tensor | None = None, causal: bool | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) token ids (mask id allowed) -> logits (B, T, vocab_size); with `select`, a
        (B, T) bool tensor, only the selected positions are scored: logits (M, vocab_size) for the
        M selected positions in row-major order (`idx[select]`'s order). mdm scores only its masked
        positions this way, since its loss is zero at every other one: the final norm, the output
        head and the cross-entropy then cost M/(B·T) of the full ones (about half for mdm).

        positions (B, T): each token's original position, for RoPE, when the sequence is read in
        another order (default 0..T-1); next_positions (B, T): the original position of the token
        each input predicts, by which a model of several orderings rotates the queries (default
        1..T, the natural order; a one-ordering model rotates them as the keys, by `positions`).
        causal: this call's attention instead of the model's own (dual). attention_mask (T, T) bool:
        True where a query (row) may attend to a key (bd3lm); it overrides both."""
        T = idx.shape[1]
        if positions is None:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, hs)
        else:
            cos, sin = self._rotary(positions)
        query_rope = None
        if self.config.orderings > 1:
            query_rope = self._rotary(next_positions if next_positions is not None else
                                      torch.arange(1, T + 1, device=idx.device))
        mask = attention_mask if attention_mask is not None else causal
        x = self.drop(self.embed(idx))  # (B, T, d)
        for block in self.blocks:
            x = block(x, cos, sin, query_rope, mask)
        if select is not None:
            x = x[select]  # (M, d): the norm and the head act per position
        x = self.norm(x)
        weight = self.embed.weight  # tied head
        vocab = self.config.vocab_size
        if weight.is_cuda:
            # the padded width keeps the big matmul tensor-core aligned; the slice fuses into the
            # loss under torch.compile
            return F.linear(x, weight)[..., :vocab]
        return F.linear(x, weight[:vocab])  # (B, T, V) or (M, V)

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE's cos and sin at `positions`: (T,) -> (T, hs) each; per sequence, (B, T) -> (B, 1, T, hs)."""
        if positions.dim() == 1:
            return self.rope_cos[positions], self.rope_sin[positions]
        return self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)

    def num_params(self) -> int:
        """Actual parameter count, the tied embedding counted once."""
        return sum(p.numel() for p in self.parameters())
