"""The audit trail: one syslog line per action on users (every kick, and every refused or
failed one), so that "who kicked me?" has an answer.

Lines go to the local syslog socket (``/dev/log``: the journal on systemd machines,
rsyslog elsewhere), facility ``authpriv``, ident ``dvadm``, in the form glibc's syslog(3)
sends. The stdlib ``syslog`` module cannot be pointed at another socket, and logging's
SysLogHandler prints tracebacks when the socket is missing, so this is the few lines it
takes. Logging never fails or delays the action: without a log socket, or with a full
one, the line is lost, not the kick.

``DVADM_SYSLOG_SOCKET`` names another socket (a testing hook).

Other front ends (kicks on remote servers) call :func:`log_action` with their server.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Sequence

SOCKET_ENV = "DVADM_SYSLOG_SOCKET"
DEFAULT_SOCKET = "/dev/log"
IDENT = "dvadm"
LOG_AUTHPRIV = 10 << 3
LOG_NOTICE = 5
MAX_MESSAGE = 4000  # bytes: one datagram, well under every syslog daemon's limit
_UNSET_LOGINUID = 4294967295


def _user(uid: int) -> str:
    import pwd

    try:
        return f"{uid}({pwd.getpwuid(uid).pw_name})"
    except (KeyError, OverflowError):
        return str(uid)


def actor() -> str:
    """Who runs dvadm: the uid, and the login uid (who logged in, also through sudo or su)."""
    who = f"uid={_user(os.getuid())}"
    try:
        with open("/proc/self/loginuid", "rb") as f:
            login = int(f.read(32).strip())
    except (OSError, ValueError):
        return who
    if login != _UNSET_LOGINUID:
        who += f" login={_user(login)}"
    return who


def escape(text: str) -> str:
    """Control characters (a username may hold a newline) as ``\\xNN``; undecodable bytes too."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(
        c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}" for c in text
    )


def log_action(command: str, args: Sequence[str], server: str, result: str) -> None:
    """``<command> by <actor>: <args> on <server>: <result>``, one line, never raising."""
    import shlex

    shown = shlex.join(escape(a) for a in args) if args else "(no arguments)"
    send(f"{command} by {actor()}: {shown} on {escape(server)}: {escape(result)}")


def log_kick(masks: Sequence[str], options: Sequence[str], server: str, result: str) -> None:
    log_action("kick", [*options, *masks], server, result)


def send(message: str, path: str | None = None) -> bool:
    """Send one syslog line; False if it could not be delivered (never raises, never blocks)."""
    path = path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    stamp = time.strftime("%b %e %H:%M:%S")
    head = f"<{LOG_AUTHPRIV | LOG_NOTICE}>{stamp} {IDENT}[{os.getpid()}]: ".encode()
    body = message.encode("utf-8", "backslashreplace")
    if len(body) > MAX_MESSAGE:
        body = body[: MAX_MESSAGE - 3].decode("utf-8", "ignore").encode() + b"..."
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        try:
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.settimeout(0 if kind == socket.SOCK_DGRAM else 0.2)
                sock.connect(path)
                sock.sendall(head + body + (b"\0" if kind == socket.SOCK_STREAM else b""))
                return True
        except OSError as err:
            if kind == socket.SOCK_DGRAM and err.errno == errno.EPROTOTYPE:  # a stream socket
                continue
            return False
    return False
