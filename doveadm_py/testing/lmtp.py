"""LMTP deliveries held open, so anvil lists ``lmtp`` sessions as a real mail flow does.

An LMTP process registers a recipient in anvil once ``RCPT TO`` is accepted (with a
``lmtp_user_concurrency_limit``, which :class:`~doveadm_py.testing.dovecot.DovecotInstance` sets with
``lmtp=True``) and unregisters it when the transaction ends. :func:`held_delivery` stops right there: LHLO,
MAIL FROM, RCPT TO, then it waits, and the session stays in anvil (no client IP: Dovecot registers
deliveries without one) until the context ends. Dovecot 2.4's anvil never kicks such a session (kick type
``N``); 2.3 lists it under the LMTP process's pid. Every wait here is bounded.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doveadm_py.testing.dovecot import DovecotInstance, DumpEntry

_POLL_SECONDS = 0.02
MAX_REPLY_LINES = 100  # an LMTP reply (LHLO's capabilities) is a few lines


class LmtpError(RuntimeError):
    """The server did not answer as an LMTP server (no greeting, a refusal, nothing in time)."""


class LmtpClient:
    """One LMTP connection; every read is bounded by the deadline given at connect time plus ``timeout``."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def _line(self) -> bytes:
        while b"\n" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise LmtpError(f"no complete reply line in time (got {self.buffer!r})")
            self.sock.settimeout(remaining)
            data = self.sock.recv(4096)
            if not data:
                raise LmtpError(f"the server closed the connection (got {self.buffer!r})")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self, expected: bytes) -> bytes:
        """One reply (its ``NNN-`` continuation lines too); LmtpError unless its code is ``expected``."""
        lines = []
        for _ in range(MAX_REPLY_LINES):
            line = self._line()
            lines.append(line)
            if line[3:4] != b"-":
                break
        else:
            raise LmtpError(f"a reply of more than {MAX_REPLY_LINES} lines: {lines[:3]!r}")
        if not lines[-1].startswith(expected):
            raise LmtpError(f"expected {expected.decode()}, got {b' / '.join(lines)!r}")
        return b"\n".join(lines)

    def command(self, line: str, expected: bytes = b"250") -> bytes:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply(expected)

    def alive(self) -> bool:
        """Whether the transaction is still open: NOOP answered with 250 within the timeout."""
        self.deadline = time.monotonic() + self.timeout
        try:
            self.command("NOOP")
        except (LmtpError, OSError):
            return False
        return True

    def close(self) -> None:
        try:
            self.sock.settimeout(1.0)
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()


@contextmanager
def held_delivery(
    instance: DovecotInstance, recipients: Sequence[str], timeout: float = 10.0
) -> Iterator[LmtpClient]:
    """An LMTP transaction to ``recipients`` (usernames of the instance), held open after RCPT TO."""
    if instance.lmtp_port is None:
        raise LmtpError("the instance has no LMTP listener (start it with lmtp=True)")
    client = LmtpClient(instance.host, instance.lmtp_port, timeout)
    try:
        client.reply(b"220")
        client.command("LHLO dvadm.test")
        client.command("MAIL FROM:<sender@dvadm.test>")
        for user in recipients:
            client.command(f"RCPT TO:<{user}>")
        yield client
    finally:
        client.close()


def lmtp_entries(dump: Sequence[DumpEntry]) -> list[DumpEntry]:
    return [entry for entry in dump if entry.ident.startswith("lmtp/")]


def wait_lmtp_registered(instance: DovecotInstance, count: int, timeout: float = 10.0) -> list[DumpEntry]:
    """Poll anvil until it lists exactly ``count`` lmtp sessions; returns those entries (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = lmtp_entries(instance.connect_dump())
        if sum(entry.refcount for entry in entries) == count:
            return entries
        if time.monotonic() >= deadline:
            raise TimeoutError(f"anvil did not list {count} lmtp session(s) within {timeout} s: {entries!r}")
        time.sleep(_POLL_SECONDS)
