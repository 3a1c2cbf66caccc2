"""Test set-up for dvadm-proxy: the plugin pip-installed as a user would, into a throwaway venv.

The interpreter running the tests is never installed into (issue 11): a session fixture
makes a venv without pip in a temp dir, lets it see the running environment's packages (so
dvadm and its dependencies, as installed there, are what the plugin runs against), and
pip-installs a pristine copy of this distribution into it, non-editable. Commands run as
``python -m doveadm_py`` subprocesses of that venv, so they discover the entry points as an
installed dvadm would. The venv goes with the temp dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

PLUGIN_DIR = Path(__file__).resolve().parent.parent
HARNESS = "doveadm_py.testing.fixtures"

RunDvadm = Callable[..., subprocess.CompletedProcess[bytes]]


def pytest_configure(config: pytest.Config) -> None:
    """Load dvadm's real-Dovecot fixtures when these tests run on their own (see dvadm-penalty)."""
    if not config.pluginmanager.has_plugin(HARNESS):
        config.pluginmanager.import_plugin(HARNESS)


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


def pip_install(python: Path, source: Path, work: Path) -> None:
    copy = work / f"{source.name}-src"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info"))
    flags = ["--no-build-isolation"] if find_spec("setuptools") and find_spec("wheel") else []
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", *flags, str(copy)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip install {source.name} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


@pytest.fixture(scope="session")
def proxy_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a throwaway venv with dvadm-proxy installed."""
    work = tmp_path_factory.mktemp("dvadm-proxy")
    python = make_venv(work / "venv")
    pip_install(python, PLUGIN_DIR, work)
    return python


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
    """Start :class:`~doveadm_py.testing.proxy.ProxyDovecot` instances (stopped at teardown);
    skips without a usable Dovecot 2.3 unless DVADM_REQUIRE_DOVECOT=1."""
    from doveadm_py.testing.fixtures import require_dovecot
    from doveadm_py.testing.proxy import ProxyDovecot

    require_dovecot()
    started: list[ProxyDovecot] = []

    def make(**kwargs: Any) -> ProxyDovecot:
        instance = ProxyDovecot(**kwargs)
        started.append(instance)
        instance.start()
        return instance

    yield make
    for instance in reversed(started):
        instance.stop()
