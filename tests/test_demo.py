"""``make demo`` (the README's first command) shows what it promises, with or without Dovecot."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from doveadm_py.testing.fixtures import require_dovecot


def run_demo(**env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "doveadm_py.testing.demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def after_last_who(out: str) -> str:
    return out.rsplit("$ dvadm who\n", 1)[1]


def test_demo_on_the_simulator():
    out = run_demo(DVADM_DOVECOT="/nonexistent")
    assert "anvil simulator plays Dovecot 2.4" in out
    assert out.count("2 connections kicked") == 2
    final = after_last_who(out)
    assert "jane" not in final and "jano" not in final and "james" in final
    assert "(127.0.1.9)" in final and "127.0.0.5" not in final
    assert "Stopped the simulator." in out


@pytest.mark.dovecot
def test_demo_on_a_real_dovecot():
    require_dovecot()
    out = run_demo()
    assert "Started a throwaway Dovecot 2.3" in out
    assert "kicked connections from the following users:\njane jano \n" in out
    assert "disconnected: foo@127.0.0.5, foo@127.0.0.6, jane@127.0.0.1, jano@127.0.0.2\n" in out
    final = after_last_who(out)
    assert "jane " not in final and "james" in final
    assert "Stopped the throwaway Dovecot." in out
