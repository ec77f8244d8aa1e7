"""The sweep spec: what to train, as frozen dataclasses read strictly from YAML.

A spec has `version`, `name`, `description`, an optional `extends`, and the blocks `data`,
`train`, `models`, `grid` (with `include`, `exclude`, `overrides`), `tracking` and `evals`. Where a
study runs (Ray, MLflow, storage, hardware) is a backend profile's business, not the spec's.
Every error names file:line and the key path; nothing here touches the network or the data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from sweeper.spec.evals import EvalsSpec
from sweeper.spec.grid import MAX_GRID_POINTS, MAX_GRID_POINTS_LIMIT, MAX_TOKENS, Grid, read_grid
from sweeper.spec.presets import PRESETS, ModelSpec
from sweeper.spec.schema import FieldError, check_keys, describe, read_dataclass, read_number, read_value, \
    require_mapping, spec_field
from sweeper.spec.nodes import Node, SpecError, load_yaml, merge
from sweeper.trial import HOW_KEYS  # noqa: F401  (how-not-what keys, left out of ids: defined with TrialConfig)
from sweeper.trial import MAX_ORDERINGS
from sweeper.trial import FAMILIES, Family  # noqa: F401  (the families, defined with TrialConfig)

SPEC_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# A trial's MLflow run name, family-model-U…-e…-s…, must stay within MLflow's 250 characters.
MAX_NAME = 100
# MLflow's SQL stores hold 256 characters of an experiment name; a folder name holds 255 bytes.
MAX_EXPERIMENT_CHARS, MAX_EXPERIMENT_BYTES = 250, 255
MAX_SEED = 2**32 - 1  # numpy and torch both take it


# --- data ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class HFSource:
    """A Hugging Face dataset (the paper: allenai/c4, config en)."""

    kind: Literal["hf"]
    dataset: str
    config: str | None = None
    split: str = "train"
    text_field: str = "text"
    revision: str | None = None
    streaming: bool = spec_field(True, doc="how, not what: excluded from trial ids")


@dataclass(frozen=True, slots=True, kw_only=True)
class FilesSource:
    """Local or s3:// files by glob: plain text, jsonl or parquet."""

    kind: Literal["files"]
    paths: tuple[str, ...]
    format: Literal["auto", "text", "jsonl", "parquet"] = "auto"
    text_field: str = "text"
    document: Literal["line", "file"] = spec_field("line", doc="plain text: one document per line or per file")


@dataclass(frozen=True, slots=True, kw_only=True)
class BundledSource:
    """Text that ships with an installed package, so a fresh offline machine can run the quickstart."""

    kind: Literal["bundled"]
    name: Literal["shakespeare"] = "shakespeare"


@dataclass(frozen=True, slots=True, kw_only=True)
class SyntheticSource:
    """A seeded hidden-Markov source: each state moves to one of `branching` successors and emits one
    of `emissions` symbols, so its entropy rate per symbol is known and context decides much of it.
    A state's successors emit disjoint symbols (the symbol seen names the move), which is what makes
    that rate exact: hence branching x emissions <= symbols."""

    kind: Literal["synthetic"]
    process: Literal["hmm"] = "hmm"
    states: int = spec_field(64, positive=True, max=4096,
                             doc="building the source solves a dense system in the states (~20 s at 4,096)")
    symbols: int = spec_field(255, min=2, max=2**31 - 2)
    branching: int = spec_field(2, positive=True, max=2**10)
    emissions: int = spec_field(2, positive=True, max=2**16)
    document_length: int = spec_field(1024, positive=True, max=10**9, doc="symbols per document")
    seed: int = spec_field(0, min=0, max=MAX_SEED)

    def __post_init__(self) -> None:
        if self.branching > self.states:
            raise FieldError("branching", f"branching {self.branching} exceeds states {self.states}")
        if self.branching * self.emissions > self.symbols:
            raise FieldError("emissions", f"branching x emissions = {self.branching * self.emissions} exceeds "
                                          f"symbols {self.symbols}")


