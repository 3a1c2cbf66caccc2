"""Signal the Dovecot mail process anvil names, and nothing else.

Dovecot 2.3's kick SIGTERMs whatever pid anvil reports: ``kill(0)`` would hit doveadm's
own process group, and a stale entry, a reused pid or a process that only calls itself
``dovecot/imap`` would be hit too. Here a pid is signalled only if it is > 1, is not
dvadm, its parent or its process group, and right before the signal ``/proc`` shows it
is the mail process of the dump line's service:

- its title is ``dovecot/<name>`` (``dovecot-<instance>/<name>`` with ``instance_name``;
  ``verbose_proctitle`` appends `` [...]``), where Dovecot's master makes ``<name>`` the
  basename of the executable it ran, and ``<name>`` is the service's binary (``imap``
  also lives on in ``imap-hibernate``);
- its executable (``/proc/PID/exe``) is that binary in a Dovecot libexec directory,
  both owned by root and writable by no one else, so no other user can plant one.

The process is pinned with a pidfd from before the checks until the signal, so a reused
pid cannot slip in between. A process that exists but cannot be checked (``/proc``
hidden with ``hidepid``, not mounted, unreadable) is not signalled and not counted.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
from collections.abc import Iterable, Sequence
from enum import Enum

#: Where distributions put Dovecot's service binaries (Debian; Red Hat and source builds).
DEFAULT_LIBEXEC_DIRS = ("/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot")
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
#: The 2.3 anvil ident's service -> the binaries whose processes hold such sessions (a
#: hibernated IMAP session lives on in imap-hibernate; Pigeonhole's managesieve says "sieve").
#: Every other service is refused: anvil, auth, log, config and stats are Dovecot's own.
MAIL_SERVICES = {
    "imap": ("imap", "imap-hibernate"),
    "pop3": ("pop3",),
    "submission": ("submission",),
    "lmtp": ("lmtp",),
    "sieve": ("managesieve",),
}
_TITLE = re.compile(rb"dovecot[^/\s]*/([^/\s]+)(?: .*)?", re.DOTALL)
_DELETED = " (deleted)"  # readlink of an executable replaced since (a package upgrade)


class Outcome(Enum):
    SIGNALLED = "signalled"
    GONE = "gone"  # no such process: counts as kicked, as doveadm counts ESRCH
    REFUSED = "refused"  # failed a safety check: not signalled, not counted
    UNVERIFIED = "unverified"  # exists, but /proc cannot show what it is: not signalled, not counted
    FAILED = "failed"  # kill failed for another reason (e.g. EPERM)


class _Unverifiable(Exception):
    """The process exists but ``/proc`` cannot tell what it is."""


def refusal_reason(pid: int) -> str | None:
    """Why ``pid`` must never be signalled by a kick, or None when it is only a question of /proc."""
    if pid <= 1:
        return f"pid {pid} is not a single process"
    if pid == os.getpid():
        return "it is dvadm itself"
    if pid == os.getppid():
        return "it is dvadm's parent"
    if pid == os.getpgrp():
        return "it is dvadm's process group leader"
    return None


def _trusted_dir(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022


def _libexec_of(binary: str) -> list[str]:
    """The libexec candidates of the installation whose ``dovecot`` binary is ``binary``."""
    binary = binary.removesuffix(_DELETED)
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(binary)))
    return [os.path.join(prefix, "lib", "dovecot"), os.path.join(prefix, "libexec", "dovecot")]


def _master_binary(anvil_path: str | None) -> str | None:
    """The running master's executable, from ``master.pid`` next to the anvil socket."""
    if not anvil_path or "/" not in anvil_path:
        return None
    try:
        with open(os.path.join(os.path.dirname(anvil_path), "master.pid"), "rb") as f:
            pid = int(f.read(32).strip() or b"0")
        return os.readlink(f"/proc/{pid}/exe") if pid > 1 else None
    except (OSError, ValueError):
        return None


def libexec_dirs(anvil_path: str | None = None) -> tuple[str, ...]:
    """Dovecot's libexec directories here: the running master's (found from ``master.pid`` in
    the anvil socket's directory), the ``dovecot`` binary's on PATH, the usual ones; only
    those owned by root and writable by no one else."""
    import shutil

    candidates: list[str] = []
    master = _master_binary(anvil_path)
    if master:
        candidates += _libexec_of(master)
    found = shutil.which("dovecot", path=os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS]))
    if found:
        candidates += _libexec_of(found)
    candidates += [os.path.realpath(d) for d in DEFAULT_LIBEXEC_DIRS]
    return tuple(d for d in dict.fromkeys(candidates) if _trusted_dir(d))


