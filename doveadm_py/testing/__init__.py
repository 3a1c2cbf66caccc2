"""Test support for dvadm and its plugins: a throwaway real Dovecot 2.3 and idle IMAP sessions.

- :mod:`doveadm_py.testing.dovecot`: :class:`DovecotInstance`, the reference server (and real doveadm).
- :mod:`doveadm_py.testing.imap`: :class:`ImapSession`, :func:`open_sessions`, :func:`failed_login`.
- :mod:`doveadm_py.testing.fixtures`: the pytest plugin (the only module that imports pytest).

Nothing here is imported by the dvadm CLI itself.
"""

from __future__ import annotations

from doveadm_py.testing.dovecot import (
    DEFAULT_PASSWORD,
    DEFAULT_USERS,
    REFERENCE_SESSIONS,
    DovecotError,
    DovecotInstance,
    DumpEntry,
    anvil_exchange,
    dovecot_binary,
    dovecot_version,
)
from doveadm_py.testing.imap import (
    ImapError,
    ImapSession,
    LoginError,
    SessionGroup,
    failed_login,
    open_sessions,
    wait_registered,
)

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USERS",
    "REFERENCE_SESSIONS",
    "DovecotError",
    "DovecotInstance",
    "DumpEntry",
    "ImapError",
    "ImapSession",
    "LoginError",
    "SessionGroup",
    "anvil_exchange",
    "dovecot_binary",
    "dovecot_version",
    "failed_login",
    "open_sessions",
    "wait_registered",
]
