"""Test set-up for dvadm-proxy: the plugin pip-installed as a user would, into a throwaway venv.

The interpreter running the tests is never installed into (issue 11): a session fixture
makes a :class:`~doveadm_py.testing.venv.ThrowawayEnv` (it sees the running environment's
packages, so dvadm and its dependencies as installed there are what the plugin runs against)
and pip-installs a pristine copy of this distribution into it, non-editable. Commands run as
``python -m doveadm_py`` subprocesses of that venv, so they discover the entry points as an
installed dvadm would. The venv goes with the temp dir.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from doveadm_py.testing.venv import PipError, ThrowawayEnv

PLUGIN_DIR = Path(__file__).resolve().parent.parent
HARNESS = "doveadm_py.testing.fixtures"

RunDvadm = Callable[..., subprocess.CompletedProcess[bytes]]


def pytest_configure(config: pytest.Config) -> None:
    """Load dvadm's real-Dovecot fixtures when these tests run on their own (see dvadm-penalty)."""
    if not config.pluginmanager.has_plugin(HARNESS):
        config.pluginmanager.import_plugin(HARNESS)


@pytest.fixture(scope="session")
def proxy_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a throwaway venv with dvadm-proxy installed."""
    env = ThrowawayEnv(tmp_path_factory.mktemp("dvadm-proxy"))
    try:
        env.install(PLUGIN_DIR)
    except PipError as err:
        pytest.fail(str(err), pytrace=False)
    return env.python


@pytest.fixture(scope="session")
def dvadm(proxy_python: Path) -> RunDvadm:
    """``dvadm(*args, timeout=60, env=None)``: run dvadm with the plugin installed (any exit code)."""

    def run(
        *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run(
            [str(proxy_python), "-m", "doveadm_py", *args],
            capture_output=True,
            timeout=timeout,
            env=full_env,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    return run


@pytest.fixture
def proxy_dovecot() -> Iterator[Callable[..., Any]]:
    """Start :class:`~doveadm_py.testing.proxy.ProxyDovecot` instances (stopped at teardown); one
    whose ``server=`` (default the host's 2.3) is unusable skips, or fails under DVADM_REQUIRE_DOVECOT=1."""
    from doveadm_py.testing.fixtures import require_dovecot
    from doveadm_py.testing.proxy import ProxyDovecot

    started: list[ProxyDovecot] = []

    def make(**kwargs: Any) -> ProxyDovecot:
        require_dovecot(kwargs.get("server"))
        instance = ProxyDovecot(**kwargs)
        started.append(instance)
        instance.start()
        return instance

    yield make
    for instance in reversed(started):
        instance.stop()
