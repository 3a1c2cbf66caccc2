"""The plugin as a distribution: installed next to dvadm, listed with its provider."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

RunDvadm = Callable[..., subprocess.CompletedProcess[bytes]]


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
