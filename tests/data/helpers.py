"""Small corpora and specs the data tests share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sweeper.storage import StorageLocation
from sweeper.spec import DataSpec, FilesSource, SyntheticSource, TokenizerSpec


def numbered_lines(count: int, *, start: int = 0, words: int = 12) -> str:
    """One document per line, each naming its number, so tokens can be traced back to documents."""
    vocabulary = ("the", "river", "ran", "past", "a", "mill", "where", "grain", "was", "ground", "into", "flour",
                  "and", "bread", "for", "town")
    lines = []
    for i in range(start, start + count):
        body = " ".join(vocabulary[(i * 7 + j * 3) % len(vocabulary)] for j in range(words))
        lines.append(f"doc{i} {body}.")
    return "\n".join(lines) + "\n"


def gpt2() -> TokenizerSpec:
    return TokenizerSpec(kind="pretrained", name="gpt2", vocab_size=50257)


def files_data(paths: list[str], *, validation: list[str] | None = None, validation_tokens: int = 64,
               tokenizer: TokenizerSpec | None = None, seq_len: int = 16, **source: object) -> DataSpec:
    return DataSpec(train=FilesSource(kind="files", paths=tuple(paths), **source),  # type: ignore[arg-type]
                    validation=FilesSource(kind="files", paths=tuple(validation), **source)  # type: ignore[arg-type]
                    if validation else None,
                    tokenizer=tokenizer or gpt2(), seq_len=seq_len, validation_tokens=validation_tokens)


def synthetic_data(*, validation_tokens: int = 1024, separate_validation: bool = False, **source: object) -> DataSpec:
    settings = {"states": 16, "symbols": 64, "branching": 2, "emissions": 2, "document_length": 256, "seed": 0}
    train = SyntheticSource(kind="synthetic", **settings | source)  # type: ignore[arg-type]
    return DataSpec(train=train, validation=train if separate_validation else None,
                    tokenizer=TokenizerSpec(kind="symbols", vocab_size=train.symbols + 1), seq_len=16,
                    validation_tokens=validation_tokens)


def leftovers(root: Path) -> list[str]:
    """Files a failed preparation left under a storage folder (a trained BPE is complete, so allowed)."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "tokenizers" not in p.parts)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def storage(self, prefix: str) -> StorageLocation:
        return StorageLocation(path=f"s3://{self.bucket}/{prefix}", endpoint=self.endpoint)
