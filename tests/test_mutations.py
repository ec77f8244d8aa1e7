"""Seeded mutants of every shipped spec and profile through `sweeper validate` (issue 15).

Each mutant deletes, duplicates or re-indents a line, swaps a key, replaces a value with an
extreme, non-finite, non-ASCII, tagged, deeply nested or wrongly typed one, inserts a control
byte, or truncates the file. Whatever comes out, `validate` ends in exit 0, or in exit 2 with one
line `file:line key.path: message` on stderr: never a traceback, a hang or an unlocated error.
SWEEPER_MUTANTS=N runs N mutants per file instead (a longer campaign; the seed stays fixed).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, SMOKE_SPEC
from sweeper.cli import main

SEED = 15
PER_FILE = int(os.environ.get("SWEEPER_MUTANTS", "60"))
SPECS = sorted((REPO / "sweeps").glob("*.yaml")) + sorted((REPO / "tests" / "specs").glob("*.yaml"))
PROFILES = sorted((REPO / "backends").glob("*.yaml"))
MUTANT_SECONDS = 5  # a mutant that takes longer is a hang

# `error: ` then file:line, then an optional key path, then the message; one line.
LOCATED = re.compile(r"error: [^\s:]+:\d+(?: [^\n]+?)?: [^\n]+\n")

VALUES = [
    # numbers: extreme, non-finite, YAML 1.1 forms, non-ASCII digits
    "0", "-1", "1e400", "-1e400", "1e-400", "1e999999", "1e1000000", "1" * 5000, "1e30", "1e31", "4294967296",
    "1e15", "1e16", "0.5", "2.5", "1e9", ".inf", "-.inf", ".nan", "010", "0x10", "0b11", "0o17", "1:30", "1_0",
    "２５M", "𝟙𝟚", "1e", "25Q", "+.5",
    # other types and shapes
    "true", "no", "null", "~", "''", '""', "[]", "{}", "[1, 2]", "[[1], [2]]", "{min: 1}", "{a: 1}", "ten", "x" * 600,
    # tags
    "!!int abc", "!!int ''", "!!bool maybe", "!!float x", "!!str 12", "!!binary aGk=", "!!set {a}", "!!null x",
    "!!python/object:os.system", "!!timestamp 2024-01-01", "!custom 1",
    # escapes, control and direction characters, names that leave a folder
    '"\\x1b[31mred"', '"a\\nb"', '"a\\0b"', '"\\u202eevil"', '"\\u2028"', '"t\\n"', "../../etc", "/abs/path",
    '"s3://"', '"sqlite:///"', "s3://Bad_Bucket",
    # aliases
    "&anchor 1", "*missing",
]
CONTROL = ["\x00", "\x07", "\x08", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff", "\t", "\r"]
KEYS = ["epochs", "unique_tokens", "family", "model", "isoflop", "zip", "flops", "window", "seed", "lr_peak",
        "extends", "name", "experiment", "max_grid_points", "kind", "vocab_size", "seq_len", "path", "tracking_uri",
        "max_trials_per_device", "trian", "modle", "ÿ", "a\u200bb", "<<", "? complex"]
_VALUE_LINE = re.compile(r"^(\s*(?:- )?[^\s:#][^:#]*:[ ]+)([^#\n]*?)(\s*(?:#.*)?)$")
_KEY_LINE = re.compile(r"^(\s*(?:- )?)([^\s:#][^:#]*)(:.*)$")


def nested(rng: random.Random) -> str:
    depth = rng.choice([10, 63, 65, 200, 1000])
    return rng.choice(["[" * depth + "]" * depth, "{a: " * depth + "1" + "}" * depth])


def mutate(text: str, rng: random.Random) -> tuple[str, str]:
    """(mutant text, what was done)."""
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    kind = rng.choice(["delete", "duplicate", "value", "value", "value", "key", "indent", "control", "truncate",
                       "nested", "block"])
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind in ("value", "nested"):
        candidates = [n for n, line in enumerate(lines) if _VALUE_LINE.match(line)]
        if candidates:
            i = rng.choice(candidates)
            value = nested(rng) if kind == "nested" else rng.choice(VALUES)
            lines[i] = _VALUE_LINE.sub(lambda m: m.group(1) + value + m.group(3), lines[i])
    elif kind == "key":
        candidates = [n for n, line in enumerate(lines) if _KEY_LINE.match(line)]
        if candidates:
            i = rng.choice(candidates)
            lines[i] = _KEY_LINE.sub(lambda m: m.group(1) + rng.choice(KEYS) + m.group(3), lines[i])
    elif kind == "indent":
        lines[i] = rng.choice([" ", "  ", "\t", ""]) + lines[i].lstrip(" ") if rng.random() < 0.5 else \
            lines[i][rng.randint(1, 3):]
    elif kind == "control":
        position = rng.randint(0, len(lines[i]))
        lines[i] = lines[i][:position] + rng.choice(CONTROL) + lines[i][position:]
    elif kind == "truncate":
        joined = "\n".join(lines)
        return joined[:rng.randrange(len(joined) + 1)], f"truncate at {i}"
    else:  # a block appended: lists of many values, or rules on odd keys
        lines.append(rng.choice([
            "exclude: [{family: {min: 1}}]", "include: [{family: ar}]", "overrides: [{when: {}, set: {}}]",
            "max_grid_points: " + rng.choice(VALUES), "tracking: {experiment: " + rng.choice(VALUES) + "}",
            "grid: {family: ar, model: 7M, unique_tokens: 1M, epochs: [" + ", ".join(map(str, range(1, 200))) + "]}",
        ]))
    return "\n".join(lines), f"{kind} at line {i + 1}"


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang()


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[object, str]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(MUTANT_SECONDS)
    try:
        code: object = main(list(args))
    except _Hang:
        code = "hang"
    except BaseException as error:  # noqa: BLE001  (a crash is what this test looks for)
        code = f"{type(error).__name__}: {error}"[:300]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out, err = capsys.readouterr()
    return code, err


def check(code: object, err: str) -> str | None:
    """What is wrong with this outcome, or None."""
    if code == 0:
        return None
    if code != 2:
        return f"exit {code!r}"
    if not LOCATED.fullmatch(err):
        return f"not one located line: {err[:300]!r}"
    return None


def run_mutants(tmp_path: Path, capsys: pytest.CaptureFixture[str], original: Path, target: Path,
                args: tuple[str, ...], rng: random.Random) -> tuple[Counter[str], list[str]]:
    outcomes: Counter[str] = Counter()
    faults = []
    text = original.read_text()
    for n in range(PER_FILE):
        mutant, what = mutate(text, rng)
        target.write_text(mutant, encoding="utf-8", errors="surrogatepass")
        code, err = validate(capsys, *args)
        outcomes["valid" if code == 0 else "error" if code == 2 else "fault"] += 1
        problem = check(code, err)
        if problem:
            faults.append(f"{original.name} mutant {n} ({what}): {problem}\n--- mutant ---\n{mutant[:2000]}")
    return outcomes, faults


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_spec_mutants_end_in_a_plan_or_one_located_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], spec: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for sibling in spec.parent.glob("*.yaml"):  # a spec may extend its neighbours
        shutil.copy(sibling, tmp_path / sibling.name)
    profile = REPO / "backends" / "local.yaml"
    rng = random.Random(f"{SEED}:{spec.name}")
    outcomes, faults = run_mutants(tmp_path, capsys, spec, tmp_path / spec.name,
                                   ("validate", spec.name, "--backend", str(profile)), rng)
    assert not faults, f"{len(faults)} of {PER_FILE} mutants failed:\n\n" + "\n\n".join(faults[:5])
    assert outcomes["error"] > PER_FILE // 4, outcomes  # the mutations do reach the checks


def test_a_mutated_parent_is_located_in_the_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("grid.yaml", "chinchilla.yaml"):
        shutil.copy(REPO / "sweeps" / name, tmp_path / name)
    rng = random.Random(f"{SEED}:parent")
    outcomes, faults = run_mutants(tmp_path, capsys, REPO / "sweeps" / "grid.yaml", tmp_path / "grid.yaml",
                                   ("validate", "chinchilla.yaml", "--backend", str(REPO / "backends" / "local.yaml")),
                                   rng)
    assert not faults, f"{len(faults)} of {PER_FILE} mutants failed:\n\n" + "\n\n".join(faults[:5])


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_profile_mutants_end_in_a_plan_or_one_located_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], profile: Path) -> None:
    monkeypatch.chdir(tmp_path)
    rng = random.Random(f"{SEED}:{profile.name}")
    target = tmp_path / profile.name
    outcomes, faults = run_mutants(tmp_path, capsys, profile, target,
                                   ("validate", str(SMOKE_SPEC), "--backend", str(target)), rng)
    assert not faults, f"{len(faults)} of {PER_FILE} mutants failed:\n\n" + "\n\n".join(faults[:5])
    assert outcomes["error"] > PER_FILE // 4, outcomes