def _proc_read(pid: int, name: str) -> bytes:
    """``/proc/PID/name``; ProcessLookupError if there is no such process, _Unverifiable if
    /proc hides one that exists (the caller holds its pidfd to tell the two apart)."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read(65536)
    except FileNotFoundError:
        raise _Unverifiable(f"/proc/{pid} does not show it") from None
    except ProcessLookupError:
        raise ProcessLookupError(pid) from None
    except OSError as err:
        raise _Unverifiable(f"cannot read /proc/{pid}/{name}: {err.strerror}") from None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read(4096).rsplit(b")", 1)[-1].split()[:1] == [b"Z"]
    except OSError:
        return False


def thread_owner(tid: int) -> int | None:
    """The process whose thread ``tid`` is, if it is a thread and not a process itself."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            status = f.read(8192)
    except OSError:
        return None
    match = re.search(rb"^Tgid:\s*(\d+)$", status, re.MULTILINE)
    if match and int(match.group(1)) != tid:
        return int(match.group(1))
    return None


def _shown(text: str) -> str:
    """A short, escaped excerpt of a name anvil sent."""
    return repr(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")[:40])


def mail_process_problem(pid: int, services: Iterable[str], libexec: Sequence[str]) -> str | None:
    """None if ``/proc`` shows the mail process of ``services`` at ``pid``; else why not.

    Raises ProcessLookupError when /proc says it is gone and _Unverifiable when /proc
    cannot show it."""
    names = sorted(set(services))
    if len(names) != 1:
        listed = ", ".join(_shown(n) for n in names[:5])
        return f"anvil lists it for several services ({listed}), which no Dovecot process is"
    service = names[0]
    allowed = MAIL_SERVICES.get(service)
    if allowed is None:
        return (
            f"anvil lists it for service {_shown(service)}, not a mail service ({', '.join(MAIL_SERVICES)})"
        )
    title = _proc_read(pid, "cmdline").split(b"\0", 1)[0]
    if not title and _is_zombie(pid):
        raise ProcessLookupError(pid)  # exited, not yet reaped: gone, as kill() would find
    shown = title.decode("utf-8", "backslashreplace")[:80] or "?"
    match = _TITLE.fullmatch(title)
    if not match or match.group(1).decode("utf-8", "surrogateescape") not in allowed:
        return f"it is not a Dovecot {service} process (its title is {shown!r})"
    name = match.group(1).decode("utf-8", "surrogateescape")
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        exe_stat = os.stat(f"/proc/{pid}/exe")
    except FileNotFoundError:
        raise _Unverifiable(f"/proc/{pid}/exe does not show its executable") from None
    except ProcessLookupError:
        raise ProcessLookupError(pid) from None
    except OSError as err:
        raise _Unverifiable(f"cannot read /proc/{pid}/exe: {err.strerror}") from None
    path = exe.removesuffix(_DELETED)
    directory, base = os.path.split(path)
    if base != name or directory not in libexec:
        where = ", ".join(libexec) or "none found"
        return f"its executable {exe} is not Dovecot's {name} (libexec directories: {where})"
    if exe_stat.st_uid != 0 or exe_stat.st_mode & 0o022:
        return f"its executable {exe} is not owned by root and writable only by root"
    return None


def terminate(
    pid: int, service: str | Iterable[str], libexec: Sequence[str], *, dry_run: bool = False
) -> tuple[Outcome, str]:
    """SIGTERM the ``service`` mail process ``pid`` after the safety checks; the outcome and why.

    ``dry_run`` checks all the same and sends signal 0 instead (SIGNALLED: it would be)."""
    services = (service,) if isinstance(service, str) else tuple(service)
    reason = refusal_reason(pid)
    if reason:
        return Outcome.REFUSED, reason
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, FileNotFoundError) as err:
        owner = thread_owner(pid)  # a thread id: ENOENT
        if owner is not None:
            return Outcome.REFUSED, f"it is a thread of process {owner}, not a process"
        if isinstance(err, ProcessLookupError):
            return Outcome.GONE, "no such process"
        return Outcome.FAILED, err.strerror or str(err)
    except OSError as err:
        return Outcome.FAILED, err.strerror or str(err)
    try:
        try:
            problem = mail_process_problem(pid, services, libexec)
        except _Unverifiable as why:
            with contextlib.suppress(PermissionError):  # EPERM: it exists, another user's
                signal.pidfd_send_signal(pidfd, 0)  # ProcessLookupError if it is gone after all
            return Outcome.UNVERIFIED, f"cannot verify that it is a Dovecot process: {why}"
        if problem:
            return Outcome.REFUSED, problem
        signal.pidfd_send_signal(pidfd, 0 if dry_run else signal.SIGTERM)
    except ProcessLookupError:
        return Outcome.GONE, "no such process"
    except OSError as err:
        return Outcome.FAILED, err.strerror or str(err)
    finally:
        os.close(pidfd)
    return Outcome.SIGNALLED, ""
