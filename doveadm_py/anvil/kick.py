"""Kicks through anvil (Dovecot 2.4, protocol 2): the request lines and the pipelined exchange.

All kicks of a run go on one connection with at most ``window`` requests in flight, so
neither side's buffers fill up; every reply must be a short number, and anything more is a
protocol error that is reported and not counted.
"""

from __future__ import annotations

import selectors
import socket
import time
from typing import NamedTuple

from doveadm_py.anvil.connection import (
    MAX_SHORT_LINE,
    READ_SIZE,
    V2_HANDSHAKE,
    Connection,
    is_uint,
    show,
)
from doveadm_py.anvil.escape import join_tabescaped
from doveadm_py.anvil.records import ENCODING, ERRORS, AnvilError, excerpt
from doveadm_py.errors import EX_USAGE

MAX_LINE = 1024  # anvil's input buffer; a longer line makes it disconnect


class RequestTooLongError(AnvilError):
    """A request line would exceed anvil's 1024-byte limit; nothing was sent (bad input, exit 64)."""

    exit_code = EX_USAGE


class KickRequest(NamedTuple):
    """One kick for :meth:`AnvilClient.kick_many`; build it with :meth:`user` or :meth:`alt`.

    ``kind`` 'user': ``KICK-USER <name> [<value> = conn GUID]``; 'alt':
    ``KICK-ALT-USER <name = field> <value> [<except_ip>]``.
    """

    kind: str
    name: str
    value: str | None = None
    except_ip: str | None = None

    @classmethod
    def user(cls, username: str, guid: str | None = None) -> KickRequest:
        return cls("user", username, guid)

    @classmethod
    def alt(cls, field: str, value: str, except_ip: str | None = None) -> KickRequest:
        return cls("alt", field, value, except_ip)


class KickResult(NamedTuple):
    """Sum of the kick replies, and doveadm's log lines for replies that were not counts.

    The sum is ``connections`` (as in :class:`doveadm_py.transport.base.KickOutcome`): a field
    named ``count`` would hide the tuple's ``count()`` method.
    """

    connections: int
    errors: list[str]


def kick_line(request: KickRequest, label: str) -> bytes:
    """The request line (no LF) for ``request``; bad values raise ValueError, an overlong line
    :class:`RequestTooLongError` (``label`` names the socket)."""
    kind, name, value, except_ip = request

    def enc(s: str) -> bytes:
        return s.encode(ENCODING, ERRORS)

    if kind == "user":
        if except_ip is not None:
            raise ValueError("KICK-USER takes no except_ip")
        fields = [b"KICK-USER", enc(name)]
        if value is not None:
            if len(value) != 32 or not all(c in "0123456789abcdefABCDEF" for c in value):
                raise ValueError(f"invalid connection GUID {value!r}: need 32 hex digits")
            if value.strip("0"):  # doveadm leaves an all-zero GUID out
                fields.append(enc(value.lower()))
    elif kind == "alt":
        if value is None:
            raise ValueError("KICK-ALT-USER needs a value")
        fields = [b"KICK-ALT-USER", enc(name), enc(value)]
        if except_ip is not None:
            fields.append(enc(except_ip))
    else:
        raise ValueError(f"unknown kick kind {kind!r}")
    line = join_tabescaped(fields)
    if len(line) + 1 > MAX_LINE:
        raise RequestTooLongError(
            f"{label}: request too long for anvil ({len(line) + 1} bytes, the limit is "
            f"{MAX_LINE}): {show(line[:80])}…"
        )
    return line


def pipeline(
    conn: Connection, lines: list[bytes], *, kick_timeout: float, window: int, drain_wait: float
) -> KickResult:
    """Send the handshake and ``lines`` on a greeted connection, one reply line per kick.

    Replies must be short numbers: a longer partial line ends the exchange. Lines beyond one
    per kick are a protocol error, reported and not counted; after the last reply the client
    half-closes and reads until anvil closes (briefly) so that a trailing extra shows too.
    """
    debug = conn.debug
    sock = conn.sock
    total = len(lines)
    window = max(1, window)
    out = bytearray(V2_HANDSHAKE)
    if debug is not None:
        debug("anvil> " + show(V2_HANDSHAKE.split(b"\n")[0]))
        debug("anvil> ")
    buf = conn.buf
    conn.buf = b""
    sent = answered = count = 0
    errors: list[str] = []
    failure = ""
    line_end = time.monotonic() + kick_timeout
    sock.setblocking(False)
    registered = selectors.EVENT_READ
    with selectors.DefaultSelector() as sel:
        sel.register(sock, registered)
        while answered < total:
            while sent < total and sent - answered < window:
                out += lines[sent]
                out += b"\n"
                if debug is not None:
                    debug("anvil> " + show(lines[sent]))
                sent += 1
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
            if wanted != registered:
                sel.modify(sock, wanted)
                registered = wanted
            remaining = min(line_end, conn.end) - time.monotonic()
            if remaining <= 0:
                if conn.end <= line_end:
                    failure = f"Anvil queries not answered within the {conn.span:g} s deadline"
                else:
                    failure = f"Anvil queries timed out after {kick_timeout:.3f} secs"
                    failure += " - aborting queries"
                break
            events = sel.select(remaining)
            if not events:
                continue
            mask = events[0][1]
            try:
                if mask & selectors.EVENT_WRITE:
                    n = sock.send(out)
                    del out[:n]
                data = sock.recv(READ_SIZE) if mask & selectors.EVENT_READ else None
            except BlockingIOError:
                continue
            except OSError as e:
                failure = f"read({conn.label}) failed: {e.strerror or e}"
                break
            if data is None:
                continue
            if not data:
                failure = f"read({conn.label}) failed: Unexpected EOF"
                break
            buf += data
            while answered < total:
                i = buf.find(b"\n")
                if not 0 <= i <= MAX_SHORT_LINE:
                    if i > MAX_SHORT_LINE or len(buf) > MAX_SHORT_LINE:
                        line = buf if i < 0 else buf[:i]
                        failure = f"anvil sent a kick reply longer than {MAX_SHORT_LINE} bytes: "
                        failure += excerpt(line)
                    break
                line = buf[:i]
                buf = buf[i + 1 :]
                if debug is not None:
                    debug("anvil< " + show(line))
                answered += 1
                if is_uint(line):
                    count += int(line)
                else:
                    errors.append(f"Unexpected reply from anvil: {excerpt(line)}")
                line_end = time.monotonic() + kick_timeout
            if failure:
                break
    if failure:
        errors.append(f"Failed to send kick to anvil: {failure} ({total - answered} of {total} unanswered)")
    else:
        extra = _trailing_data(conn, buf, drain_wait)
        if extra:
            if debug is not None:
                debug("anvil< " + show(extra))
            errors.append(
                f"anvil sent more than the {total} reply line(s) requested (protocol error, "
                f"not counted): {excerpt(extra)}"
            )
    return KickResult(count, errors)


def _trailing_data(conn: Connection, buf: bytes, drain_wait: float) -> bytes:
    """What anvil sends after the last reply: half-close, then read until it closes (as it
    does at once), for at most ``drain_wait`` s and ``MAX_SHORT_LINE`` bytes."""
    sock = conn.sock
    end = min(time.monotonic() + drain_wait, conn.end)
    try:
        sock.shutdown(socket.SHUT_WR)
        while len(buf) <= MAX_SHORT_LINE and (wait := end - time.monotonic()) > 0:
            sock.settimeout(wait)
            data = sock.recv(MAX_SHORT_LINE)
            if not data:
                break
            buf += data
    except OSError:  # timed out, or reset: nothing more to learn
        pass
    return buf
