"""The plugin as a distribution: installed next to dvadm, listed with its provider."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from doveadm_py.testing.venv import ThrowawayEnv

RunDvadm = Callable[..., subprocess.CompletedProcess[bytes]]
PLUGIN_DIR = Path(__file__).resolve().parent.parent
REPO = PLUGIN_DIR.parent.parent


def test_help_lists_both_commands_with_the_distribution(dvadm: RunDvadm) -> None:
    listing = dvadm("help")
    assert listing.returncode == 0, listing.stderr
    for name, summary in (
        ("list", b"List the sessions of the login proxies"),
        ("kick", b"Disconnect proxied"),
    ):
        line = re.compile(
            rb"^  proxy " + name.encode() + rb" +" + summary + rb".*\[from dvadm-proxy\]$", re.M
        )
        assert line.search(listing.stdout), listing.stdout
    for argv in (("help", "proxy", "kick"), ("proxy", "kick", "--help")):
        proc = dvadm(*argv)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(b"usage: dvadm proxy kick [-a <ipc (2.3) or anvil (2.4) socket path>]")
        assert b"\nThis command is provided by the dvadm-proxy distribution.\n" in proc.stdout


def test_installed_not_into_the_running_interpreter(proxy_python: Path) -> None:
    """The plugin lives in the throwaway venv only (issue 11: tests never pip install into ours)."""
    from importlib.metadata import PackageNotFoundError, distribution

    with pytest.raises(PackageNotFoundError):
        distribution("dvadm-proxy")
    found = subprocess.run(
        [str(proxy_python), "-c", "import dvadm_proxy, sys; print(dvadm_proxy.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert found.stdout.startswith(str(proxy_python.parent.parent))


def build_sdist(source: Path, out: Path) -> Path:
    """``source``'s sdist (setuptools' PEP 517 backend, as ``python -m build --sdist`` calls it)."""
    out.mkdir(exist_ok=True)
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return out / done.stdout.strip().splitlines()[-1]


def plugin_version() -> str:
    namespace: dict[str, str] = {}
    exec((PLUGIN_DIR / "dvadm_proxy" / "__init__.py").read_text(), namespace)
    return namespace["__version__"]


def test_sdists_install_with_pip_dvadm_then_the_plugin(tmp_path: Path) -> None:
    """The issue's "done when", as a user does it: pip install dvadm's sdist, then the plugin's,
    into a fresh venv (dependencies as the test environment has them); its own ``dvadm`` script
    lists both commands with the distribution, and ``man`` finds the plugin's pages."""
    dvadm_src = tmp_path / "dvadm-src"
    dvadm_src.mkdir()
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.rst", "LICENSE", "MANIFEST.in"):
        shutil.copy(REPO / name, dvadm_src / name)
    for name in ("doveadm_py", "man"):
        shutil.copytree(REPO / name, dvadm_src / name, ignore=shutil.ignore_patterns("__pycache__"))
    plugin_src = tmp_path / "plugin-src"
    ignored = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(PLUGIN_DIR, plugin_src, ignore=ignored)
    sdists = [build_sdist(src, tmp_path / "dist") for src in (dvadm_src, plugin_src)]
    assert [p.name for p in sdists] == ["dvadm-0.1.0.tar.gz", f"dvadm_proxy-{plugin_version()}.tar.gz"]

    env = ThrowawayEnv(tmp_path / "env")
    for sdist in sdists:  # dvadm first, then the plugin next to it
        env.pip("install", "--no-deps", "-q", "--no-build-isolation", str(sdist))
    prefix = env.python.parent.parent
    man_env = {"PATH": f"{prefix}/bin:/usr/bin:/bin", "MANPAGER": "cat", "MANWIDTH": "100", "LC_ALL": "C"}

    def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
        # not from the checkout, whose doveadm_py would shadow the installed one
        return subprocess.run(argv, cwd=tmp_path, env=man_env, capture_output=True, timeout=60, check=False)

    where = run(
        str(env.python), "-c", "import doveadm_py, dvadm_proxy as p; print(doveadm_py.__file__, p.__file__)"
    )
    assert all(path.startswith(f"{prefix}/lib/".encode()) for path in where.stdout.split()), where
    listing = run("dvadm", "help")
    assert (listing.returncode, listing.stderr) == (0, b"")
    for name in ("list", "kick"):
        assert re.search(rb"^  proxy " + name.encode() + rb" .*\[from dvadm-proxy\]$", listing.stdout, re.M)
        shown = run("dvadm", "proxy", name, "--help")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"usage: dvadm proxy {name} [-a ".encode())
        assert b"\nThis command is provided by the dvadm-proxy distribution.\n" in shown.stdout
    for page in ("dvadm-proxy-list", "dvadm-proxy-kick"):
        found = run("man", "-w", page)
        assert found.stdout.strip() == f"{prefix}/share/man/man1/{page}.1".encode(), found.stderr
        installed = (prefix / "share" / "man" / "man1" / f"{page}.1").read_text()
        assert installed == (PLUGIN_DIR / "man" / f"{page}.1").read_text()
