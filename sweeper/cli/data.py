"""`sweeper data SPEC`: prepare (or verify) a sweep's token pools and validation set, and show them."""

from __future__ import annotations

import argparse
from typing import Any

from sweeper.cli.context import Context
from sweeper.cli.spec import add_profile_arguments


def register(subparsers: Any) -> None:
    data = subparsers.add_parser("data", help="prepare the token pools and validation set (cached, shared)",
                                 description="Tokenize and cache the pools every trial of SPEC needs (one array "
                                             "per source and tokenizer; pool U = its first U tokens) and the "
                                             "validation set, under the profile's storage. A second call checks "
                                             "every cached file against its checksums, rebuilds a cache that "
                                             "fails them, and otherwise does nothing.")
    data.add_argument("spec", metavar="SPEC", help="sweep spec (YAML)")
    add_profile_arguments(data)
    data.set_defaults(handler=run_data)


def run_data(args: argparse.Namespace) -> int:
    from sweeper.console import console

    ctx = Context(args)
    spec, plan = ctx.spec, ctx.plan
    storage = ctx.profile.storage_location()
    unique_tokens = sorted({trial.unique_tokens for trial in plan.trials})
    from sweeper.data.progress import prepare_with_progress

    prepared = prepare_with_progress(spec, unique_tokens, storage, console=console)
    manifest = prepared.manifest
    if prepared.action == "reused":
        console.print(f"{spec.name}: already prepared at {manifest.uri} (nothing to do)", markup=False, emoji=False)
    else:
        verb = "prepared" if prepared.action == "built" else "updated the manifest"
        console.print(f"{spec.name}: {verb} in {prepared.seconds:.1f} s at {manifest.uri}", markup=False, emoji=False)
    _summary(console, spec, manifest, unique_tokens)
    return 0


def _summary(console: Any, spec: Any, manifest: Any, unique_tokens: list[int]) -> None:
    from rich.padding import Padding
    from rich.table import Table

    import math

    from sweeper.data.sources import describe
    from sweeper.units import fmt_count

    symbols = manifest.tokenizer.kind == "symbols"
    per = "symbols/token" if symbols else "bytes/token"
    tok = manifest.tokenizer
    console.print(f"  tokenizer   {tok.kind}: {tok.description}; {tok.vocab_size:,} ids, end of document = "
                  f"{tok.eod_id}; fingerprint {tok.fingerprint[:12]}", markup=False, emoji=False)
    console.print(f"  train       {describe(spec.data.train)}", markup=False, emoji=False)
    if manifest.entropy_rate_nats_per_symbol is not None:
        nats = manifest.entropy_rate_nats_per_symbol
        console.print(f"  entropy     {nats:.4f} nats/symbol ({nats / math.log(2):.4f} bits): the "
                      "irreducible loss per symbol under the `symbols` tokenizer", markup=False, emoji=False)
    val = manifest.validation
    origin = "held out from the start of the train source, before every pool" if manifest.held_out \
        else f"from {describe(spec.data.validation)}"
    console.print(f"  validation  {val.tokens:,} tokens ({_plural(val.documents, 'document')}), {origin}; "
                  f"{val.bytes_per_token:.2f} {per}", markup=False, emoji=False)
    table = Table(box=None, pad_edge=False, padding=(0, 2))
    for column in ("pool U", "tokens", "documents", per):
        table.add_column(column, justify="right")
    for u in unique_tokens:
        pool = manifest.pool(u)
        table.add_row(fmt_count(u), f"{pool.tokens:,}", f"{pool.documents:,}", f"{pool.bytes_per_token:.2f}")
    console.print(Padding(table, (0, 0, 0, 2), expand=False))
    train = manifest.train
    note = f"; {manifest.dropped_documents:,} train documents skipped (same text as validation)" \
        if manifest.dropped_documents else ""
    stored = train.data.bytes + val.data.bytes
    console.print(f"  cache       {train.tokens:,} train + {val.tokens:,} validation tokens as "
                  f"{_dtype(manifest.dtype)} ({stored:,} bytes){note}", markup=False, emoji=False)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _dtype(code: str) -> str:
    import numpy as np

    return np.dtype(code).name


