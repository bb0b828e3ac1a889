"""The layer rules of shared/DESIGN.md, read from the code: imports point down only (or
sideways within a layer), no import circles, Ray and MLflow only in the upper layers.

Every import counts, the ones inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "glitchflow"

#: rank of each part of the package: a module may import ranks <= its own
RANKS = {
    "config": 0,
    "signal": 1,
    "models": 1,
    "io": 2,
    "synth": 2,
    "evaluate": 2,
    "pipelines": 3,
    "serve": 3,
    "tracking": 3,
    "cli": 4,
    "cli_clean": 4,
    "cli_common": 4,
    "cli_stages": 4,
    "workflow": 4,
    "demo": 4,
    "__init__": 0,
}
#: third-party packages kept out of the lower layers (rank < 3)
UPPER_ONLY = ("ray", "mlflow")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules imported anywhere in ``path`` (absolute names)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # the longest known module that the import names (from x import y: y may be a name)
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANKS[parts[1]] if len(parts) > 1 else 0


def test_imports_point_down_only():
    climbing = [
        f"{a} -> {b}" for a, targets in _graph().items() for b in targets if _rank(b) > _rank(a)
    ]
    assert not climbing, climbing


def test_no_import_circles():
    graph = _graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, circles


@pytest.mark.parametrize("package", UPPER_ONLY)
def test_ray_and_mlflow_stay_in_the_upper_layers(package):
    lower = [
        _module_name(p)
        for p in PACKAGE.rglob("*.py")
        if _rank(_module_name(p)) < 3
        and any(i == package or i.startswith(package + ".") for i in _imports(p))
    ]
    assert not lower, lower


#: the command-line entry points load a stage only when it runs, so that ``glitchflow
#: --help`` and a refused argument answer at once (no torch, Ray or MLflow import)
LAZY_ENTRY_POINTS = ("cli", "cli_clean", "cli_common", "cli_stages", "demo", "workflow")


def test_library_modules_import_glitchflow_at_the_top():
    hidden = []
    for path in PACKAGE.rglob("*.py"):
        if _module_name(path).split(".")[-1] in LAZY_ENTRY_POINTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                hidden += [
                    f"{_module_name(path)}:{sub.lineno} {sub.module}"
                    for sub in ast.walk(node)
                    if isinstance(sub, ast.ImportFrom)
                    and (sub.module or "").startswith("glitchflow")
                ]
    assert not hidden, hidden


def test_the_command_line_starts_without_torch_ray_or_mlflow():
    import subprocess
    import sys

    code = (
        "import sys, glitchflow.cli; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'pandas') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
