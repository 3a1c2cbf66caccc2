"""Dovecot 2.3 kick safety: dvadm signals only Dovecot processes, never itself, its parent, its
process group, pid 0/1, or a stranger, whatever pid anvil names (reference section 9, items 3 and 15).

The processes that must survive are real ones this test starts: a plain ``sleep``, and fakes whose
argv[0] is a Dovecot process title (``exec -a dovecot/imap``), so that only the check under test stands
between them and a SIGTERM. Every process started here is killed by its pid at the end.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kick_helpers import (
    DOVECOT_TITLE,
    LIBEXEC_IMAP,
    cmdline,
    ended,
    impostor,
    nonexistent_pid,
    real_imap,
    sleeper,
    started,
    still_running,
)

from doveadm_py.anvil import AnvilProtocolError, parse_v1_line
from doveadm_py.procsafety import Outcome, libexec_dirs, refusal_reason, terminate
from doveadm_py.testing import open_sessions
from doveadm_py.testing.cli import dvadm_executable
from doveadm_py.testing.dovecot import child_processes, process_alive
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

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
LIBEXEC = libexec_dirs()


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


@pytest.fixture(autouse=True)
def never_pid_0_or_1() -> None:
    """Before any test hands dvadm a dump naming pid 0 or 1, make sure the check exists at all."""
    for pid in (-1, 0, 1):
        assert refusal_reason(pid) == f"pid {pid} is not a single process"


# -- procsafety in-process ---------------------------------------------------------------------------


def not_sleep(pid: int) -> str:
    return f"its executable {os.readlink(f'/proc/{pid}/exe')} is not Dovecot's imap (libexec directories: "


def test_refuses_itself_its_parent_and_process_group() -> None:
    assert refusal_reason(os.getpid()) == "it is dvadm itself"
    assert refusal_reason(os.getppid()) == "it is dvadm's parent"
    assert refusal_reason(os.getpgrp()) is not None  # which reason depends on how pytest was started
    assert terminate(os.getpid(), "imap", LIBEXEC) == (Outcome.REFUSED, "it is dvadm itself")
    assert terminate(0, "imap", LIBEXEC) == (Outcome.REFUSED, "pid 0 is not a single process")


def test_libexec_directory_is_found() -> None:
    assert os.path.dirname(LIBEXEC_IMAP) in LIBEXEC


def test_libexec_of_a_prefix_install_is_found_from_its_running_master(open_dir: Path) -> None:
    """A Dovecot built into a prefix of its own: its libexec is found from the master's executable
    (``master.pid`` next to the anvil socket), not only from the usual directories."""
    for sub in ("sbin", "run", "libexec/dovecot", "lib"):
        (open_dir / sub).mkdir(parents=True)
    master = open_dir / "sbin" / "dovecot"
    shutil.copy("/bin/sleep", master)
    with started([str(master), "30"], ready=str(master).encode()) as proc:
        (open_dir / "run" / "master.pid").write_text(f"{proc.pid}\n")
        found = libexec_dirs(str(open_dir / "run" / "anvil"))
        assert found[0] == str(open_dir / "libexec" / "dovecot")
        assert str(open_dir / "lib" / "dovecot") not in found  # does not exist
        (open_dir / "libexec" / "dovecot").chmod(0o777)  # writable by others: never trusted
        assert str(open_dir / "libexec" / "dovecot") not in libexec_dirs(str(open_dir / "run" / "anvil"))


def test_signals_a_real_dovecot_imap_process() -> None:
    with real_imap() as imap:
        assert terminate(imap.pid, "imap", LIBEXEC) == (Outcome.SIGNALLED, "")
        assert ended(imap)


def test_dry_run_checks_without_signalling() -> None:
    with real_imap() as imap:
        assert terminate(imap.pid, "imap", LIBEXEC, dry_run=True) == (Outcome.SIGNALLED, "")
        time.sleep(0.05)
        assert still_running(imap)


def test_refuses_an_impostor_titled_dovecot_imap_run_as_nobody() -> None:
    """The hole: ``bash -c 'exec -a dovecot/imap sleep 300'`` as nobody passed the old title check."""
    with impostor(user="nobody") as fake:
        assert cmdline(fake.pid).startswith(b"dovecot/imap")
        outcome, reason = terminate(fake.pid, "imap", LIBEXEC)
        assert (outcome, reason.startswith(not_sleep(fake.pid))) == (Outcome.REFUSED, True), reason
        time.sleep(0.05)
        assert still_running(fake)


def test_refuses_a_real_imap_for_another_service() -> None:
    """A dump line saying pop3 about an imap process (or lmtp, or auth): not that service's process."""
    with real_imap() as imap:
        for service in ("pop3", "lmtp"):
            assert terminate(imap.pid, service, LIBEXEC) == (
                Outcome.REFUSED,
                f"it is not a Dovecot {service} process (its title is 'dovecot/imap')",
            )
        outcome, reason = terminate(imap.pid, "anvil", LIBEXEC)
        assert (outcome, reason.startswith("anvil lists it for service 'anvil', not a mail service")) == (
            Outcome.REFUSED,
            True,
        )
        assert terminate(imap.pid, ["imap", "pop3"], LIBEXEC)[0] is Outcome.REFUSED
        time.sleep(0.05)
        assert still_running(imap)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A temp dir that user nobody can reach (pytest's tmp_path is under a 0700 dir)."""
    path = Path(tempfile.mkdtemp(prefix="dvadm-kick-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_refuses_an_imap_binary_outside_a_root_owned_libexec(open_dir: Path) -> None:
    tmp_path = open_dir
    """A copy of Dovecot's imap that a user could have planted: not in a trusted libexec directory,
    and even when that directory is taken for one, not owned by root."""
    planted = tmp_path / "imap"
    planted.write_bytes(Path(LIBEXEC_IMAP).read_bytes())
    planted.chmod(0o755)
    os.chown(planted, 65534, 65534)
    with real_imap(binary=str(planted)) as copy:
        outcome, reason = terminate(copy.pid, "imap", LIBEXEC)
        assert (outcome, f"its executable {planted} is not Dovecot's imap" in reason) == (
            Outcome.REFUSED,
            True,
        )
        assert terminate(copy.pid, "imap", (str(tmp_path),)) == (
            Outcome.REFUSED,
            f"its executable {planted} is not owned by root and writable only by root",
        )
        assert str(tmp_path) not in libexec_dirs()
        time.sleep(0.05)
        assert still_running(copy)


def test_a_binary_replaced_by_an_upgrade_is_still_dovecots(open_dir: Path) -> None:
    """After a package upgrade the running imap's exe reads ``.../imap (deleted)``: still the binary
    root installed in libexec, so still kicked."""
    installed = open_dir / "imap"
    installed.write_bytes(Path(LIBEXEC_IMAP).read_bytes())
    installed.chmod(0o755)
    with real_imap(binary=str(installed)) as imap:
        installed.unlink()
        assert os.readlink(f"/proc/{imap.pid}/exe") == f"{installed} (deleted)"
        assert terminate(imap.pid, "imap", (str(open_dir),)) == (Outcome.SIGNALLED, "")
        assert ended(imap)


def test_refuses_a_process_that_is_not_dovecot() -> None:
    with sleeper() as proc:
        assert terminate(proc.pid, "imap", LIBEXEC) == (
            Outcome.REFUSED,
            "it is not a Dovecot imap process (its title is 'sleep')",
        )
        time.sleep(0.05)
        assert still_running(proc)


def test_a_pid_that_does_not_exist_is_gone() -> None:
    assert terminate(nonexistent_pid(), "imap", LIBEXEC) == (Outcome.GONE, "no such process")


def test_a_thread_id_is_named_as_a_thread() -> None:
    """A TID is no pid: pidfd_open fails with ENOENT, which once read "No such file or directory"."""
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, args=(10,))
    worker.start()
    try:
        assert terminate(worker.native_id, "imap", LIBEXEC) == (
            Outcome.REFUSED,
            f"it is a thread of process {os.getpid()}, not a process",
        )
        with v1_anvil([SimSession(worker.native_id or 0, "thread", ip="192.0.2.1")]) as sim:
            done = run_kick(sim, "thread")
        reason = f"it is a thread of process {os.getpid()}, not a process"
        assert (done.returncode, done.stdout, done.stderr) == (
            68,
            b"no users kicked\n",
            refusal(worker.native_id or 0, "thread", reason),
        )
    finally:
        stop.set()
        worker.join(10)


# -- dvadm kick end to end, against a 2.3 anvil simulator ---------------------------------------------


def test_kick_signals_nothing_it_must_not() -> None:
    """pid 0, pid 1, dvadm's parent (this test), its process group leader and a stranger: all refused."""
    # The leader is a real Dovecot imap process heading its own group; dvadm joins that group (setpgid:
    # Popen's process_group= is 3.11+), so the group check is the only thing that protects the leader
    # (and kill(0) would reach it too).
    with real_imap(preexec_fn=os.setpgrp) as leader, sleeper() as stranger:
        victims = {
            "u-zero": (0, "pid 0 is not a single process"),
            "u-init": (1, "pid 1 is not a single process"),
            "u-parent": (os.getpid(), "it is dvadm's parent"),
            "u-leader": (leader.pid, "it is dvadm's process group leader"),
            "u-stranger": (stranger.pid, "it is not a Dovecot imap process (its title is 'sleep')"),
        }
        sessions = [
            SimSession(pid, user, ip=f"192.0.2.{n}") for n, (user, (pid, _)) in enumerate(victims.items())
        ]
        with v1_anvil(sessions) as sim:
            done = run_kick(sim, "u-*", preexec_fn=functools.partial(os.setpgid, 0, leader.pid))
        assert (done.returncode, done.stdout) == (68, b"no users kicked\n"), done.stderr
        for user, (pid, reason) in victims.items():
            assert refusal(pid, user, reason) in done.stderr
        assert done.stderr.count(b"Warning: not signalling") == len(victims)
        time.sleep(0.05)
        assert still_running(leader) and still_running(stranger)


def test_kick_signals_the_dovecot_process_and_spares_the_rest() -> None:
    ghost = nonexistent_pid()
    with real_imap() as good, sleeper() as stranger, impostor(user="nobody") as fake:
        sessions = [
            SimSession(good.pid, "good", ip="192.0.2.1"),
            SimSession(stranger.pid, "stranger", ip="192.0.2.2"),
            SimSession(os.getpid(), "parent", ip="192.0.2.3"),
            SimSession(ghost, "ghost", ip="192.0.2.4"),  # gone already: counted, as doveadm counts ESRCH
            SimSession(good.pid, "good", ip="198.51.100.1"),  # outside the network, same process
            SimSession(fake.pid, "fake", ip="192.0.2.5"),
        ]
        with v1_anvil(sessions) as sim:
            done = run_kick(sim, "192.0.2.0/24")
        assert done.returncode == 0, done.stderr
        assert done.stdout == KICKED + b"ghost good \n"
        assert done.stderr.startswith(
            refusal(stranger.pid, "stranger", "it is not a Dovecot imap process (its title is 'sleep')")
            + refusal(os.getpid(), "parent", "it is dvadm's parent")
            + refusal(fake.pid, "fake", not_sleep(fake.pid))[:-1]
        ), done.stderr
        assert done.stderr.count(b"\n") == 3
        assert ended(good)
        assert still_running(stranger) and still_running(fake)


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
    with real_imap() as good:
        sessions = [SimSession(good.pid, "good", ip="192.0.2.1"), SimSession(-1, "evil", ip="192.0.2.9")]
        with v1_anvil(sessions) as sim:
            done = run_kick(sim, "*")
        assert done.returncode == 75, done.stderr
        assert done.stdout == b""
        assert b"malformed dump line" in done.stderr and b"imap/192.0.2.9/evil\t-1\t1" in done.stderr
        time.sleep(0.05)
        assert still_running(good)


# -- processes that /proc cannot show, and Dovecot's own processes -------------------------------------


AS_NOBODY = "setpriv --reuid nobody --regid nogroup --clear-groups"
UNSHARE = ["unshare", "--mount", "--propagation", "private"]


def require_runs_as_nobody() -> None:
    """Skip when nobody cannot run this interpreter: pyenv's 3.10 and 3.13 live under /root (mode
    700) and find their libpython there. The default interpreter runs it; CI runs both."""
    probe = subprocess.run(
        [*AS_NOBODY.split(), sys.executable, "-c", "pass"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"{sys.executable} cannot run as nobody: {probe.stderr.decode(errors='replace').strip()}")


def run_kick_with_proc(
    mount: str, sim: AnvilSimulator, *args: str, run_as: str = ""
) -> subprocess.CompletedProcess[bytes]:
    """``dvadm kick`` (run through ``run_as``) in a private mount namespace where ``mount`` has
    replaced /proc."""
    script = f'{mount} && exec {run_as} "$@"'
    return subprocess.run(
        [*UNSHARE, "sh", "-c", script, "sh", dvadm_executable(), "kick", "-a", sim.path, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )


def assert_unverified(done: subprocess.CompletedProcess[bytes], imap: subprocess.Popen[bytes]) -> None:
    """The kick of "hidden" (imap's only user) said why it could not check imap, and spared it."""
    why = f"cannot verify that it is a Dovecot process: /proc/{imap.pid} does not show it"
    assert (done.returncode, done.stdout, done.stderr) == (
        68,
        b"no users kicked\n",
        refusal(imap.pid, "hidden", why),
    )
    time.sleep(0.05)
    assert still_running(imap)


@pytest.mark.parametrize(
    "mount",
    ["mount -t tmpfs none /proc", "umount -l /proc"],
    ids=["empty", "unmounted"],
)
def test_a_process_proc_cannot_show_is_not_kicked_nor_counted(mount: str) -> None:
    """The hole: with /proc empty, a live pid was reported as kicked although nothing was signalled."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace")
    with real_imap() as imap:
        with v1_anvil([SimSession(imap.pid, "hidden", ip="192.0.2.1")]) as sim:
            done = run_kick_with_proc(mount, sim, "hidden")
        assert_unverified(done, imap)


def test_hidepid_hides_the_process_from_an_unprivileged_dvadm(open_dir: Path) -> None:
    """/proc mounted with hidepid=2: dvadm (as nobody) cannot see daemon's imap process. It is
    neither signalled nor counted, and the message says why."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace and other users")
    require_runs_as_nobody()
    with real_imap(user="daemon") as imap:
        with AnvilSimulator(
            1, sessions=[SimSession(imap.pid, "hidden", ip="192.0.2.1")], directory=str(open_dir)
        ) as sim:
            os.chmod(sim.path, 0o666)
            mount = "mount -t proc -o hidepid=2 proc /proc"
            done = run_kick_with_proc(mount, sim, "hidden", run_as=AS_NOBODY)
        assert_unverified(done, imap)


@pytest.mark.dovecot
def test_dovecots_own_processes_are_never_signalled(dovecot: Any) -> None:
    """A dump naming the real anvil, log, config, stats and auth processes (as imap sessions, or as
    sessions of their own service) and an impostor run as nobody: none is signalled; the real
    imap session in the same dump is."""
    with open_sessions(dovecot, [("jane", "127.0.0.1")]) as group:
        (entry,) = dovecot.connect_dump()
        own = {
            name: pid
            for pid in children(dovecot.master_pid)
            # a process just forked or exiting (an imap-login) may show no title yet: not one of them
            if (name := cmdline(pid).split(b"\0")[0].split(b" ")[0].decode()).startswith("dovecot/")
            and name != "dovecot/imap"
        }
        assert {"dovecot/anvil", "dovecot/log", "dovecot/config", "dovecot/auth"} <= set(own), own
        with impostor(user="nobody") as fake:
            sessions = [
                SimSession(entry.pid, "jane", ip="192.0.2.1"),
                SimSession(fake.pid, "fake", ip="192.0.2.2"),
            ]
            for n, (name, pid) in enumerate(own.items()):
                service = name.split("/", 1)[1]
                sessions.append(SimSession(pid, f"as-imap-{n}", ip="192.0.2.3"))
                sessions.append(SimSession(pid, f"as-{service}", service=service, ip="192.0.2.4"))
            with v1_anvil(sessions) as sim:
                done = run_kick(sim, "--force", "*")
            assert (done.returncode, done.stdout) == (0, KICKED + b"jane \n"), done.stderr
            assert done.stderr.count(b"Warning: not signalling") == 1 + len(own), done.stderr
            assert group.wait_for_disconnects([("jane", "127.0.0.1")], timeout=10) == {("jane", "127.0.0.1")}
            time.sleep(0.1)
            assert still_running(fake)
            assert all(process_alive(pid) for pid in own.values())


def children(parent: int | None) -> list[int]:
    return list(child_processes(parent or 0))
