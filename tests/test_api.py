"""doveadm_py.api: lazy at run time, fully typed for mypy and pyright, and the in-process runner."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import doveadm_py.api as api
from doveadm_py.testing import RunResult, run, run_dvadm
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

API_SOURCE = Path(api.__file__).read_text(encoding="utf-8")


def type_checking_imports() -> dict[str, str]:
    """name -> module of every import in api.py's ``if TYPE_CHECKING:`` block."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(API_SOURCE)):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.dump(stmt)
                for alias in stmt.names:
                    # `X as X` is an explicit re-export (mypy --strict has no implicit ones)
                    assert alias.asname == alias.name, f"import {alias.name} as {alias.name}"
                    found[alias.name] = stmt.module
    return found


def test_type_checkers_see_exactly_the_lazy_names() -> None:
    assert type_checking_imports() == api._WHERE


@pytest.mark.parametrize("name", api.__all__)
def test_every_public_name_resolves_from_its_module(name: str) -> None:
    assert getattr(api, name) is getattr(importlib.import_module(api._WHERE[name]), name)


def test_importing_the_api_imports_none_of_it() -> None:
    code = "import sys, doveadm_py.api; print(sorted(m for m in sys.modules if m.startswith('doveadm_py')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "['doveadm_py', 'doveadm_py.api']"


MYPY_PROBE = """\
from doveadm_py.api import DvadmCommand, Header, RunResult, SEPARATE_V1, run

class Probe(DvadmCommand):
    def take_action(self, parsed_args: object) -> int:
        timeout: float = self.options.formatter  # a str | None: an error only if typed
        return 0

header: int = Header("key", "title")
result: RunResult = run(["--version"])
code: str = result.exit_code
titles: list[str] = [h.title for h in SEPARATE_V1]
"""


def test_mypy_sees_real_types_not_any(tmp_path: Path) -> None:
    """Wrong assignments from API names are errors, so the names are not Any to a type checker."""
    probe = tmp_path / "probe.py"
    probe.write_text(MYPY_PROBE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file=",
            "--follow-imports=silent",
            str(probe),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        # finds doveadm_py in a checkout (editable installs hide it); silent as for an installed package
        cwd=Path(api.__file__).parents[1],
    )
    errors = [line.split(": error: ", 1)[1] for line in proc.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 3, proc.stdout
    assert 'expression has type "str | None", variable has type "float"' in errors[0]
    assert 'expression has type "Header", variable has type "int"' in errors[1]
    assert 'expression has type "int", variable has type "str"' in errors[2]


def test_run_in_process_matches_the_console_script() -> None:
    sessions = [SimSession(11, "jane", ip="192.0.2.1"), SimSession(12, "bob", "pop3", "192.0.2.2")]
    with AnvilSimulator(2, sessions=sessions) as sim:
        for argv in (["-f", "tab", "who", "-a", sim.path], ["who", "-1", "-a", sim.path, "j*"]):
            inproc = run(argv)
            proc = run_dvadm(*argv)
            assert inproc == RunResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
            assert inproc.exit_code == 0 and "jane" in inproc.stdout
    code, out, err = run(["who", "-a", sim.path])  # the simulator has stopped
    assert (code, out) == (75, "") and err.startswith("Fatal: ")
    assert run(["nosuch"])[0] == 64
