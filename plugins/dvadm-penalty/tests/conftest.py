"""Test set-up for dvadm-penalty: the plugin pip-installed as a user would, and dvadm's test harness.

The plugin is installed from a pristine copy of its source into a throwaway venv (never into
the interpreter running the tests: :mod:`doveadm_py.testing.venv`), once per session. A test
that uses ``penalty_plugin`` runs dvadm from that venv; every other test runs the plain dvadm,
which has no penalty command, whatever ran before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from doveadm_py.testing.venv import PipError, ThrowawayEnv

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


class Distribution:
    """A source tree pip-installed into the throwaway venv and uninstalled on demand."""

    def __init__(self, env: ThrowawayEnv, source: Path, name: str) -> None:
        self.env = env
        self.source = source
        self.name = name
        self.installed = False

    def install(self) -> None:
        if not self.installed:
            try:
                self.env.install(self.source)
            except PipError as err:
                pytest.fail(str(err), pytrace=False)
            self.installed = True

    def uninstall(self) -> None:
        if self.installed:
            self.installed = False
            try:
                self.env.uninstall(self.name)
            except PipError as err:
                pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayEnv:
    """The session's throwaway venv (removed with the temp dir)."""
    return ThrowawayEnv(tmp_path_factory.mktemp("dvadm-penalty-env"))


@pytest.fixture(scope="session")
def penalty_distribution(plugin_env: ThrowawayEnv) -> Distribution:
    """dvadm-penalty in the throwaway venv (installed at first use)."""
    return Distribution(plugin_env, PLUGIN_DIR, DISTRIBUTION)


@pytest.fixture
def make_distribution(plugin_env: ThrowawayEnv) -> Iterator[Callable[[Path, str], Distribution]]:
    """Install another source tree for one test: ``make_distribution(source_dir, name)``; removed after."""
    made: list[Distribution] = []

    def make(source: Path, name: str) -> Distribution:
        dist = Distribution(plugin_env, source, name)
        made.append(dist)
        dist.install()
        return dist

    yield make
    for dist in reversed(made):
        dist.uninstall()


@pytest.fixture
def penalty_plugin(penalty_distribution: Distribution) -> Iterator[Distribution]:
    """dvadm-penalty installed (again, if an earlier test uninstalled it); run_dvadm uses its venv."""
    penalty_distribution.install()
    with penalty_distribution.env.activated():
        yield penalty_distribution
