"""Throwaway virtual environments for testing plugin distributions as installed packages.

Tests never pip install into (or uninstall from) the interpreter running them: that would
change what every later test sees. A :class:`ThrowawayEnv` is a venv in a temp dir that sees
the running environment's packages (dvadm and its dependencies, as installed there) and gets
the distributions under test pip-installed into it, non-editable, as a user would. While
:meth:`ThrowawayEnv.activated` is in effect, :func:`doveadm_py.testing.cli.run_dvadm` runs
dvadm with that venv's python, so it discovers the entry points installed there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

#: When set, ``run_dvadm`` runs ``$DVADM_TEST_PYTHON -m doveadm_py`` instead of the installed script.
PYTHON_ENV = "DVADM_TEST_PYTHON"


class PipError(RuntimeError):
    """pip failed; the message carries its output."""


def make_venv(root: Path) -> Path:
    """A venv in ``root`` that sees this environment's packages; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    parents = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    # addsitedir (not a plain path line) so the parent's own .pth files, editable installs
    # among them, are processed too; the venv's own site-packages stays first on sys.path.
    lines = [f"import site; site.addsitedir({path!r})\n" for path in parents]
    Path(purelib, "_dvadm_test_parent.pth").write_text("".join(lines))
    return python


class ThrowawayEnv:
    """A venv under ``root`` for installing and uninstalling distributions under test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = make_venv(root / "venv")

    def pip(self, *args: str, timeout: float = 300.0) -> str:
        """Run pip for this venv (the parent's pip, seen through the venv); PipError on failure."""
        proc = subprocess.run(
            [str(self.python), "-m", "pip", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise PipError(f"pip {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def install(self, source: Path) -> None:
        """pip install a pristine copy of ``source`` (no tests, no build files land in it)."""
        copy = self.root / f"{source.name}-src"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info"))
        flags = ["--no-build-isolation"] if find_spec("setuptools") and find_spec("wheel") else []
        self.pip("install", "--no-deps", "-q", *flags, str(copy))

    def uninstall(self, name: str) -> None:
        self.pip("uninstall", "-y", "-q", name)

    @contextmanager
    def activated(self) -> Iterator[ThrowawayEnv]:
        """``run_dvadm`` uses this venv inside the block (the previous setting is restored)."""
        previous = os.environ.get(PYTHON_ENV)
        os.environ[PYTHON_ENV] = str(self.python)
        try:
            yield self
        finally:
            if previous is None:
                os.environ.pop(PYTHON_ENV, None)
            else:
                os.environ[PYTHON_ENV] = previous
