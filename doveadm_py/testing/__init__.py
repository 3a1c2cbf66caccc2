"""Test support for dvadm and its plugins: throwaway real Dovecot servers (2.3, 2.4) and idle IMAP sessions.

- :mod:`doveadm_py.testing.dovecot`: :class:`DovecotInstance`, the reference server (and real doveadm).
- :mod:`doveadm_py.testing.servers`: :class:`DovecotServer`, the servers an instance can run (host 2.3,
  2.4 in Debian chroots), by name (:data:`ALL_SERVERS`).
- :mod:`doveadm_py.testing.imap`: :class:`ImapSession`, :func:`open_sessions`, :func:`failed_login`.
- :mod:`doveadm_py.testing.cli`: :func:`run` (dvadm in this process) and :func:`run_dvadm` (the
  installed console script).
- :mod:`doveadm_py.testing.fixtures`: the pytest plugin (the only module that imports pytest).
- :mod:`doveadm_py.testing.simulator`: :class:`AnvilSimulator`, an anvil of either protocol for what
  a real server cannot do (faults, hostile replies, a million sessions).
- :mod:`doveadm_py.testing.demo`: ``make demo``.

Nothing here is imported by the dvadm CLI itself.
"""

from __future__ import annotations

from doveadm_py.testing.cli import RunResult, run, run_dvadm
from doveadm_py.testing.dovecot import (
    DEFAULT_PASSWORD,
    DEFAULT_USER_FIELDS,
    DEFAULT_USERS,
    REFERENCE_SESSIONS,
    DovecotError,
    DovecotInstance,
    DumpEntry,
    anvil_exchange,
    anvil_exchange_v2,
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
from doveadm_py.testing.servers import ALL_SERVERS, DovecotServer, get_server

__all__ = [
    "ALL_SERVERS",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERS",
    "DEFAULT_USER_FIELDS",
    "REFERENCE_SESSIONS",
    "DovecotError",
    "DovecotInstance",
    "DovecotServer",
    "DumpEntry",
    "ImapError",
    "ImapSession",
    "LoginError",
    "RunResult",
    "SessionGroup",
    "anvil_exchange",
    "anvil_exchange_v2",
    "dovecot_binary",
    "dovecot_version",
    "failed_login",
    "get_server",
    "open_sessions",
    "run",
    "run_dvadm",
    "wait_registered",
]
