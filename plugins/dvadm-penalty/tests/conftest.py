"""Test set-up for dvadm-penalty: the plugin pip-installed as a user would, and dvadm's test harness.

The plugin is installed from a pristine copy of its source (so no build files land in the
repository) into the running environment, and removed at the end of the session. Commands
are run as ``dvadm`` subprocesses, so every run discovers the entry points installed at
that moment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

PLUGIN_DIR = Path(__file__).resolve().parent.parent
DISTRIBUTION = "dvadm-penalty"
HARNESS = "doveadm_py.testing.fixtures"


def pytest_configure(config: pytest.Config) -> None:
    """Load dvadm's real-Dovecot fixtures when these tests run on their own.

    pytest honours ``pytest_plugins`` only in the rootdir's conftest, and the repository's
    tests/conftest.py (which loads them for the whole suite) is not an ancestor of this
    directory; registering the module under its own name keeps it loaded once either way.
    """
    if not config.pluginmanager.has_plugin(HARNESS):
        config.pluginmanager.import_plugin(HARNESS)


def pip(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run this interpreter's pip; a failure fails the test with pip's own output."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"pip {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def build_flags() -> list[str]:
    """Build with the installed setuptools when it can build wheels (offline), else pip's isolated build."""
    if find_spec("setuptools") is not None and find_spec("wheel") is not None:
        return ["--no-build-isolation"]
    return []


class Distribution:
    """A source tree that is pip-installed (non-editable, as users do) and uninstalled on demand."""

    def __init__(self, source: Path, name: str, work: Path) -> None:
        self.source = source
        self.name = name
        self.work = work
        self.installed = False

    def install(self) -> None:
        if self.installed:
            return
        copy = self.work / f"{self.name}-src"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.source, copy, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info"))
        pip("install", "--no-deps", "-q", *build_flags(), str(copy))
        self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            self.installed = False
            pip("uninstall", "-y", "-q", self.name)


@pytest.fixture(scope="session")
def penalty_distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    """dvadm-penalty, installed for the session (at first use) and uninstalled at its end."""
    dist = Distribution(PLUGIN_DIR, DISTRIBUTION, tmp_path_factory.mktemp("dvadm-penalty"))
    try:
        yield dist
    finally:
        dist.uninstall()


@pytest.fixture
def make_distribution(tmp_path: Path) -> Iterator[Callable[[Path, str], Distribution]]:
    """Install another source tree for one test: ``make_distribution(source_dir, name)``; removed after."""
    made: list[Distribution] = []

    def make(source: Path, name: str) -> Distribution:
        dist = Distribution(source, name, tmp_path)
        made.append(dist)
        dist.install()
        return dist

    yield make
    for dist in reversed(made):
        dist.uninstall()


@pytest.fixture
def penalty_plugin(penalty_distribution: Distribution) -> Distribution:
    """dvadm-penalty installed for this test (again, if an earlier test uninstalled it)."""
    penalty_distribution.install()
    return penalty_distribution
