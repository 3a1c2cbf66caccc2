"""Dovecot 2.3 kick safety: dvadm signals only Dovecot processes, never itself, its parent, its
process group, pid 0/1, or a stranger, whatever pid anvil names (reference section 9, items 3 and 15).

The processes that must survive are real ones this test starts: a plain ``sleep``, and fakes whose
argv[0] is a Dovecot process title (``exec -a dovecot/imap``), so that only the check under test stands
between them and a SIGTERM. Every process started here is killed by its pid at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doveadm_py.anvil import AnvilProtocolError, parse_v1_line
from doveadm_py.anvil.simulator import AnvilSimulator, SimSession
from doveadm_py.procsafety import Outcome, refusal_reason, terminate
from doveadm_py.testing.cli import dvadm_executable

DOVECOT_TITLE = "dovecot/imap"
# bash: wait for one line on stdin (so the test can put our pid into anvil first), then become "$@"
# with argv[0] = $0. exec keeps the pid, so the pid the test knows is the pid of the final program.
GATED_EXEC = 'read -r _; exec -a "$0" "$@"'
# dvadm's console script, runnable under a foreign argv[0]: the venv is found from argv[0], so add it.
DVADM_BOOT = (
    "import site, sys; site.addsitedir(sys.argv.pop(1)); from doveadm_py.app import main; sys.exit(main())"
)
# A parent that runs its arguments as a child and exits with the child's status.
PARENT_BOOT = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
KICKED = b"kicked connections from the following users:\n"


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


@contextlib.contextmanager
def started(argv: list[str], title: str | None = None, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` as ``title`` (default argv[0]) and wait until /proc shows that title (Popen can
    return while the kernel is still setting up the new command line); kill it by pid at the end."""
    shown = (title or argv[0]).encode() + b"\0"
    if title is not None:
        argv = ["bash", "-c", 'exec -a "$0" "$@"', title, *argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **popen)
    try:
        deadline = time.monotonic() + 5
        while not cmdline(proc.pid).startswith(shown):
            assert proc.poll() is None and time.monotonic() < deadline, f"{argv} never showed as {shown!r}"
            time.sleep(0.005)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def fake_dovecot(**popen: Any) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """A ``sleep 30`` that /proc shows as ``dovecot/imap 30``, the way Dovecot retitles its processes."""
    return started(["sleep", "30"], DOVECOT_TITLE, **popen)


def sleeper() -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return started(["sleep", "30"])


def v1_anvil(sessions: list[SimSession], **kwargs: Any) -> AnvilSimulator:
    return AnvilSimulator(1, sessions=sessions, **kwargs)