Source = HFSource | FilesSource | BundledSource | SyntheticSource
SOURCE_KINDS: dict[str, type] = {"hf": HFSource, "files": FilesSource, "bundled": BundledSource,
                                 "synthetic": SyntheticSource}


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenizerSpec:
    """`pretrained` (a Hub name or a file), `train_bpe` (byte-level BPE learned from the train text),
    or `symbols` (a synthetic source's own symbols plus an end-of-document id)."""

    kind: Literal["pretrained", "train_bpe", "symbols"]
    vocab_size: int = spec_field(min=2, max=2**31 - 1)
    name: str | None = None
    file: str | None = None
    train_text_bytes: int | None = spec_field(None, positive=True, max=10**13, unit="bytes",
                                              doc="train_bpe: learn from the first this-many bytes of text")
    seed: int = spec_field(0, min=0, max=MAX_SEED)

    def __post_init__(self) -> None:
        if self.kind == "pretrained" and (self.name is None) == (self.file is None):
            raise FieldError("", "a pretrained tokenizer needs exactly one of `name` (a Hub name) or `file`")
        if self.kind != "pretrained":
            for key in ("name", "file"):
                if getattr(self, key) is not None:
                    raise FieldError(key, f"`{key}` applies to pretrained tokenizers, not kind {self.kind}")
        if self.kind != "train_bpe" and self.train_text_bytes is not None:
            raise FieldError("train_text_bytes", "`train_text_bytes` applies to kind train_bpe only")
        if self.kind == "train_bpe":
            if self.vocab_size < 257:
                raise FieldError("vocab_size", f"a byte-level BPE needs vocab_size > 256, got {self.vocab_size}")
            if self.train_text_bytes is None:
                object.__setattr__(self, "train_text_bytes", 64_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSpec:
    """Sources, tokenizer and sample length. Without `validation`, the validation set is held out
    from the start of the train source, before every pool, so it never overlaps one and does not
    move when a sweep adds a larger pool."""

    train: Source
    tokenizer: TokenizerSpec
    seq_len: int = spec_field(positive=True, max=2**20)
    validation_tokens: int = spec_field(positive=True, max=MAX_TOKENS)
    validation: Source | None = None

    def __post_init__(self) -> None:
        if self.validation_tokens < self.seq_len + 1:
            raise FieldError("validation_tokens", f"validation_tokens {self.validation_tokens:,} is less than "
                                                  f"one sample (seq_len + 1 = {self.seq_len + 1:,} tokens)")
        if self.tokenizer.kind == "symbols":
            for source in (self.train, self.validation):
                if source is not None and not isinstance(source, SyntheticSource):
                    raise FieldError("tokenizer", "tokenizer kind `symbols` needs synthetic sources")
            expected = self.train.symbols + 1  # type: ignore[union-attr]
            if self.tokenizer.vocab_size != expected:
                raise FieldError("tokenizer", f"tokenizer.vocab_size must be symbols + 1 (end of document) "
                                              f"= {expected}, got {self.tokenizer.vocab_size}")


def read_source(node: Node) -> Source:
    require_mapping(node, "a data source")
    kind = node.value.get("kind")
    if kind is None:
        raise node.error(f"missing required key 'kind' (one of {', '.join(SOURCE_KINDS)})")
    cls = SOURCE_KINDS.get(kind.value) if isinstance(kind.value, str) else None
    if cls is None:
        read_value(Literal["hf", "files", "bundled", "synthetic"], kind)  # raises with did-you-mean
    return read_dataclass(cls, node, f"a {kind.value} source")  # type: ignore[arg-type]


def read_data(node: Node) -> DataSpec:
    require_mapping(node, "data settings")
    check_keys(node, [f.name for f in fields(DataSpec)], "data")
    values = dict(node.value)
    parsed = {}
    for key in ("train", "validation"):
        if key in values and values[key].value is not None:
            parsed[key] = read_source(values.pop(key))
    if "train" not in parsed:
        raise node.error("missing required key 'train' in data")
    stripped = Node({k: v for k, v in values.items() if k not in parsed}, node.file, node.line, node.path)
    return read_dataclass(DataSpec, stripped, "data", **parsed)


# --- training -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class TrainSpec:
    """Trainer settings; defaults are the paper's (PAPER.md, "Setup")."""

    optimizer: Literal["adamw"] = "adamw"
    betas: tuple[float, float] = spec_field((0.9, 0.95), min=0, below=1)
    eps: float = spec_field(1e-8, positive=True, max=1)
    lr_peak: float = spec_field(2e-4, positive=True, max=1e4)
    lr_min: float = spec_field(2e-5, min=0, max=1e4)
    warmup_fraction: float = spec_field(0.01, min=0, below=1)
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    # wsd only (warmup-stable-decay, Hägele et al. arXiv 2405.18392; sweeper.trainer.optim.lr_at); in trial ids
    # only where they differ from these defaults, so no earlier id changes (sweeper.plan)
    warmup_steps: int | None = spec_field(None, min=0, max=2**40, doc="wsd: warmup optimizer steps, one count for "
                                          "every epoch count; null: 1% of one epoch's steps, at least 1")
    decay_fraction: float = spec_field(0.2, positive=True, below=1,
                                       doc="wsd: decay steps = max(1, round(decay_fraction x steps))")
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"
    share_prefix: bool = spec_field(False, doc="how, not what: wsd trials alike but for epochs train one trunk")
    weight_decay: float = spec_field(0.1, min=0, max=100)
    grad_clip: float | None = spec_field(1.0, positive=True, max=1e6, doc="null turns clipping off")
    dropout: float = spec_field(0.1, min=0, below=1)
    init_std: float = spec_field(0.02, positive=True, max=10)
    precision: Literal["bf16", "fp32"] = "bf16"
    batch_sequences: int = spec_field(256, positive=True, max=2**20, doc="global batch, in sequences of seq_len")
    eval_points: int = spec_field(24, positive=True, max=10_000,
                                  doc="evaluations after the untrained one; the last is final")
    eval_spacing: Literal["log", "linear"] = "log"
    mdm_eval_samples: int = spec_field(32, positive=True, max=100_000,
                                       doc="Monte-Carlo draws of t per validation sequence")
    # the paper's ablations and the mdm objective's options (sweeper.trial.OPTION_DEFAULTS: in trial
    # ids only where they differ from these defaults)
    attention_dropout: float | None = spec_field(None, min=0, below=1,
                                                 doc="on attention probabilities; null: as dropout")
    input_mask_rate: float = spec_field(0.0, min=0, below=1, doc="ar: input tokens replaced by the mask id")
    orderings: int = spec_field(1, positive=True, max=MAX_ORDERINGS, doc="ar: fixed token orderings")
    mdm_loss_weight: Literal["elbo", "unweighted"] = "elbo"
    mdm_t_sampling: Literal["iid", "stratified"] = "iid"
    mdm_min_mask_rate: float = spec_field(1e-3, positive=True, below=1, doc="mdm: p = (1 - m) t + m")
    # the options of the families between ar and mdm (sweeper.trial.DUAL_OPTIONS, BD3LM_OPTIONS)
    ar_fraction: float = spec_field(0.5, min=0, max=1, doc="dual: probability a sequence trains as ar")
    dual_val_loss: Literal["ar", "mdm"] = "ar"
    block_size: int = spec_field(4, positive=True, max=2**20, doc="bd3lm: tokens per block, dividing seq_len")
    seed: int = spec_field(1234, min=0, max=MAX_SEED)
    compile: bool = spec_field(True, doc="how, not what: excluded from trial ids")
    checkpoint_every_minutes: float = spec_field(30.0, positive=True, max=1e6,
                                                 doc="how, not what: excluded from ids")

    def __post_init__(self) -> None:
        if self.lr_min > self.lr_peak:
            raise FieldError("lr_min", f"lr_min {self.lr_min:g} is above lr_peak {self.lr_peak:g}")
        for key in WSD_KEYS if self.schedule != "wsd" else ():
            if getattr(self, key) != WSD_KEYS[key]:
                raise FieldError(key, f"{key} applies to schedule wsd only, not {self.schedule}: set schedule: wsd "
                                      f"or leave {key} out")


TRAIN_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainSpec))
_DEFAULTS = {f.name: f.default for f in fields(TrainSpec)}
WSD_KEYS = {key: _DEFAULTS[key] for key in ("warmup_steps", "decay_fraction", "decay_shape", "share_prefix")}


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackingSpec:
    """`experiment` names the MLflow experiment and the sweep's folder under the profile's storage
    (`{storage.path}/{experiment}/{trial id}`), so it must be one safe folder name; default: the spec's name."""

    experiment: str | None = None

    def __post_init__(self) -> None:
        problem = experiment_problem(self.experiment) if self.experiment is not None else None
        if problem:
            raise FieldError("experiment", f"experiment {describe(self.experiment)} {problem}")


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a sweep or a model (it is part of trial names and MLflow run names), or None."""
    if not _NAME.fullmatch(name):
        return "may use only letters, digits, '_', '.' and '-', starting with a letter or digit"
    if len(name) > MAX_NAME:
        return f"is {len(name):,} characters; a name may have at most {MAX_NAME}"
    return None


def experiment_problem(experiment: str) -> str | None:
    """Why `experiment` cannot name an MLflow experiment and the sweep's storage folder, or None."""
    if len(experiment) > MAX_EXPERIMENT_CHARS or len(experiment.encode()) > MAX_EXPERIMENT_BYTES:
        return (f"is too long: MLflow keeps at most {MAX_EXPERIMENT_CHARS} characters, a folder name "
                f"{MAX_EXPERIMENT_BYTES} bytes")
    if "/" in experiment or "\\" in experiment or experiment in (".", ".."):
        return ("names the sweep's folder under storage.path, so it may not contain '/' or '\\' "
                "or be '.' or '..'")
    if not experiment.isprintable():
        return "may not contain control characters"
    if experiment != experiment.strip():
        return "may not begin or end with a space"
    return None


