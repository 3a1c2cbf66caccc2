"""dvadm-penalty's man page and ``dvadm help penalty``: the same sections, the page current."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from doveadm_py.manual import write_pages
from doveadm_py.testing.cli import run_dvadm

PLUGIN_DIR = Path(__file__).resolve().parent.parent


def test_checked_in_page_is_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    try:
        (written,) = write_pages(str(tmp_path), ["penalty=dvadm_penalty.command:Penalty"])
    finally:  # imported from the checkout only for this page: later tests must not find it
        for name in [m for m in sys.modules if m == "dvadm_penalty" or m.startswith("dvadm_penalty.")]:
            del sys.modules[name]
    assert Path(written).name == "dvadm-penalty.1"
    assert (PLUGIN_DIR / "man" / "dvadm-penalty.1").read_text() == Path(written).read_text(), "run `make man`"


def test_help_penalty_shows_the_manual_sections(penalty_plugin: Any) -> None:
    out = run_dvadm("help", "penalty").stdout.decode()
    for heading in ("DESCRIPTION", "EXAMPLES", "EXIT STATUS"):
        assert f"\n{heading}\n" in out
    assert "dvadm penalty 192.0.2.0/24" in out
    page = (PLUGIN_DIR / "man" / "dvadm-penalty.1").read_text()
    assert "dvadm penalty 192.0.2.0/24" in page.replace("\\-", "-")
