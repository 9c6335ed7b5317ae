"""The add-on's modules import each other without cycles.

A cycle hidden behind an import inside a function still ties the modules together: each needs the
other to be importable, and the order they load in decides whether a name exists yet. The graph is
read from the source with ``ast``, so every import counts: module level, inside functions and
under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ADDON_DIR = Path(__file__).resolve().parents[2] / "occupancy_addon"


def _module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of the package (subpackages included) by dotted name; ``__init__`` files are
    named after their package."""
    modules: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names ``node`` may import, relative imports resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        if not is_package:
            parts.pop()  # a module's relative imports start from its package
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, node.module] if node.module else parts)
    # ``from base import name``: name is a submodule or something defined in base
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Which of the package's modules each of its modules imports."""
    modules = _module_names(package_dir, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = _imported(node, name, path.name == "__init__.py")
                submodules = [target for target in targets[1:] if target in modules]
                if isinstance(node, ast.ImportFrom) and submodules:
                    edges.update(submodules)  # ``from . import a`` needs a, not the package again
                    if len(submodules) < len(targets) - 1:
                        edges.add(targets[0])  # ... unless it also takes names from the package
                else:
                    edges.update(target for target in targets if target in modules)
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles as paths ``[a, b, ..., a]``; at least one for every group of modules that
    import each other."""
    cycles: dict[tuple[str, ...], list[str]] = {}
    state: dict[str, str] = {}  # "open" while on the path, "done" once fully explored
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                loop = path[path.index(target) :]
                start = loop.index(min(loop))
                loop = loop[start:] + loop[:start]
                cycles[tuple(loop)] = [*loop, loop[0]]
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return [cycles[key] for key in sorted(cycles)]


def test_addon_has_no_import_cycles() -> None:
    graph = import_graph(ADDON_DIR, "occupancy_addon")
    assert "occupancy_addon.preview" in graph["occupancy_addon"]  # the graph sees the package
    cycles = [" -> ".join(cycle) for cycle in find_cycles(graph)]
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_cycles_through_imports_in_functions_are_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from . import a\n",
        "a.py": "from .b import helper\n",
        "b.py": "def helper():\n    from . import a\n    return a\n",
        "c.py": "import pkg.a\n",  # imports a, nothing imports c: no cycle
        "sub/__init__.py": "",
        "sub/d.py": "def late():\n    from ..sub.e import value\n    return value\n",
        "sub/e.py": "from .. import c\nfrom . import d\n\nvalue = 1\n",
    }
    for name, text in files.items():
        (package / name).write_text(text, encoding="utf-8")

    graph = import_graph(package, "pkg")

    assert graph["pkg.sub.d"] == {"pkg.sub.e"}
    assert graph["pkg.sub.e"] == {"pkg.c", "pkg.sub.d"}
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.sub.d", "pkg.sub.e", "pkg.sub.d"]]
