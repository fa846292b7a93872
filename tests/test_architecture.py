"""Layering and size rules of the code base (issue 16).

- the library (``osf/``) never imports or executes the entry points in ``main_pipelines/``;
- the library imports the package's ``osf.config`` / ``osf.train_config``, never the root re-exports;
- no function in ``osf/`` or ``main_pipelines/`` is above cyclomatic complexity 20 (radon).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "osf"
ENTRY_POINTS = REPO / "main_pipelines"
MAX_COMPLEXITY = 20
# Calls that import or run code from a path or module name.
EXECUTORS = {"run_path", "run_module", "spec_from_file_location", "import_module", "Popen", "run", "call",
             "check_call", "check_output", "system", "exec", "execv", "execvp"}


def _sources(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _trees(root: Path) -> Iterator[tuple[Path, str, ast.Module]]:
    for path in _sources(root):
        text = path.read_text()
        yield path, text, ast.parse(text, filename=str(path))


def _imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def test_the_library_never_imports_the_entry_points() -> None:
    found = [f"{path.relative_to(REPO)}:{line} imports {name}"
             for path, _, tree in _trees(LIBRARY) for line, name in _imported_modules(tree)
             if name == "main_pipelines" or name.startswith("main_pipelines.")]
    assert not found, "\n".join(found)


def test_the_library_never_runs_an_entry_point_by_path() -> None:
    found = []
    for path, text, tree in _trees(LIBRARY):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _call_name(node) in EXECUTORS:
                segment = ast.get_source_segment(text, node) or ""
                if "main_pipelines" in segment or "ENTRY_POINT" in segment:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {segment.splitlines()[0]}")
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.BinOp):
                segment = ast.get_source_segment(text, node.value) or ""
                if '"main_pipelines"' in segment:  # a path to the entry points' folder
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {segment}")
    assert not found, "\n".join(found)


def test_the_library_imports_the_package_config_not_the_root_reexports() -> None:
    found = [f"{path.relative_to(REPO)}:{line} imports {name}"
             for path, _, tree in _trees(LIBRARY) for line, name in _imported_modules(tree)
             if name in ("config", "train_config")]
    assert not found, "\n".join(found)


def test_the_entry_points_import_only_the_package() -> None:
    """Scripts run from the repo root see only the installed ``osf`` package, not the root modules."""
    found = [f"{path.relative_to(REPO)}:{line} imports {name}"
             for path, _, tree in _trees(ENTRY_POINTS) for line, name in _imported_modules(tree)
             if name in ("config", "train_config")]
    assert not found, "\n".join(found)


def _function_complexities(path: Path) -> Iterator[tuple[str, int, int]]:
    """``(name, line, complexity)`` of every function, method and closure in ``path``."""
    from radon.complexity import cc_visit
    from radon.visitors import Class

    def walk(blocks):
        for block in blocks:
            if isinstance(block, Class):
                yield from walk(block.methods)
                yield from walk(block.inner_classes)
            else:
                yield block.fullname, block.lineno, block.complexity
                yield from walk(block.closures)

    yield from walk(cc_visit(path.read_text()))


def test_no_function_is_above_complexity_20() -> None:
    pytest.importorskip("radon", reason="radon is in the test extra: pip install -e '.[test]'")
    too_complex = [f"{path.relative_to(REPO)}:{line} {name} ({cc})"
                   for root in (LIBRARY, ENTRY_POINTS) for path in _sources(root)
                   for name, line, cc in _function_complexities(path) if cc > MAX_COMPLEXITY]
    assert not too_complex, f"cyclomatic complexity above {MAX_COMPLEXITY}:\n" + "\n".join(too_complex)