# --- the spec -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class SweepSpec:
    version: int
    name: str
    description: str
    data: DataSpec
    train: TrainSpec
    models: Mapping[str, ModelSpec]  # built-in presets and the spec's own
    grid: Grid
    experiment: str
    files: tuple[str, ...]  # the spec file first, then the files it extends
    evals: EvalsSpec | None = None  # downstream tasks (sweeper.spec.evals); not part of any trial id

    @property
    def file(self) -> str:
        return self.files[0]

    @property
    def vocab_size(self) -> int:
        return self.data.tokenizer.vocab_size


TOP_KEYS = ("version", "name", "description", "extends", "data", "train", "models", "grid", "include",
            "exclude", "overrides", "tracking", "max_grid_points", "evals")


def load_spec(path: str | Path) -> SweepSpec:
    """Read, merge (`extends`) and validate a spec file. Raises SpecError naming file:line."""
    root, files = _load_chain(Path(path), [])
    require_mapping(root, "spec sections")
    check_keys(root, TOP_KEYS, "the spec")
    top = root.value
    for key in ("version", "name", "data", "grid"):
        if key not in top:
            raise root.error(f"missing required key '{key}'")
    version = read_value(int, top["version"])
    if version != SPEC_VERSION:
        raise top["version"].error(f"unsupported spec version {version}; this sweeper reads version {SPEC_VERSION}")
    name = read_value(str, top["name"])
    problem = name_problem(name)
    if problem:
        raise top["name"].error(f"name {describe(name)} {problem}")
    description = read_value(str, top["description"]) if "description" in top else ""
    data = read_data(top["data"])
    train = read_dataclass(TrainSpec, top["train"], "train") if "train" in top else TrainSpec()
    models = _read_models(top.get("models"))
    tracking = read_dataclass(TrackingSpec, top["tracking"], "tracking") if "tracking" in top else TrackingSpec()
    evals = read_dataclass(EvalsSpec, top["evals"], "evals") if "evals" in top else None
    max_points = read_number(top["max_grid_points"], integral=True, positive=True, max=MAX_GRID_POINTS_LIMIT) \
        if "max_grid_points" in top else MAX_GRID_POINTS
    grid = read_grid(root, models=models, train_fields=_train_fields(), max_points=max_points)
    return SweepSpec(version=version, name=name, description=description, data=data, train=train,
                     models=models, grid=grid, experiment=tracking.experiment or name, files=tuple(files),
                     evals=evals)


