"""dvadm-proxy's man pages and ``dvadm help proxy list|kick``: the same sections, the pages current."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from doveadm_py.manual import write_pages

PLUGIN_DIR = Path(__file__).resolve().parent.parent
RunDvadm = Callable[..., subprocess.CompletedProcess[bytes]]
COMMANDS = {"proxy list": "ProxyList", "proxy kick": "ProxyKick"}


def test_checked_in_pages_are_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    specs = [f"{name}=dvadm_proxy.command:{cls}" for name, cls in COMMANDS.items()]
    try:
        written = write_pages(str(tmp_path), specs)
    finally:  # imported from the checkout only for these pages: later tests must not find it
        for name in [m for m in sys.modules if m == "dvadm_proxy" or m.startswith("dvadm_proxy.")]:
            del sys.modules[name]
    assert [Path(path).name for path in written] == ["dvadm-proxy-list.1", "dvadm-proxy-kick.1"]
    for path in written:
        checked_in = PLUGIN_DIR / "man" / Path(path).name
        assert checked_in.read_text() == Path(path).read_text(), "run `make man`"


@pytest.mark.parametrize(
    ("name", "example"), [("list", "dvadm proxy list -1 'ja*'"), ("kick", "dvadm proxy kick jane bob")]
)
def test_help_shows_the_manual_sections(dvadm: RunDvadm, name: str, example: str) -> None:
    out = dvadm("help", "proxy", name).stdout.decode()
    for heading in ("DESCRIPTION", "EXAMPLES", "EXIT STATUS"):
        assert f"\n{heading}\n" in out
    assert example in out
    assert "Dovecot 2.3" in out and "Dovecot 2.4" in out
