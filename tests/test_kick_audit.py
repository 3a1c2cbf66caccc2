"""The audit trail: every kick, and every refused one, is one syslog line saying who ran it, with
which masks and options, against which server, and what happened (issue 11, section 3).

The test binds its own syslog socket (a UNIX datagram socket, as /dev/log is) and points dvadm at
it with DVADM_SYSLOG_SOCKET; dry runs are not logged; a missing log socket never fails a kick.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kick_helpers import nonexistent_pid

from doveadm_py.audit import SOCKET_ENV
from doveadm_py.testing.cli import dvadm_executable, run_dvadm
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

G1 = "1" * 32
NO_MASKS = "user and/or ip[/bits] must be specified."
ME = f"uid={os.getuid()}({pwd.getpwuid(os.getuid()).pw_name})"


class SyslogSocket:
    """A bound datagram socket collecting what dvadm logs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def lines(self) -> list[str]:
        got = []
        self.sock.settimeout(0.5)
        for _ in range(100):
            try:
                got.append(self.sock.recv(65536).decode())
            except TimeoutError:
                break
            self.sock.settimeout(0.05)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def syslog() -> Iterator[SyslogSocket]:
    with tempfile.TemporaryDirectory(prefix="dvadm-log-") as tmp:
        log = SyslogSocket(Path(tmp) / "log")
        try:
            yield log
        finally:
            log.close()


def kick(log: SyslogSocket | Path, *args: str) -> tuple[int, bytes, bytes]:
    path = log.path if isinstance(log, SyslogSocket) else log
    done = run_dvadm("kick", *args, env={SOCKET_ENV: str(path)}, timeout=30)
    return done.returncode, done.stdout, done.stderr


def test_a_2_4_kick_is_logged(syslog: SyslogSocket) -> None:
    sessions = [SimSession(1001, "alice", ip="192.0.2.10", guid=G1), SimSession(1002, "bob", ip="192.0.2.11")]
    with AnvilSimulator(2, sessions=sessions) as sim:
        assert kick(syslog, "-a", sim.path, "al*") == (0, b"1 connections kicked\n", b"")
        (line,) = syslog.lines()
    assert line.startswith("<85>")  # authpriv.notice
    head, message = line.split(": ", 1)
    assert head.endswith("]") and " dvadm[" in head
    assert message.startswith(f"kick by {ME}")  # and login=... when the session has a login uid
    assert message.endswith(f": 'al*' on {sim.path}: 1 connections kicked"), line


def test_a_2_3_kick_names_the_users_and_options(syslog: SyslogSocket) -> None:
    ghost = nonexistent_pid()  # gone already: counted as kicked, and nothing real is signalled
    with AnvilSimulator(1, sessions=[SimSession(ghost, "jane", ip="192.0.2.10")]) as sim:
        assert kick(syslog, "-a", sim.path, "--force", "jane", "192.0.2.0/24")[0] == 0
        assert kick(syslog, "-a", sim.path, "nobody")[0] == 68
        first, second = syslog.lines()
    assert first.endswith(f": --force jane 192.0.2.0/24 on {sim.path}: kicked jane"), first
    assert second.endswith(f": nobody on {sim.path}: no users kicked"), second


def test_refused_kicks_are_logged(syslog: SyslogSocket) -> None:
    with AnvilSimulator(1, sessions=[SimSession(nonexistent_pid(), "jane", ip="192.0.2.10")]) as sim:
        assert kick(syslog, "-a", sim.path, "-h", "10.0.0.7", "jane")[0] == 64
        assert kick(syslog, "-a", sim.path)[0] == 64
        missing = f"{sim.path}.missing"
        assert kick(syslog, "-a", missing, "jane")[0] == 75
        on_23, no_masks, no_socket = syslog.lines()
    assert f"kick by {ME}: -h 10.0.0.7 jane on {sim.path}: refused (exit 64): this server speaks" in on_23
    assert no_masks.endswith(f": (no arguments) on {sim.path}: refused (exit 64): {NO_MASKS}"), no_masks
    assert f"jane on {missing}: refused (exit 75): " in no_socket