def _train_fields() -> dict[str, tuple[object, object]]:
    hints = typing.get_type_hints(TrainSpec)
    return {f.name: (hints[f.name], f.metadata) for f in fields(TrainSpec)}


def _load_chain(path: Path, seen: list[Path]) -> tuple[Node, list[str]]:
    resolved = path.resolve()
    node = load_yaml(path, display=_display(path))
    if not node.is_mapping:
        raise node.error("a spec must be a YAML mapping of sections")
    extends = node.value.get("extends")
    if extends is None:
        return node, [node.file]
    parent_name = read_value(str, extends)
    parent_path = path.parent / parent_name
    try:
        found = parent_path.is_file()
    except (OSError, ValueError) as error:  # a name too long for the filesystem, a NUL byte
        reason = getattr(error, "strerror", None) or str(error)
        raise extends.error(f"extends {describe(parent_name)}: {reason}") from None
    if not found:
        raise extends.error(f"extends {describe(parent_name)}: no such file {_display(parent_path)}")
    chain = [*seen, resolved, parent_path.resolve()]
    if chain[-1] in chain[:-1]:
        raise extends.error(f"`extends` loops: {' -> '.join(p.name for p in chain)}")
    parent, parent_files = _load_chain(parent_path, [*seen, resolved])
    own = Node({k: v for k, v in node.value.items() if k != "extends"}, node.file, node.line, node.path)
    return merge(parent, own), [node.file, *parent_files]


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read_models(node: Node | None) -> Mapping[str, ModelSpec]:
    models = dict(PRESETS)
    if node is None:
        return MappingProxyType(models)
    require_mapping(node, "model presets (name: {d_model, layers, heads, ...})")
    for name, child in node.value.items():
        if name in PRESETS:
            raise child.error(f"'{name}' is a built-in preset; give your model another name")
        problem = name_problem(name)
        if problem:
            raise child.error(f"model name {describe(name)} {problem}")
        models[name] = read_dataclass(ModelSpec, child, f"model {name}", name=name)
    return MappingProxyType(models)
