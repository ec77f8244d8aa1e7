"""The package's import graph keeps DESIGN.md's layers: imports only point down, no cycles.

Every `import` and `from ... import` in sweeper/ counts, also those inside functions (a lazy import
is still a dependency). A subpackage counts as one unit, so its modules may import each other.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sweeper"
MAX_LINES = 400

# Top to bottom; a unit may import only units on lower layers (and itself). DESIGN.md's line:
# cli → driver → (tracking, data, trainer, evals, fit) → plan → profile → spec → (trial, storage) → (units, console)
LAYERS = (
    ("cli",),
    ("driver",),
    ("tracking", "data", "trainer", "evals", "fit"),
    ("plan",),
    ("profile",),
    ("spec",),
    ("trial", "storage"),
    ("units", "console", "__init__"),
)
LEVEL = {unit: len(LAYERS) - i for i, layer in enumerate(LAYERS) for unit in layer}
PURE = ("spec", "plan", "fit", "profile", "trial", "storage", "units", "console")  # no torch, no ray
FORBIDDEN = ("torch", "ray")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Absolute names of everything `name` imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def unit(module: str) -> str:
    """sweeper.plan.sizing -> plan; sweeper.console -> console; sweeper -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(unit -> units it imports, unit -> third-party top-level packages it imports)."""
    mods = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for target in imports(name, path):
            if target == "sweeper" or target.startswith("sweeper."):
                while target not in mods:
                    target = target.rpartition(".")[0]
                if unit(target) != unit(name):
                    edges[unit(name)].add(unit(target))
            else:
                external[unit(name)].add(target.partition(".")[0])
    return edges, external


def test_every_unit_has_a_layer() -> None:
    units = {unit(name) for name in modules()}
    assert units <= set(LEVEL), f"add to LAYERS (and DESIGN.md): {sorted(units - set(LEVEL))}"


def test_imports_only_point_down() -> None:
    edges, _ = graph()
    upward = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if LEVEL[b] >= LEVEL[a])
    assert not upward


def test_no_import_cycles() -> None:
    edges, _ = graph()
    state: dict[str, int] = {}

    def visit(node: str, path: tuple[str, ...]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            assert state.get(nxt) != 1, " -> ".join((*path, node, nxt))
            if nxt not in state:
                visit(nxt, (*path, node))
        state[node] = 2

    for node in list(edges):
        if node not in state:
            visit(node, ())


def test_pure_layers_import_no_torch_or_ray() -> None:
    _, external = graph()
    offenders = {u: sorted(external[u] & set(FORBIDDEN)) for u in PURE if external[u] & set(FORBIDDEN)}
    assert not offenders


def test_the_trainer_imports_only_the_trial_contract() -> None:
    edges, _ = graph()
    assert edges.get("trainer", set()) <= {"trial"}


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long


def test_the_checks_see_a_planted_upward_edge(tmp_path: Path) -> None:
    """The walk resolves lazy and relative imports: a planted one is found."""
    planted = tmp_path / "sweeper" / "spec"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("def f():\n    from ..driver import sweep\n    import torch\n")
    found = imports("sweeper.spec", planted / "__init__.py")
    assert "sweeper.driver.sweep" in found and "torch" in found
