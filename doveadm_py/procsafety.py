"""Signal a Dovecot process named by anvil, and nothing else.

Dovecot 2.3's kick SIGTERMs whatever pid anvil reports: ``kill(0)`` would hit doveadm's
own process group, and a stale entry or a reused pid hits an unrelated process. Here a
pid is signalled only if it is > 1, is not dvadm, its parent or its process group, and
is a Dovecot process right before the signal: its command line starts with ``dovecot/``
(Dovecot's process titles) or its executable lies in a Dovecot libexec directory. The
process is pinned with a pidfd between the check and the signal, so it cannot be
replaced by a reused pid in between.
"""

from __future__ import annotations

import os
import signal
from enum import Enum

DOVECOT_LIBEXEC_DIRS = ("/usr/lib/dovecot/", "/usr/libexec/dovecot/", "/usr/local/libexec/dovecot/")


class Outcome(Enum):
    SIGNALLED = "signalled"
    GONE = "gone"  # no such process: counts as kicked, as doveadm counts ESRCH
    REFUSED = "refused"  # failed a safety check: not signalled, not counted
    FAILED = "failed"  # kill failed for another reason (e.g. EPERM)


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


def dovecot_process_problem(pid: int) -> str | None:
    """None if ``/proc`` shows a Dovecot process at ``pid``; else why it does not."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    except OSError as err:
        return f"cannot read /proc/{pid}/cmdline: {err.strerror}"
    if cmdline.startswith(b"dovecot/") or cmdline.startswith(b"dovecot "):
        return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    if exe.startswith(DOVECOT_LIBEXEC_DIRS):
        return None
    name = cmdline.split(b"\0", 1)[0].decode(errors="replace") or "?"
    return f"it is not a Dovecot process ({name})"


def terminate(pid: int) -> tuple[Outcome, str]:
    """SIGTERM a Dovecot process after the safety checks; returns the outcome and a reason."""
    reason = refusal_reason(pid)
    if reason:
        return Outcome.REFUSED, reason
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return Outcome.GONE, "no such process"
    except OSError as err:
        return Outcome.FAILED, err.strerror or str(err)
    try:
        try:
            problem = dovecot_process_problem(pid)
        except ProcessLookupError:
            return Outcome.GONE, "no such process"
        if problem:
            return Outcome.REFUSED, problem
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    except ProcessLookupError:
        return Outcome.GONE, "no such process"
    except OSError as err:
        return Outcome.FAILED, err.strerror or str(err)
    finally:
        os.close(pidfd)
    return Outcome.SIGNALLED, ""
