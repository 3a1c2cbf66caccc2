"""Run the installed ``dvadm`` console script the way a user does (for tests, ours and plugins')."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple


def dvadm_executable() -> str:
    """The ``dvadm`` script next to the running interpreter (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).with_name("dvadm")
    if candidate.exists():
        return str(candidate)
    import shutil

    found = shutil.which("dvadm")
    if not found:
        raise FileNotFoundError("dvadm is not installed in this environment (pip install -e .)")
    return found


def run_dvadm(
    *args: str | bytes,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``dvadm ARGS`` as a separate process; returns it whatever its exit code (bytes out/err).

    Inside :meth:`doveadm_py.testing.venv.ThrowawayEnv.activated`, the throwaway venv's dvadm.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    python = os.environ.get("DVADM_TEST_PYTHON")
    command = [python, "-m", "doveadm_py"] if python else [dvadm_executable()]
    return subprocess.run(
        [*command, *args],
        env=full_env,
        capture_output=True,
        timeout=timeout,
        input=input,
        check=False,
    )


class RunResult(NamedTuple):
    """What :func:`run` returns: unpack it as ``code, out, err``."""

    exit_code: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], input: str = "") -> RunResult:
    """Run ``dvadm ARGV`` in this process: ``(exit code, stdout, stderr)``, no subprocess.

    Faster than :func:`run_dvadm` and debuggable (breakpoints, coverage), for a plugin's unit
    tests. Each call is a new application that reads the installed entry points again, but
    modules stay imported: test installation and uninstallation with :func:`run_dvadm`.
    """
    import io

    from doveadm_py.app import DvadmApp

    out, err = io.StringIO(), io.StringIO()
    code = DvadmApp(stdin=io.StringIO(input), stdout=out, stderr=err).run(list(argv))
    return RunResult(code, out.getvalue(), err.getvalue())
