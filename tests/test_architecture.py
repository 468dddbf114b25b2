"""The house's shape, read from the source: dependencies run one way and nothing loops.

Every import counts, wherever it stands: at the top, inside a function, under `TYPE_CHECKING`, or as
`importlib.import_module("monitor....")` with a constant name. A function-level import still makes the
modules depend on each other, and one placed to dodge a cycle only hides it until the next refactor
trips on it. The graph is built with `ast` (nothing is imported), so a broken module cannot hide here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# collect -> evaluate -> decide -> act/publish; only service (and the CLI above it) wires them all
STAGES = ("collect", "evaluate", "decide", "act", "publish")
TIER = {"collect": 0, "evaluate": 1, "decide": 2, "act": 3, "publish": 3}
ABOVE_THE_STAGES = ("service", "cli")
SETTINGS_MAY_USE = {"pydantic"}  # besides the standard library, monitor.units and monitor.settings
CONFIG_MAY_USE = ("monitor.settings", "monitor.units", "monitor.errors")


# --- the graph ---------------------------------------------------------------------------------------


def modules_of(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package (a package is its __init__)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every absolute module name the file imports, anywhere in it.

    `from X import a` names X and X.a (a may be a submodule; which names are modules is settled by
    `resolve` against the files that exist).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            names.add(node.args[0].value)
    return names


def _dynamic_import(node: ast.Call) -> bool:
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return (called in ("import_module", "__import__") and bool(node.args)
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name lands in (`monitor.x.Thing` -> `monitor.x`), None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(package_dir: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the package's modules, every absolute name each module imports)."""
    modules = modules_of(package_dir)
    edges: dict[str, set[str]] = {}
    raw: dict[str, set[str]] = {}
    for module, path in modules.items():
        raw[module] = imported_names(module, path)
        targets = {resolve(name, modules) for name in raw[module]}
        edges[module] = {t for t in targets if t is not None and t != module}
    return edges, raw


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of two or more modules, as one concrete loop through it
    (`a -> b -> a`), so a failure names the imports to look at."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges) + 100))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return [_loop_through(group, edges) for group in groups]


def _loop_through(group: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest loop from the group's first module back to itself (breadth-first inside the group)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges[v] & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    return sorted(group)  # unreachable for a strongly connected group


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    return import_graph(ROOT / "monitor")


# --- the rules ---------------------------------------------------------------------------------------


def test_no_module_of_monitor_imports_itself_back_through_any_chain_of_imports(graph):
    edges, _ = graph
    loops = [" -> ".join(loop) for loop in cycles(edges)]
    assert not loops, "import cycles (function-level and TYPE_CHECKING imports count):\n" + "\n".join(loops)


def test_a_stage_imports_only_the_stages_before_it_and_never_service_or_cli(graph):
    edges, _ = graph
    wrong = []
    for module, targets in sorted(edges.items()):
        stage = stage_of(module)
        if stage not in TIER:
            continue
        for target in sorted(targets):
            other = stage_of(target)
            if other in ABOVE_THE_STAGES or (other in TIER and TIER[other] > TIER[stage]):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against collect -> evaluate -> decide -> act/publish:\n" + "\n".join(wrong)


def test_the_settings_models_import_only_units_pydantic_and_the_standard_library(graph):
    _, raw = graph
    wrong = []
    for module, names in sorted(raw.items()):
        if stage_of(module) != "settings":
            continue
        for name in sorted(names):
            top = name.partition(".")[0]
            if top == "monitor":
                if not (name == "monitor.units" or name.startswith("monitor.units.")
                        or name == "monitor.settings" or name.startswith("monitor.settings.")):
                    wrong.append(f"{module} -> {name}")
            elif top not in sys.stdlib_module_names and top not in SETTINGS_MAY_USE:
                wrong.append(f"{module} -> {name}")
    assert not wrong, "monitor.settings reaches outside units/pydantic/stdlib:\n" + "\n".join(wrong)


def test_config_assembles_the_settings_and_imports_no_stage(graph):
    edges, _ = graph
    wrong = [t for t in sorted(edges["monitor.config"])
             if not any(t == allowed or t.startswith(allowed + ".") for allowed in CONFIG_MAY_USE)]
    assert not wrong, f"monitor.config imports {wrong}; it may import only {CONFIG_MAY_USE}"


def test_nothing_the_cli_runs_imports_the_cli_package(graph):
    edges, _ = graph
    wrong = [f"{module} -> {target}" for module, targets in sorted(edges.items())
             for target in sorted(targets)
             if stage_of(target) == "cli" and stage_of(module) != "cli" and module != "monitor.__main__"]
    assert not wrong, "raise monitor.errors.BadInput instead of importing the CLI:\n" + "\n".join(wrong)


def test_no_test_imports_another_test_module():
    stems = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for name in sorted(imported_names(module, path)):
            parts = name.split(".")
            if parts[0] in stems or (parts[0] == "tests" and len(parts) > 1 and parts[1] in stems):
                wrong.append(f"{module} -> {name}")
    assert not wrong, "shared test code belongs in tests/helpers/:\n" + "\n".join(wrong)


# --- the checker itself --------------------------------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from pkg.high import g\n    return g\n",
        "pkg/high.py": "from pkg import low\n",
    })
    edges, _ = import_graph(package)
    assert cycles(edges) == [["pkg.high", "pkg.low", "pkg.high"]]


def test_a_cycle_through_type_checking_relative_and_dynamic_imports_is_found(tmp_path):
    package = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a/__init__.py": "",
        "pkg/a/one.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..b.two import Two\n",
        "pkg/b/__init__.py": "",
        "pkg/b/two.py": "import importlib\nmod = importlib.import_module('pkg.c')\n",
        "pkg/c.py": "from .a import one\n",
    })
    edges, _ = import_graph(package)
    assert cycles(edges) == [["pkg.a.one", "pkg.b.two", "pkg.c", "pkg.a.one"]]


def test_a_one_way_package_has_no_cycle(tmp_path):
    package = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "import os\n",
        "pkg/high.py": "from pkg.low import os\nfrom . import low\n",
    })
    edges, raw = import_graph(package)
    assert cycles(edges) == []
    assert edges["pkg.high"] == {"pkg", "pkg.low"}
    assert "os" in raw["pkg.low"]
