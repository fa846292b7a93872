"""Layers import downward only, and no module imports itself back (docs/architecture.md, "Layers").

The import graph is read with ``ast`` from every module of ``osf/`` and ``main_pipelines/``: module-level
imports and imports inside functions (or under ``if TYPE_CHECKING``) alike, relative ones resolved.
A module's layer is that of the longest prefix of its dotted name in :data:`PLACES`, so a new module
inside a placed package is placed with it, and a new top-level module fails until it is placed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("osf", "main_pipelines")

# Lowest first: a module imports only modules of its own layer or of a layer before it.
LAYERS: tuple[str, ...] = ("utils", "facts", "data", "methods and models", "orchestration", "test support",
                           "entry points")
PLACES: dict[str, str] = {
    "osf.utils": "utils",  # generic helpers (atomic writes, typed config fields, schedules, steps): no osf imports
    "osf": "facts",  # the package itself (its version)
    "osf.config": "facts",
    "osf.train_config": "facts",
    "osf.tasks": "facts",
    "osf.datasets": "data",
    "osf.backbone": "methods and models",
    "osf.models": "methods and models",
    "osf.losses": "methods and models",
    "osf.augmentations": "methods and models",
    "osf.downstream": "methods and models",
    "osf.models.training": "orchestration",  # a pre-training run
    "osf.downstream.pipeline": "orchestration",  # run_downstream: dispatches to the level's run
    "osf.downstream.epoch.run": "orchestration",
    "osf.downstream.sequence.run": "orchestration",
    "osf.downstream.night.run": "orchestration",
    "osf.predict": "orchestration",
    "osf.entry_calls": "orchestration",
    "osf.study": "orchestration",
    "osf.quickstart": "orchestration",
    "osf.sleepbench": "orchestration",
    "osf.evaluation": "orchestration",  # the evaluation protocol over runs: probe grids, baselines, seed-level verdicts
    "osf.testing": "test support",
    "main_pipelines": "entry points",
}
TEST_SUPPORT = "osf.testing"


def module_name(path: Path, root: Path) -> str:
    """Dotted module name of ``path`` under ``root`` (a package's ``__init__`` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The modules of ``modules`` an import statement in ``module`` loads (``from p import m``: ``p.m`` if a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    found = []
    for name in names:
        while name and name not in modules:  # `import a.b.c` where c is a name: the module a.b
            name = name.rpartition(".")[0]
        if name:
            found.append(name)
    return found


def import_graph(root: Path, packages: Iterable[str] = ROOTS) -> dict[str, dict[str, int]]:
    """Module -> {imported module of the same tree -> first line}, every import statement counted."""
    paths = {module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}
    modules = set(paths)
    graph: dict[str, dict[str, int]] = {}
    for module, path in paths.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, module, path.name == "__init__.py", modules):
                    if target != module:
                        edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def layer_of(module: str, places: Mapping[str, str] = PLACES) -> str | None:
    """The layer of the longest placed prefix of ``module``; None when no prefix is placed."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in places:
            return places[prefix]
    return None


def effective_layers(graph: Mapping[str, Mapping[str, int]], places: Mapping[str, str] = PLACES) -> dict[str, str | None]:
    """Each module's layer; a package's ``__init__`` that re-exports its own submodules sits at the highest of their
    layers (``osf.downstream.night`` re-exports ``night.run``: importing the package imports the run)."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    layers: dict[str, str | None] = {}

    def layer(module: str) -> str | None:
        if module not in layers:
            own = [layer_of(module, places)]
            own += [layer(t) for t in graph.get(module, {}) if t.startswith(module + ".")]
            placed = [name for name in own if name is not None]
            layers[module] = max(placed, key=rank.__getitem__) if placed else None
        return layers[module]

    for module in graph:
        layer(module)
    return layers


def upward_imports(graph: Mapping[str, Mapping[str, int]], places: Mapping[str, str] = PLACES) -> list[str]:
    """``a:line imports b (layer of a < layer of b)`` for every import of a higher layer (packages as re-exported)."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    layers = effective_layers(graph, places)
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            mine, theirs = layers[module], layers.get(target)
            if mine and theirs and rank[theirs] > rank[mine]:
                found.append(f"{module}:{line} imports {target} ({mine} imports {theirs})")
    return found


def import_cycles(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return sorted(cycles)


def _cycle_text(graph: Mapping[str, Mapping[str, int]], component: list[str]) -> str:
    members = set(component)
    edges = [f"{a}:{line} -> {b}" for a in component for b, line in sorted(graph[a].items()) if b in members]
    return "cycle among " + ", ".join(component) + "\n    " + "\n    ".join(edges)


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph(REPO)


def test_every_module_has_a_layer(graph) -> None:
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, f"place these modules in a layer (tests/test_layers.py PLACES, docs/architecture.md): {unplaced}"


def test_every_place_names_existing_modules(graph) -> None:
    stale = sorted(p for p in PLACES if not any(m == p or m.startswith(p + ".") for m in graph))
    assert not stale, f"PLACES names modules that no longer exist: {stale}"


def test_no_layer_imports_a_layer_above_it(graph) -> None:
    found = upward_imports(graph)
    assert not found, "upward imports:\n" + "\n".join(found)


def test_there_is_no_import_cycle(graph) -> None:
    cycles = import_cycles(graph)
    assert not cycles, "\n".join(_cycle_text(graph, c) for c in cycles)


def test_test_support_is_never_imported_by_the_library_or_the_entry_points(graph) -> None:
    found = [f"{m}:{line} imports {t}" for m, edges in sorted(graph.items()) for t, line in edges.items()
             if t.startswith(TEST_SUPPORT) and not m.startswith(TEST_SUPPORT)]
    assert not found, "\n".join(found)


# --- the checker itself finds what it must --------------------------------------------------------
def _write_tree(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_upward_imports_in_functions_and_relative_cycles(tmp_path) -> None:
    _write_tree(tmp_path, {
        "osf/__init__.py": "",
        "osf/config.py": "def f():\n    from osf.quickstart import run\n",  # facts -> orchestration, in a function
        "osf/quickstart.py": "import osf.config\n\ndef run():\n    pass\n",
        "osf/datasets/__init__.py": "",
        "osf/datasets/a.py": "from . import b\n",  # relative: osf.datasets.b
        "osf/datasets/b.py": "from osf.datasets.a import x\n",
        "osf/datasets/c.py": "from osf.utils.atomic import atomic_path\nfrom osf.config import CHANNELS\n",
        "osf/utils/__init__.py": "",
        "osf/utils/atomic.py": "",
        "osf/downstream/__init__.py": "from osf.downstream.pipeline import run\n",  # re-exports orchestration
        "osf/downstream/pipeline.py": "def run():\n    pass\n",
        "osf/downstream/heads.py": "from osf.downstream import run\n",  # so this imports orchestration
    })
    tiny = import_graph(tmp_path, ["osf"])
    assert tiny["osf.datasets.a"] == {"osf.datasets.b": 1}
    assert upward_imports(tiny) == ["osf.config:2 imports osf.quickstart (facts imports orchestration)",
                                    "osf.downstream.heads:1 imports osf.downstream (methods and models imports "
                                    "orchestration)"]
    assert import_cycles(tiny) == [["osf.config", "osf.quickstart"], ["osf.datasets.a", "osf.datasets.b"]]
    assert layer_of("osf.models.training.x") == "orchestration" and layer_of("osf.models.dino") == "methods and models"
    assert layer_of("benchmarks.bench") is None
