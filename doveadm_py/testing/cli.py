"""Run the installed ``dvadm`` console script the way a user does (for tests, ours and plugins')."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


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
