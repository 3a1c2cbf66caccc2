"""dvadm-penalty's man page and ``dvadm help penalty``: the same sections, the page current."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from doveadm_py.testing.cli import run_dvadm

PLUGIN_DIR = Path(__file__).resolve().parent.parent


def test_checked_in_page_is_current(tmp_path: Path) -> None:
    # a subprocess: importing the plugin here would make it importable to later tests
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR)}
    argv = [sys.executable, "-m", "doveadm_py.manual", str(tmp_path), "penalty=dvadm_penalty.command:Penalty"]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=120)
    written = tmp_path / "dvadm-penalty.1"
    assert (PLUGIN_DIR / "man" / "dvadm-penalty.1").read_text() == written.read_text(), "run `make man`"


def test_help_penalty_shows_the_manual_sections(penalty_plugin: Any) -> None:
    out = run_dvadm("help", "penalty").stdout.decode()
    for heading in ("DESCRIPTION", "EXAMPLES", "EXIT STATUS"):
        assert f"\n{heading}\n" in out
    assert "dvadm penalty 192.0.2.0/24" in out
    page = (PLUGIN_DIR / "man" / "dvadm-penalty.1").read_text()
    assert "dvadm penalty 192.0.2.0/24" in page.replace("\\-", "-")
