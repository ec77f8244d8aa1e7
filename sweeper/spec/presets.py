"""Model presets of the study (PAPER.md, named as in datablations) and the parameter-count formula.

Pure data and arithmetic: no torch. `num_params` is the paper's bookkeeping N used for C = 6ND;
`num_params_actual` is what the trainer's model really holds (attention width heads x head_dim,
RMSNorm gains, the embedding padded for the mask token), logged beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweeper.spec.schema import FieldError, spec_field
from sweeper.trial import padded_vocab_size

PAPER_VOCAB_SIZE = 50257


def swiglu_hidden(d_model: int) -> int:
    """h_f = int((8h/3)/64)*64, the paper's SwiGLU width (PAPER.md)."""
    return int((8 * d_model / 3) / 64) * 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A transformer shape every family shares (they differ only in attention mask, loss and inputs)."""

    name: str
    d_model: int = spec_field(positive=True, max=2**17)
    layers: int = spec_field(positive=True, max=4096)
    heads: int = spec_field(positive=True, max=4096)
    head_dim: int | None = spec_field(None, positive=True, max=2**16, doc="default: d_model / heads")
    h_f: int | None = spec_field(None, positive=True, max=2**20, doc="SwiGLU width; default int((8 d_model/3)/64)*64")

    def __post_init__(self) -> None:
        if self.head_dim is None:
            if self.d_model % self.heads:
                raise FieldError("heads", f"d_model {self.d_model} is not divisible by heads {self.heads}; "
                                          "set head_dim")
            object.__setattr__(self, "head_dim", self.d_model // self.heads)
        if self.head_dim % 2:  # type: ignore[operator]
            # the trainer's TrialConfig refuses it too; said here, it is said at the model's file:line
            raise FieldError("head_dim", f"head_dim {self.head_dim} is odd; rotary embeddings need an even "
                                         "head_dim: set head_dim, or heads so that d_model / heads is even")
        if self.h_f is None:
            if swiglu_hidden(self.d_model) == 0:
                raise FieldError("d_model", f"d_model {self.d_model} gives a SwiGLU width of 0; set h_f")
            object.__setattr__(self, "h_f", swiglu_hidden(self.d_model))

    @property
    def attention_width(self) -> int:
        return self.heads * self.head_dim  # type: ignore[operator]

    def dimensions(self) -> dict[str, int]:
        return {"d_model": self.d_model, "h_f": self.h_f, "heads": self.heads,  # type: ignore[dict-item]
                "head_dim": self.head_dim, "layers": self.layers}  # type: ignore[dict-item]


def num_params(model: ModelSpec, vocab_size: int) -> int:
    """N = 4·l·h² + 3·l·h·h_f + 6·l·h + V·h (PAPER.md; embeddings counted once, V unpadded)."""
    l, h, h_f = model.layers, model.d_model, model.h_f
    return 4 * l * h * h + 3 * l * h * h_f + 6 * l * h + vocab_size * h  # type: ignore[operator]


def num_params_actual(model: ModelSpec, vocab_size: int) -> int:
    """Parameters the trainer's model holds: q,k,v,o at heads·head_dim, SwiGLU, RMSNorm gains, tied padded embedding."""
    h, a = model.d_model, model.attention_width
    per_layer = 4 * h * a + 3 * h * model.h_f + 2 * h  # type: ignore[operator]
    return model.layers * per_layer + h + padded_vocab_size(vocab_size) * h


def _preset(name: str, d_model: int, h_f: int, heads: int, head_dim: int, layers: int) -> ModelSpec:
    return ModelSpec(name=name, d_model=d_model, h_f=h_f, heads=heads, head_dim=head_dim, layers=layers)


# name: (d_model, h_f, heads, head_dim, layers), PAPER.md "Model presets".
PRESETS: dict[str, ModelSpec] = {
    p.name: p
    for p in (
        _preset("7M", 128, 320, 4, 32, 3),
        _preset("14M", 224, 576, 7, 32, 4),
        _preset("20M", 288, 768, 7, 32, 5),
        _preset("35M", 448, 1152, 7, 32, 6),
        _preset("44M", 512, 1344, 8, 64, 8),
        _preset("57M", 576, 1536, 9, 64, 9),
        _preset("74M", 640, 1664, 10, 64, 10),
        _preset("90M", 640, 1664, 10, 64, 13),
        _preset("106M", 640, 1664, 10, 64, 16),
        _preset("117M", 768, 2048, 12, 64, 12),
        _preset("140M", 768, 2048, 12, 64, 15),
        _preset("163M", 768, 2048, 12, 64, 18),
        _preset("175M", 896, 2368, 14, 64, 14),
        _preset("196M", 896, 2368, 14, 64, 16),
        _preset("217M", 896, 2368, 14, 64, 18),
        _preset("251M", 1024, 2688, 16, 64, 16),
        _preset("278M", 1024, 2688, 16, 64, 18),
        _preset("306M", 1024, 2688, 16, 64, 20),
        _preset("425M", 1280, 3392, 10, 128, 18),
        _preset("489M", 1280, 3392, 10, 128, 21),
        _preset("509M", 1408, 3712, 11, 128, 18),
        _preset("552M", 1280, 3392, 10, 128, 24),
        _preset("587M", 1408, 3712, 11, 128, 21),
        _preset("632M", 1536, 4096, 12, 128, 19),
        _preset("664M", 1408, 3712, 11, 128, 24),
        _preset("724M", 1536, 4096, 12, 128, 22),
        _preset("816M", 1536, 4096, 12, 128, 25),
        _preset("893M", 1792, 4736, 14, 128, 20),
        _preset("1018M", 1792, 4736, 14, 128, 23),
        _preset("1143M", 1792, 4736, 14, 128, 26),
        _preset("1266M", 2048, 5440, 16, 128, 22),
        _preset("1424M", 2176, 5760, 17, 128, 22),
        _preset("1593M", 2048, 5440, 16, 128, 28),
        _preset("2007M", 2304, 6144, 18, 128, 28),
        _preset("2283M", 2304, 6144, 18, 128, 32),
        _preset("2639M", 2560, 6784, 20, 128, 30),
    )
}
