"""A closed or full stdout, a closed stderr, an ASCII-only encoding: a clear error, a truthful exit code.

Each case runs the installed ``dvadm`` through ``sh`` so that the descriptor is really closed
(``subprocess.DEVNULL`` is an open /dev/null) or really full (/dev/full).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from doveadm_py.output.json import ascii_json
from doveadm_py.testing.cli import dvadm_executable
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

EX_IOERR = 74


@pytest.fixture
def sim():
    sessions = [
        SimSession(pid=1001, username="jöhn", ip="192.0.2.10"),
        SimSession(pid=1002, username="bob", ip="192.0.2.20"),
    ]
    with AnvilSimulator(protocol=2, sessions=sessions) as sim:
        yield sim


def run_sh(
    redirect: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``dvadm ARGS REDIRECT`` in sh; the streams not redirected are captured."""
    return subprocess.run(
        ["sh", "-c", f'exec "$0" "$@" {redirect}', dvadm_executable(), *args],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("redirect", "reason"),
    [(">&-", "standard output is closed"), (">/dev/full", "No space left on device")],
)
def test_who_output_failure_is_one_line_exit_74(sim, redirect, reason):
    proc = run_sh(redirect, "who", "-a", sim.path)
    assert proc.returncode == EX_IOERR
    assert proc.stderr.decode() == f"Error: cannot write the output: {reason}\n"


@pytest.mark.parametrize(
    ("redirect", "reason"),
    [(">&-", "standard output is closed"), (">/dev/full", "No space left on device")],
)
def test_kick_that_kicked_says_so_when_its_report_is_lost(sim, redirect, reason):
    proc = run_sh(redirect, "kick", "-a", sim.path, "bob")
    assert sim.kicks == [b"KICK-USER\tbob"]  # the kick happened ...
    assert [s.username for s in sim.sessions] == ["jöhn"]
    assert proc.returncode == EX_IOERR  # ... and the exit code says only the report failed
    assert proc.stderr.decode() == (
        f"Error: 'kick' has run (exit code 0), but its report is lost: cannot write the output: {reason}\n"
    )


def test_kick_that_failed_keeps_its_own_exit_code_when_its_report_is_lost():
    with AnvilSimulator(
        protocol=1, sessions=[SimSession(pid=1001, username="bob", ip="192.0.2.20")]
    ) as sim23:
        proc = run_sh(">/dev/full", "kick", "-a", sim23.path, "nobody")
    assert proc.returncode == 68  # 2.3's "no users kicked": nothing was done
    assert proc.stderr.decode() == (
        "Error: 'kick' has run (exit code 68), but its report is lost: "
        "cannot write the output: No space left on device\n"
    )


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"])
def test_errors_with_stderr_closed_or_full_keep_the_exit_code(tmp_path, redirect):
    proc = run_sh(redirect, "who", "-a", str(tmp_path / "no-anvil"))
    assert proc.returncode == 75
    assert proc.stdout == b""


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"])
def test_success_with_stderr_closed_or_full(sim, redirect):
    proc = run_sh(redirect, "who", "-1", "-a", sim.path)
    assert proc.returncode == 0
    assert b"bob" in proc.stdout


@pytest.mark.parametrize("fd", [0, 1, 2])
def test_a_closed_standard_fd_is_dev_null_while_dvadm_runs(fd):
    """Looked at from outside while dvadm waits on a hung anvil: the closed fd is /dev/null, and the
    anvil socket is another fd (else anything written to that fd would go to anvil)."""
    with AnvilSimulator(protocol=2, fault="hang") as hung:
        proc = subprocess.Popen(
            ["sh", "-c", f'exec "$0" "$@" {fd}>&-', dvadm_executable(), "who", "-a", hung.path],
            stdin=subprocess.DEVNULL if fd else None,
            stdout=subprocess.DEVNULL if fd != 1 else None,
            stderr=subprocess.DEVNULL if fd != 2 else None,
        )
        try:
            deadline = time.monotonic() + 20
            while not hung.accepted and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert hung.accepted, "dvadm never connected"
            target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
            sockets = [n for n in os.listdir(f"/proc/{proc.pid}/fd") if "socket:" in fd_target(proc.pid, n)]
        finally:
            proc.kill()
            proc.wait(10)
    assert target == os.devnull
    assert sockets and str(fd) not in sockets


def fd_target(pid: int, fd: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""


def test_ascii_only_encoding_escapes_a_non_ascii_username(sim):
    proc = run_sh("", "who", "-1", "-a", sim.path, env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0, proc.stderr
    assert b"j\\xf6hn" in proc.stdout
    assert proc.stderr == b""


def test_ascii_only_encoding_kick_reports_its_count(sim):
    proc = run_sh("", "kick", "-a", sim.path, "j*", env={"PYTHONIOENCODING": "ascii"})
    assert (proc.returncode, proc.stdout) == (0, b"1 connections kicked\n"), proc.stderr
    assert [s.username for s in sim.sessions] == ["bob"]


def test_ascii_only_encoding_keeps_json_valid(sim):
    proc = run_sh("", "-f", "json", "who", "-1", "-a", sim.path, env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [row["username"] for row in rows] == ["jöhn", "bob"]
    assert b"j\\u00f6hn" in proc.stdout


def test_ascii_json_escapes_beyond_the_bmp_as_surrogate_pairs():
    text = "a\U0001f600é"
    assert ascii_json(text) == "a\\ud83d\\ude00\\u00e9"
    assert json.loads('"' + ascii_json(text) + '"') == text
