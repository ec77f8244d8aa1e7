"""Strict YAML for specs and profiles: every value keeps its file, line and key path.

PyYAML alone is too lenient for a spec language: it keeps the last of two duplicate keys,
constructs objects from tags, expands aliases without bound and reads `2e-4` as a string.
Here a document is composed (aliases stay references, so composing is linear in the file's
size), then converted into `Node`s under a size budget, refusing duplicate keys, merge keys and
any tag that is not a plain YAML type. Numbers with units (25M, 1.5B, 2e18, 100k) are parsed by
the schema that knows a number is expected, via `parse_number`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from sweeper.console import UserError

MAX_FILE_BYTES = 2_000_000
MAX_NODES = 200_000  # values after alias expansion: a real spec has a few thousand
MAX_DEPTH = 64

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}


class SpecError(UserError):
    """A user error located in a YAML file: `file:line key.path: message`."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, path: str = ""):
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}" if file and line else (file or "")
        prefix = " ".join(part for part in (where, path) if part)
        super().__init__(f"{prefix}: {message}" if prefix else message)


@dataclass(slots=True)
class Node:
    """One YAML value with where it was written. Mappings hold dict[str, Node], sequences list[Node]."""

    value: Any
    file: str
    line: int
    path: str

    def error(self, message: str) -> SpecError:
        return SpecError(message, file=self.file, line=self.line, path=self.path)

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.value, list)

    def plain(self) -> Any:
        """The value as plain Python (dicts, lists, scalars), locations dropped."""
        if isinstance(self.value, dict):
            return {key: child.plain() for key, child in self.value.items()}
        if isinstance(self.value, list):
            return [child.plain() for child in self.value]
        return self.value


def child_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def load_yaml(path: Path | str, *, display: str | None = None) -> Node:
    """Read one YAML file into located Nodes; any problem is a SpecError naming file:line."""
    path = Path(path)
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"file not found: {name}") from None
    except IsADirectoryError:
        raise SpecError(f"{name} is a folder, not a YAML file") from None
    except OSError as error:
        raise SpecError(f"cannot read {name}: {error.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(f"{name} is {len(raw):,} bytes; a spec may be at most {MAX_FILE_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{name} is not UTF-8 text (byte {error.start})") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> Node:
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(error, name) from None
    except yaml.YAMLError as error:
        raise SpecError(f"invalid YAML: {error}", file=name) from None
    if len(documents) != 1 or documents[0] is None:
        found = "is empty" if not documents or documents[0] is None else f"holds {len(documents)} documents"
        raise SpecError(f"{name} {found}; a spec is one YAML mapping")
    return _Converter(name).convert(documents[0], "", 0)


def _syntax_error(error: yaml.MarkedYAMLError, name: str) -> SpecError:
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark else None
    problem = error.problem or str(error)
    if "'\\t'" in problem or "\t" in problem:
        problem = "a tab character: YAML indentation must use spaces"
    elif error.context:
        problem = f"{problem} ({error.context})"
    return SpecError(f"invalid YAML: {problem}", file=name, line=line)


class _Converter:
    """Turns composed yaml.Nodes into Nodes, refusing what a spec must not contain."""

    def __init__(self, name: str):
        self.name = name
        self.budget = MAX_NODES
        self.scalars = yaml.SafeLoader("")  # only its scalar constructors are used

    def convert(self, node: yaml.Node, path: str, depth: int, line: int | None = None) -> Node:
        """`line` is the key's line for a mapping value, so errors point at the key, not the value below it."""
        line = line or node.start_mark.line + 1
        self.budget -= 1
        if self.budget < 0:
            raise SpecError(
                f"more than {MAX_NODES:,} values once aliases are expanded; refusing to expand further",
                file=self.name, line=line, path=path,
            )
        if depth > MAX_DEPTH:
            raise SpecError(f"nested deeper than {MAX_DEPTH} levels (a recursive alias?)", file=self.name, line=line, path=path)
        if isinstance(node, yaml.MappingNode):
            return Node(self._mapping(node, path, depth), self.name, line, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                raise self._tag_error(node, path)
            items = [self.convert(item, child_path(path, i), depth + 1) for i, item in enumerate(node.value)]
            return Node(items, self.name, line, path)
        return Node(self._scalar(node, path), self.name, line, path)

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, Node]:
        if node.tag != "tag:yaml.org,2002:map":
            raise self._tag_error(node, path)
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError("YAML merge keys (<<) are not supported; use `extends` or repeat the keys",
                                file=self.name, line=key_line, path=path)
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("a mapping key must be a plain name", file=self.name, line=key_line, path=path)
            key = str(self._scalar(key_node, path))
            if key in out:
                raise SpecError(
                    f"duplicate key '{key}' (first at line {out[key].line}); YAML would silently keep only the last",
                    file=self.name, line=key_line, path=child_path(path, key),
                )
            out[key] = self.convert(value_node, child_path(path, key), depth + 1, line=key_line)
        return out

    def _scalar(self, node: yaml.ScalarNode, path: str) -> Any:
        if node.tag not in _PLAIN_TAGS:
            raise self._tag_error(node, path)
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # a date is kept as the text written
        return self.scalars.construct_object(node, deep=True)

    def _tag_error(self, node: yaml.Node, path: str) -> SpecError:
        return SpecError(f"YAML tag {node.tag!r} is not allowed in a spec (only plain values)",
                         file=self.name, line=node.start_mark.line + 1, path=path)


def merge(base: Node, override: Node) -> Node:
    """`extends`: mappings merge key by key (recursively); anything else in `override` replaces."""
    if not (base.is_mapping and override.is_mapping):
        return override
    merged = dict(base.value)
    for key, child in override.value.items():
        merged[key] = merge(base.value[key], child) if key in base.value else child
    return Node(merged, override.file, override.line, override.path)


# --- numbers with units -------------------------------------------------------------------------

_NUMBER = re.compile(r"^\s*([+-]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKMBGT]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_BYTES = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([KMGT]i?B|B)?\s*$")
_BYTE_SCALE = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_number(value: Any) -> Decimal | None:
    """25M, 1.5B, 2e18, 2e-4, 100k, 1_000 or a YAML number -> exact Decimal; None if not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    if not isinstance(value, str):
        return None
    match = _NUMBER.match(value)
    if not match:
        return None
    try:
        return Decimal(match.group(1).replace("_", "")) * _SCALE[match.group(2)]
    except InvalidOperation:
        return None


def parse_bytes(value: Any) -> Decimal | None:
    """80GB, 24GiB, 512MB or a plain number of bytes -> Decimal; None if not a size."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return parse_number(value)
    if not isinstance(value, str):
        return None
    match = _BYTES.match(value)
    if not match:
        return None
    try:
        return Decimal(match.group(1)) * _BYTE_SCALE[match.group(2)]
    except InvalidOperation:
        return None
