"""The test suite's own rules (issue 11, section 4), checked on its source so they cannot slip back.

- A test module imports no other test module: shared helpers live in helper modules
  (``*_helpers.py``, ``reference_glob.py``), so no test depends on another file's tests being
  importable, collected or run first.
- No test runs pip with the interpreter running the tests (``sys.executable -m pip``): plugins
  are installed into throwaway venvs (:mod:`doveadm_py.testing.venv`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_DIRS = [ROOT / "tests", *sorted((ROOT / "plugins").glob("*/tests"))]


def find_test_modules() -> Iterator[Path]:
    for directory in TEST_DIRS:
        yield from sorted(directory.glob("test_*.py"))


def imported_modules(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


def is_sys_executable(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "executable"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def pip_with_this_interpreter(tree: ast.AST) -> Iterator[int]:
    """Lines of list displays holding both ``sys.executable`` and ``"pip"`` (an argv running pip)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)):
            items = node.elts
            if any(is_sys_executable(item) for item in items) and any(
                isinstance(item, ast.Constant) and item.value == "pip" for item in items
            ):
                yield node.lineno


MODULES = list(find_test_modules())


def test_the_suite_is_found() -> None:
    names = {path.name for path in MODULES}
    assert {"test_kick_safety.py", "test_who_bulk.py", "test_who_shapes.py"} <= names
    assert len(MODULES) > 40


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_module_imports_another(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    imported = [name for name in imported_modules(tree) if name.split(".")[-1].startswith("test_")]
    assert imported == [], f"{path.name} imports test modules {imported}: move what it needs to a helper"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_test_runs_pip_in_its_own_interpreter(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    assert list(pip_with_this_interpreter(tree)) == [], f"{path.name}: use doveadm_py.testing.venv"


def test_the_checks_can_fail() -> None:
    """Each check finds what it looks for (so a pass above means something)."""
    bad = ast.parse(
        "from test_who_bulk import FakeDump\nimport tests.test_app\n"
        "subprocess.run([sys.executable, '-m', 'pip', 'install', '.'])\n"
    )
    assert list(imported_modules(bad)) == ["test_who_bulk", "tests.test_app"]
    assert list(pip_with_this_interpreter(bad)) == [3]