def test_control_characters_stay_on_one_line(syslog: SyslogSocket) -> None:
    with AnvilSimulator(2, sessions=[]) as sim:
        assert kick(syslog, "-a", sim.path, "evil\nFAKE: kick by uid=1")[0] == 0
        (line,) = syslog.lines()
    assert "\n" not in line and "evil\\x0aFAKE" in line


def test_dry_runs_are_not_logged(syslog: SyslogSocket) -> None:
    with AnvilSimulator(2, sessions=[SimSession(1001, "alice", ip="192.0.2.10", guid=G1)]) as sim:
        assert kick(syslog, "-a", sim.path, "--dry-run", "alice")[0] == 0
        assert syslog.lines() == []
        assert len(sim.sessions) == 1


def test_no_syslog_never_fails_the_kick(tmp_path: Path) -> None:
    with AnvilSimulator(2, sessions=[SimSession(1001, "alice", ip="192.0.2.10", guid=G1)]) as sim:
        assert kick(tmp_path / "no-such-socket", "-a", sim.path, "alice") == (
            0,
            b"1 connections kicked\n",
            b"",
        )
        assert sim.sessions == []


def test_a_fleet_kick_refused_before_any_server_is_logged(syslog: SyslogSocket, tmp_path: Path) -> None:
    """``-S`` kicks are logged per server by the fleet code; one refused up front, here."""
    env = {SOCKET_ENV: str(syslog.path), "DVADM_FLEET": str(tmp_path / "no-fleet.toml")}
    done = run_dvadm("kick", "-S", "nosuch", "jane", env=env, timeout=30)
    assert done.returncode == 75
    (line,) = syslog.lines()
    assert line.endswith(
        f"kick by {ME}: jane on -S nosuch: refused (exit 75): {done.stderr.decode()[7:-1]}"
    ), line


def test_an_interrupted_kick_is_logged(syslog: SyslogSocket) -> None:
    """Ctrl-C while anvil works on the kick: the request may have done its work, so it is logged
    (exit 130, as for any interrupted command)."""
    with AnvilSimulator(
        2, sessions=[SimSession(1001, "alice", ip="192.0.2.10", guid=G1)], kick_delay=30
    ) as sim:
        proc = subprocess.Popen(
            [dvadm_executable(), "kick", "-a", sim.path, "al*"],
            env={**os.environ, SOCKET_ENV: str(syslog.path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while not sim.kicks and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert sim.kicks, "the kick request never arrived"
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert (proc.returncode, out) == (130, b"")
        (line,) = syslog.lines()
    interrupted = "interrupted (SIGINT): requests already sent may have kicked"
    assert line.endswith(f": 'al*' on {sim.path}: {interrupted}"), line


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["kick", "--bogus", "alice"], b"refused (exit 64): dvadm kick: unrecognized arguments: --bogus"),
        (["kick", "alice", "-a"], b"refused (exit 64): dvadm kick: argument -a/--socket-path: expected one"),
        (["-f", "nosuch", "kick", "alice"], b"refused (exit 75): Unknown print formatter: nosuch"),
    ],
)
def test_a_kick_refused_for_its_command_line_is_logged(
    syslog: SyslogSocket, args: list[str], why: bytes
) -> None:
    """Refused before the command ran (a bad option, an unknown formatter): logged as any refusal, with
    the words as given."""
    done = run_dvadm(*args, env={SOCKET_ENV: str(syslog.path)}, timeout=30)
    assert done.returncode in (64, 75), done.stderr
    (line,) = syslog.lines()
    words = args[args.index("kick") + 1 :]
    assert f"kick by {ME}: {' '.join(words)} on (not resolved): " in line, line
    assert line.encode().split(b": ", 3)[-1].startswith(why), line


def test_a_dry_run_refused_for_its_command_line_is_not_logged(syslog: SyslogSocket) -> None:
    assert (
        run_dvadm("kick", "--dry-run", "--bogus", "alice", env={SOCKET_ENV: str(syslog.path)}).returncode
        == 64
    )
    assert syslog.lines() == []
