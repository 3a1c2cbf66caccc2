"""Processes for the 2.3 kick tests: real Dovecot mail processes, impostors and bystanders; kick reports.

A real one is Dovecot's own ``imap`` binary serving a preauthenticated session on a pipe
(``USER=nobody imap``, as with IMAP over ssh), titled ``dovecot/imap`` as Dovecot's master
titles it: its executable is the root-owned binary in Dovecot's libexec directory, so it
passes every check a mail process of a running server passes. Impostors only *look* like
one (``exec -a dovecot/imap sleep``). Every process is killed by its pid at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# -- what a kick prints (2.3's texts, 2.4's count) --------------------------------------------------

KICKED = "kicked connections from the following users:"
WARNING = "warning: other connections would also be kicked from following users:"
NONE = "no users kicked"
COUNT = re.compile(r"(\d+) connections kicked\n")  # 2.4's whole report
USE_FORCE = {
    "dvadm": "Use the '--force' option to enforce the disconnect.",
    "doveadm": "Use the '-f' option to enforce the disconnect.",
}


def report(stdout: bytes, tool: str) -> tuple[str | None, frozenset[str]]:
    """The report's kind and its user list, whatever order the list and the texts came in."""
    text = stdout.decode()
    if COUNT.fullmatch(text):
        return text, frozenset()
    kinds = [kind for kind in (KICKED, WARNING, NONE) if kind in text]
    assert len(kinds) <= 1, text
    for phrase in (KICKED, WARNING, NONE, USE_FORCE[tool]):
        text = text.replace(phrase, " ")
    return (kinds[0] if kinds else None), frozenset(text.split())


DOVECOT_TITLE = "dovecot/imap"
LIBEXEC_IMAP = next(
    (p for p in ("/usr/lib/dovecot/imap", "/usr/libexec/dovecot/imap") if os.access(p, os.X_OK)),
    "/usr/lib/dovecot/imap",
)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def still_running(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def ended(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """True once the process has exited (bounded wait)."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def nonexistent_pid() -> int:
    """Above the kernel's pid_max, so no process can have it (but a valid pid_t for the parser)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def wait_shown(proc: subprocess.Popen[bytes], shown: Callable[[], bool], timeout: float = 10.0) -> None:
    """Until /proc shows the process as ``shown`` says (exec and retitling take a moment)."""
    deadline = time.monotonic() + timeout
    while not shown():
        assert proc.poll() is None and time.monotonic() < deadline, f"{proc.args} never showed as expected"
        time.sleep(0.005)


@contextlib.contextmanager
def started(
    argv: list[str], title: str | None = None, ready: bytes | None = None, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` as ``title`` (default argv[0]) and wait until /proc shows that title (and the
    executable has ``ready`` in its path, once exec is done); kill it by pid at the end."""
    shown = (title or argv[0]).encode() + b"\0"
    if title is not None:
        argv = ["bash", "-c", 'exec -a "$0" "$@"', title, *argv]
    popen.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(argv, **popen)
    try:
        wait_shown(
            proc, lambda: cmdline(proc.pid).startswith(shown) and (ready or b"") in exe(proc.pid).encode()
        )
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def impostor(**popen: Any) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """A ``sleep 30`` that /proc shows as ``dovecot/imap 30``, the way Dovecot titles its processes."""
    return started(["sleep", "30"], DOVECOT_TITLE, ready=b"sleep", **popen)


def sleeper() -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return started(["sleep", "30"])


@contextlib.contextmanager
def real_imap(
    user: str = "nobody", binary: str = LIBEXEC_IMAP, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """Dovecot's ``imap`` (or a copy at ``binary``) serving a preauthenticated session for
    ``user`` on a pipe, titled ``dovecot/imap``; it waits on its stdin until it is signalled
    or the test ends."""
    home = tempfile.mkdtemp(prefix="dvadm-imap-")
    os.chmod(home, 0o777)
    env = {"USER": user, "HOME": home, "MAIL": f"maildir:{home}/Maildir", "PATH": "/usr/bin:/bin"}
    prefix = ["setpriv", "--reuid", user, "--regid", "nogroup", "--clear-groups"] if os.geteuid() == 0 else []
    argv = [*prefix, "bash", "-c", 'exec -a "$0" "$@"', DOVECOT_TITLE, binary, "-O"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, **popen
    )
    try:
        wait_shown(
            proc, lambda: cmdline(proc.pid).startswith(DOVECOT_TITLE.encode()) and exe(proc.pid) == binary
        )
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stdin:
            proc.stdin.close()
        shutil.rmtree(home, ignore_errors=True)
