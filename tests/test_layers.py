"""The structure, checked: imports run one way (docs/architecture.md, "Layers").

Reads every module of hpcgan/ and data_prep/ as text (nothing is imported), so a change that
makes a lower layer reach up, a cycle, an entry point used as a library, or a module that
grows past its size fails here instead of in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import from its own layer or below, never above; within a layer
# the imports must still form no cycle. The commands (last) import nothing of each other.
LAYERS = [
    (
        "primitives",
        {
            "errors",
            "stop_signals",
            "files",
            "launcher",
            "rng",
            "profile",
            "fields",
            "board",
            "monitor",
        },
    ),
    ("numerics", {"nd", "spectrum", "objectives", "condition", "symmetry"}),
    ("models", {"models"}),
    ("config", {"config"}),
    ("comm", {"comm"}),
    ("data", {"data"}),
    ("components", {"images", "preempt", "watchdog"}),
    ("metrics", {"metrics"}),
    ("training", {"trainer", "ema", "step_stats", "update"}),
    ("run", {"run_state", "session", "trained", "loop", "plain", "timing"}),
    ("commands", {"train", "sample", "evaluate", "report", "bench", "scaling"}),
]
COMMANDS = LAYERS[-1][1]
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(p): p for package in ("hpcgan", "data_prep") for p in (ROOT / package).rglob("*.py")
}


class _Imports(ast.NodeVisitor):
    """Every module a file imports, at any depth (function-level imports count: they run too),
    except under ``if TYPE_CHECKING:`` (type hints only, never executed)."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = getattr(test, "id", None) or getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and not node.level:
            self.names.update(f"{node.module}.{alias.name}" for alias in node.names)
            self.names.add(node.module)


def imports_of(module: str) -> set[str]:
    visitor = _Imports()
    visitor.visit(ast.parse(MODULES[module].read_text()))
    return visitor.names


def resolve(name: str) -> str | None:
    """The module of ours that an imported name lives in (``hpcgan.nd.ops`` -> ``hpcgan.nd``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    edges = {}
    for module in MODULES:
        # Importing a submodule runs its package's __init__ too: both are edges. The top
        # packages' own __init__ files are empty and belong to no layer.
        found = {resolve(name) for name in imports_of(module)}
        edges[module] = {m for m in found if m and m != module and "." in m}
    return edges


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def hpcgan_modules() -> list[str]:
    return sorted(m for m in MODULES if m.startswith("hpcgan.") and m.count("."))


def test_every_module_has_a_layer():
    for module in hpcgan_modules():
        layer_of(module)


def test_imports_never_run_up_a_layer():
    edges = graph()
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m in hpcgan_modules()
        for d in sorted(edges[m])
        if d.startswith("hpcgan.") and layer_of(d) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_commands_are_not_libraries():
    edges = graph()
    used = [
        f"{m} imports the command {d}"
        for m in MODULES
        for d in sorted(edges[m])
        if d.count(".") == 1 and d.split(".")[1] in COMMANDS
    ]
    assert not used, "\n".join(used)


def test_no_import_cycles():
    edges, state, cycles = graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_hpcgan_never_imports_data_prep():
    edges = graph()
    back = [f"{m} imports {d}" for m in hpcgan_modules() for d in edges[m] if "data_prep" in d]
    assert not back, "\n".join(back)


def test_only_comm_imports_mpi_and_horovod():
    outside = [
        f"{m} imports {name}"
        for m in hpcgan_modules()
        if not m.startswith("hpcgan.comm")
        for name in imports_of(m)
        if name.split(".")[0] in ("mpi4py", "horovod")
    ]
    assert not outside, "\n".join(outside)


@pytest.mark.parametrize("package", ["hpcgan", "data_prep"])
def test_modules_stay_small(package):
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"