def run_kick(sim: AnvilSimulator, *args: str, **popen: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [dvadm_executable(), "kick", "-a", sim.path, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
        **popen,
    )


def gated_kick(sim: AnvilSimulator, title: str, prefix: list[str], *args: str) -> subprocess.Popen[bytes]:
    """``prefix + [dvadm kick -a SIM ARGS]`` as ``title``, held until the test writes a line to stdin."""
    return subprocess.Popen(
        ["bash", "-c", GATED_EXEC, title, *prefix, "kick", "-a", sim.path, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def refusal(pid: int, user: str, reason: str) -> bytes:
    return f"Warning: not signalling pid {pid} (users: {user}): {reason}\n".encode()


def still_running(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def nonexistent_pid() -> int:
    """Above the kernel's pid_max, so no process can have it (but a valid pid_t for the parser)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


@pytest.fixture(autouse=True)
def never_pid_0_or_1() -> None:
    """Before any test hands dvadm a dump naming pid 0 or 1, make sure the check exists at all."""
    for pid in (-1, 0, 1):
        assert refusal_reason(pid) == f"pid {pid} is not a single process"


# -- procsafety in-process ---------------------------------------------------------------------------


def test_refuses_itself_its_parent_and_process_group() -> None:
    assert refusal_reason(os.getpid()) == "it is dvadm itself"
    assert refusal_reason(os.getppid()) == "it is dvadm's parent"
    assert refusal_reason(os.getpgrp()) is not None  # which reason depends on how pytest was started
    assert terminate(os.getpid()) == (Outcome.REFUSED, "it is dvadm itself")
    assert terminate(0) == (Outcome.REFUSED, "pid 0 is not a single process")


def test_signals_a_process_titled_like_dovecot() -> None:
    with fake_dovecot() as fake:
        assert cmdline(fake.pid).startswith(b"dovecot/")
        assert refusal_reason(fake.pid) is None
        assert terminate(fake.pid) == (Outcome.SIGNALLED, "")
        assert fake.wait(5) == -signal.SIGTERM


def test_refuses_a_process_that_is_not_dovecot() -> None:
    with sleeper() as proc:
        assert terminate(proc.pid) == (Outcome.REFUSED, "it is not a Dovecot process (sleep)")
        time.sleep(0.05)
        assert still_running(proc)


def test_a_pid_that_does_not_exist_is_gone() -> None:
    assert terminate(nonexistent_pid()) == (Outcome.GONE, "no such process")


# -- dvadm kick end to end, against a 2.3 anvil simulator ---------------------------------------------


def test_kick_signals_nothing_it_must_not() -> None:
    """pid 0, pid 1, dvadm's parent (this test), its process group leader and a stranger: all refused."""
    # The leader is a fake Dovecot process heading its own group; dvadm joins that group, so the
    # group check is the only thing that protects the leader (and kill(0) would reach it too).
    with fake_dovecot(process_group=0) as leader, sleeper() as stranger:
        victims = {
            "u-zero": (0, "pid 0 is not a single process"),
            "u-init": (1, "pid 1 is not a single process"),
            "u-parent": (os.getpid(), "it is dvadm's parent"),
            "u-leader": (leader.pid, "it is dvadm's process group leader"),
            "u-stranger": (stranger.pid, "it is not a Dovecot process (sleep)"),
        }
        sessions = [
            SimSession(pid, user, ip=f"192.0.2.{n}") for n, (user, (pid, _)) in enumerate(victims.items())
        ]
        with v1_anvil(sessions) as sim:
            done = run_kick(sim, "u-*", process_group=leader.pid)
        assert (done.returncode, done.stdout) == (68, b"no users kicked\n"), done.stderr
        for user, (pid, reason) in victims.items():
            assert refusal(pid, user, reason) in done.stderr
        assert done.stderr.count(b"Warning: not signalling") == len(victims)
        time.sleep(0.05)
        assert still_running(leader) and still_running(stranger)


def test_kick_signals_the_dovecot_process_and_spares_the_rest() -> None:
    ghost = nonexistent_pid()
    with fake_dovecot() as good, sleeper() as stranger:
        sessions = [
            SimSession(good.pid, "good", ip="192.0.2.1"),
            SimSession(stranger.pid, "stranger", ip="192.0.2.2"),
            SimSession(os.getpid(), "parent", ip="192.0.2.3"),
            SimSession(ghost, "ghost", ip="192.0.2.4"),  # gone already: counted, as doveadm counts ESRCH
            SimSession(good.pid, "good", ip="198.51.100.1"),  # outside the network, same process
        ]
        with v1_anvil(sessions) as sim:
            done = run_kick(sim, "192.0.2.0/24")
        assert done.returncode == 0, done.stderr
        assert done.stdout == KICKED + b"ghost good \n"
        assert done.stderr == (
            refusal(stranger.pid, "stranger", "it is not a Dovecot process (sleep)")
            + refusal(os.getpid(), "parent", "it is dvadm's parent")
        )
        assert good.wait(5) == -signal.SIGTERM
        assert still_running(stranger)


def test_kick_never_signals_dvadm_itself() -> None:
    """dvadm runs under a Dovecot title and anvil names dvadm's own pid: only the self check is left."""
    site = sysconfig.get_paths()["purelib"]
    with v1_anvil([]) as sim:
        proc = gated_kick(sim, DOVECOT_TITLE, [sys.executable, "-c", DVADM_BOOT, site], "me")
        try:
            sim.sessions = [SimSession(proc.pid, "me", ip="192.0.2.1")]
            out, err = proc.communicate(b"go\n", timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 68, err  # -15 if it had signalled itself
    assert (out, err) == (b"no users kicked\n", refusal(proc.pid, "me", "it is dvadm itself"))


def test_kick_never_signals_a_dovecot_looking_parent() -> None:
    with v1_anvil([]) as sim:
        parent = [sys.executable, "-c", PARENT_BOOT, dvadm_executable()]
        proc = gated_kick(sim, "dovecot/master", parent, "boss")
        try:
            sim.sessions = [SimSession(proc.pid, "boss", ip="192.0.2.1")]
            out, err = proc.communicate(b"go\n", timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 68, err  # -15 if dvadm had signalled it
    assert (out, err) == (b"no users kicked\n", refusal(proc.pid, "boss", "it is dvadm's parent"))


def test_negative_pid_in_the_dump_refuses_the_whole_kick() -> None:
    with pytest.raises(AnvilProtocolError):
        parse_v1_line(b"imap/192.0.2.9/evil\t-1\t1")
    with fake_dovecot() as good:
        sessions = [SimSession(good.pid, "good", ip="192.0.2.1"), SimSession(-1, "evil", ip="192.0.2.9")]
        with v1_anvil(sessions) as sim:
            done = run_kick(sim, "*")
        assert done.returncode == 75, done.stderr
        assert done.stdout == b""
        assert b"malformed dump line" in done.stderr and b"imap/192.0.2.9/evil\t-1\t1" in done.stderr
        time.sleep(0.05)
        assert still_running(good)
