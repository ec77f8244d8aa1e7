"""Strict YAML for specs and profiles: every value keeps its file, line and key path.

PyYAML alone is too lenient for a spec language: it keeps the last of two duplicate keys,
constructs objects from tags, expands aliases without bound, reads `2e-4` as a string and
`010` as octal 8. Here a document is composed (aliases stay references, so composing is linear
in the file's size, and nesting is bounded before it can exhaust the stack), then converted into
`Node`s under a size budget, refusing duplicate keys, merge keys and any tag that is not a plain
YAML type. YAML's own number forms are never used: a scalar YAML would read as a number is kept
as written (`NumberText`) and read by sweeper's decimal grammar, `parse_number`, which knows
units (25M, 1.5B, 2e18, 100k), refuses octal, hex, binary and base-60 forms and non-ASCII digits,
and bounds a number's length and magnitude before converting it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from sweeper.console import UserError, one_line

MAX_FILE_BYTES = 2_000_000
MAX_NODES = 200_000  # values after alias expansion: a real spec has a few thousand
MAX_DEPTH = 64
MAX_NUMBER_CHARS = 40  # the longest plain number text read: 1_000_000_000_000_000 is 21
MAX_MAGNITUDE = Decimal("1e30")  # every number sweeper reads is 0 or within [1e-30, 1e30]
_RANGE = "sweeper reads numbers of magnitude 1e-30 to 1e30 (or 0)"

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
        super().__init__(one_line(f"{prefix}: {message}" if prefix else message))


class NumberText(str):
    """A plain scalar that YAML would read as a number, kept as written so that sweeper's grammar
    (`parse_number`) reads it; shown bare in messages (`got 16.5`, not `got '16.5'`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str.__str__(self)


class NumberRangeError(ValueError):
    """A number written in the grammar whose magnitude no spec or profile key accepts."""


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
        line = raw.count(b"\n", 0, error.start) + 1
        raise SpecError(f"not UTF-8 text (byte {error.start}: {raw[error.start:error.start + 1]!r})", file=name,
                        line=line) from None
    return parse_yaml(text, name)


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML composes recursively: bound the nesting before it can exhaust Python's stack."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _TooDeep(Exception):
    def __init__(self, line: int):
        self.line = line


def parse_yaml(text: str, name: str) -> Node:
    try:
        documents = list(yaml.compose_all(text, Loader=_DepthLimitedLoader))
    except _TooDeep as error:
        raise SpecError(f"nested deeper than {MAX_DEPTH} levels", file=name, line=error.line) from None
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(error, name) from None
    except yaml.reader.ReaderError as error:
        raise _reader_error(error, text, name) from None
    except yaml.YAMLError as error:
        raise SpecError(f"invalid YAML: {error}", file=name) from None
    if len(documents) != 1 or documents[0] is None:
        found = "is empty" if not documents or documents[0] is None else f"holds {len(documents)} documents"
        line = documents[1].start_mark.line + 1 if len(documents) > 1 and documents[1] is not None else 1
        raise SpecError(f"the file {found}; a spec is one YAML mapping", file=name, line=line)
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


def _reader_error(error: yaml.reader.ReaderError, text: str, name: str) -> SpecError:
    """A character YAML does not allow (NUL, a control byte): its line and column, the character escaped."""
    position = error.position if isinstance(error.position, int) and 0 <= error.position <= len(text) else 0
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    character = chr(error.character) if isinstance(error.character, int) else str(error.character)[:1] or "?"
    return SpecError(f"invalid YAML: character U+{ord(character):04X} at column {column} is not allowed; inside "
                     f"double quotes write it as {repr(character)[1:-1]}", file=name, line=line)


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
            if key_node.tag not in _PLAIN_TAGS:
                raise self._tag_error(key_node, path)
            key = key_node.value  # a key is a name: kept as written, never read as a number or a bool
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
        kind, text = node.tag.rsplit(":", 1)[1], node.value
        line = node.start_mark.line + 1
        if kind in ("int", "float"):
            if not _NUMBER.fullmatch(text):
                implicit = self.scalars.resolve(yaml.ScalarNode, text, (True, False))
                if node.style is not None or implicit != node.tag:  # written with a tag: !!int abc
                    raise SpecError(f"YAML tag '!!{kind}' needs a decimal number, got {text!r}", file=self.name,
                                    line=line, path=path)
                raise SpecError(f"{text!r} is {_yaml_number_kind(text)} to YAML 1.1; write a decimal number "
                                "(25M, 1.5e18, 0.1), or quote it if it is text", file=self.name, line=line, path=path)
            return NumberText(text)
        if kind == "bool":
            if text.lower() not in self.scalars.bool_values:
                raise SpecError(f"YAML tag '!!bool' on {text!r}: write true or false", file=self.name, line=line,
                                path=path)
            return self.scalars.bool_values[text.lower()]
        if kind == "null":
            return None
        return text  # a string, or a date kept as the text written

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

# Decimal only, ASCII digits only; a leading zero before more digits (010) is refused, since YAML
# 1.1 reads it as octal.
_NUMBER = re.compile(r"\s*([+-]?(?:(?:0|[1-9][0-9_]*)(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)\s*"
                     r"([kKMBGT]?)\s*", re.ASCII)
_SCALE = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_BYTES = re.compile(r"\s*([+-]?(?:(?:0|[1-9][0-9_]*)(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)\s*"
                    r"([KMGT]i?B|B)?\s*", re.ASCII)
_BYTE_SCALE = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def _yaml_number_kind(text: str) -> str:
    bare = text.strip().lstrip("+-").lower()
    if bare.startswith("0x"):
        return "a hexadecimal number"
    if bare.startswith("0b"):
        return "a binary number"
    if bare.startswith("0o") or re.fullmatch(r"0[0-9_]+", bare):
        return "an octal number"
    if ":" in bare:
        return "a base-60 number"
    if bare in (".inf", ".nan"):
        return "infinity or not-a-number"
    return "a number sweeper does not read"


def parse_number(value: Any) -> Decimal | None:
    """25M, 1.5B, 2e18, 2e-4, 100k, 1_000 or a YAML number -> exact Decimal; None if not a number.

    Raises NumberRangeError for a number outside [1e-30, 1e30] (zero aside): no key takes one, and
    converting such text (1e400, 5,000 digits) would overflow, lose it to 0 or inf, or take minutes.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _in_range(Decimal(value))
    if isinstance(value, float):
        return _in_range(Decimal(repr(value))) if value == value and abs(value) != float("inf") else None
    if not isinstance(value, str):
        return None
    return _decimal(value, _NUMBER, _SCALE)


def parse_bytes(value: Any) -> Decimal | None:
    """80GB, 24GiB, 512MB or a plain number of bytes -> Decimal; None if not a size."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return parse_number(value)
    if not isinstance(value, str):
        return None
    return _decimal(value, _BYTES, _BYTE_SCALE)


def _decimal(text: str, grammar: re.Pattern[str], scales: dict[Any, int]) -> Decimal | None:
    match = grammar.fullmatch(text)
    if not match:
        return None
    digits = match.group(1).replace("_", "")
    if len(digits) > MAX_NUMBER_CHARS:
        raise NumberRangeError(f"has {len(digits):,} characters, more than a number may; write it with an "
                               "exponent (1.5e12) or a unit (1.5T)")
    try:
        number = Decimal(digits)
    except InvalidOperation:  # an exponent beyond what Decimal represents
        raise NumberRangeError(f"is out of range: {_RANGE}") from None
    if number and not -100 <= number.adjusted() <= 100:
        raise NumberRangeError(f"is out of range: {_RANGE}")
    return _in_range(number * scales[match.group(2)])


def _in_range(number: Decimal) -> Decimal:
    if number and not 1 / MAX_MAGNITUDE <= abs(number) <= MAX_MAGNITUDE:
        raise NumberRangeError(f"is out of range: {_RANGE}")
    return number
