"""Client for Dovecot's anvil admin socket, speaking both protocol generations.

Dovecot 2.3 speaks anvil protocol 1 and never talks first; 2.4 speaks protocol 2
and greets every connection with ``VERSION\\tanvil-server\\t2\\t<minor>``. Each
server rejects (and logs) the other's VERSION line, so the client listens before
it speaks, and remembers per socket what it found
(:mod:`doveadm_py.anvil.generations`): a socket known as 2.3 is spoken to at once,
one known as 2.4 may take the read timeout to greet, and an unknown one is given
``greeting_grace`` (1 s) to greet before the client speaks protocol 1 (switching to
protocol 2 on a fresh connection should the first line back still be a 2.4
greeting). A 2.3 server never sees a wrong VERSION line, and only the first contact
with a 2.3 socket waits.

Connections: the connection opened for detection serves the first request; every
later request opens its own connection (as doveadm does: dump on one connection,
kicks on another), so a half-read dump never blocks a kick. Requests are sent with
exactly doveadm's bytes (reference section 10).

Anvil itself has no timeouts, so all of them are ours: ``connect_timeout`` for
connecting, ``timeout`` for each line of a reply (a line must arrive in full within
it, which also catches a server that drips bytes), ``kick_timeout`` for each kick
reply, and ``deadline`` for a whole exchange (a dump, or all kicks), which catches a
server that drips a line's bytes just fast enough. Lines are bounded in length (a
greeting or kick reply to a few hundred bytes), and messages quote server data only
as a short escaped :func:`~doveadm_py.anvil.records.excerpt`. Every failure is an
:class:`AnvilError` naming the socket.
"""

from __future__ import annotations

import selectors
import socket
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from doveadm_py.anvil.escape import join_tabescaped, split_tabescaped
from doveadm_py.anvil.generations import Generations, Identity, socket_identity
from doveadm_py.anvil.records import (
    ENCODING,
    ERRORS,
    AnvilError,
    AnvilProtocolError,
    PenaltyRecord,
    SessionV1,
    SessionV2,
    excerpt,
    parse_penalty_line,
    parse_v1_line,
    parse_v2_line,
)
from doveadm_py.errors import EX_USAGE

if TYPE_CHECKING:
    from doveadm_py.anvil.bulk import Piece

V1_HANDSHAKE = b"VERSION\tanvil\t1\t0\n"
# VERSION line, then the empty handshake line: an admin client with no service/pid.
V2_HANDSHAKE = b"VERSION\tanvil-client\t2\t0\n\n"
MAX_LINE = 1024  # anvil's input buffer; a longer line makes it disconnect
READ_SIZE = 256 * 1024
MAX_REPLY_LINE = 1024 * 1024  # far above any real anvil line; bounds memory against a broken server
MAX_SHORT_LINE = 256  # a VERSION line or a kick reply (a number): a few bytes
_UINT_MAX = 2**32 - 1


#: After a missing or refused anvil socket (doveadm's own message comes first).
NO_ANVIL_HINT = "is Dovecot running? For another instance or config use -i INSTANCE or -c FILE (or -a SOCKET)"


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
    """Sum of the kick replies, and doveadm's log lines for replies that were not counts."""

    count: int
    errors: list[str]


def _show(line: bytes) -> str:
    """Unambiguous one-line rendering for debug output (tabs as \\t, odd bytes as \\xNN)."""
    return repr(line)[2:-1]


def _is_uint(text: bytes) -> bool:
    """``str_to_uint``: ASCII digits within an unsigned int (length first: int() refuses huge strings)."""
    return text.isdigit() and len(text) <= 10 and int(text) <= _UINT_MAX


def _split_hostport(target: str) -> tuple[str, int]:
    """``host:port``, ``IPv4:port`` or ``[IPv6]:port`` like ``net_str2hostport`` (no default port)."""
    if target.startswith("["):
        host, sep, rest = target[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise AnvilError(f"Invalid anvil address {target!r}: expected [IPv6]:port", EX_USAGE)
        port_s = rest[1:]
    elif target.count(":") == 1:
        host, _, port_s = target.partition(":")
    else:
        host, port_s = target, ""
    if not port_s:
        shown = f"[{target}]" if ":" in target and not target.startswith("[") else target
        raise AnvilError(
            f"Port not known for anvil address {target!r}: use {shown}:<port>, "
            "or a path containing '/' for a UNIX socket",
            EX_USAGE,
        )
    valid = port_s.isdigit() and port_s.isascii() and len(port_s) <= 5 and 0 < int(port_s) < 65536
    if not valid or not host:
        raise AnvilError(f"Invalid anvil address {target!r}", EX_USAGE)
    return host, int(port_s)


class _Conn:
    """One socket with a read buffer; every wait is bounded and every failure an AnvilError.

    Two bounds apply to every read: ``timeout`` for each line (so a server dripping bytes
    fails), and the exchange's deadline (:meth:`begin`), so one dripping a byte per
    second fails too.

    A connection dropped unclosed (a dump or client nobody closed) closes its socket as it
    goes, even from a reference cycle, where the socket's own finalizer could run first.
    """

    __slots__ = ("__weakref__", "_finalizer", "buf", "debug", "end", "greeted", "label", "sock", "span")

    def __init__(self, sock: socket.socket, label: str, debug: Callable[[str], None] | None) -> None:
        self.sock = sock
        # weakref callbacks run before any finalizer of a garbage cycle, so before the socket's.
        self._finalizer = weakref.finalize(self, sock.close)
        self.label = label
        self.debug = debug
        self.buf = b""
        self.greeted = False  # protocol 2 VERSION line already read
        self.span = 0.0  # the exchange's deadline in seconds (0: none yet)
        self.end = float("inf")  # ... as a time.monotonic() value

    def begin(self, deadline: float) -> None:
        """Start an exchange that must be over within ``deadline`` seconds (once per connection)."""
        if not self.span:
            self.span = deadline
            self.end = time.monotonic() + deadline

    def close(self) -> None:
        self._finalizer()

    def send(self, data: bytes, timeout: float) -> None:
        if self.debug is not None:
            for line in data.split(b"\n")[:-1]:
                self.debug("anvil> " + _show(line))
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)
        except TimeoutError:
            raise AnvilError(f"write({self.label}) failed: timed out after {timeout:g} s") from None
        except OSError as e:
            raise AnvilError(f"write({self.label}) failed: {e.strerror or e}") from None

    def poll(self, grace: float) -> bool:
        """Wait up to ``grace`` s for unsolicited data (a greeting); True if some arrived."""
        try:
            self.sock.settimeout(grace)
            data = self.sock.recv(MAX_SHORT_LINE)
        except (TimeoutError, BlockingIOError):
            return False
        except OSError as e:
            raise AnvilError(f"read({self.label}) failed: {e.strerror or e}") from None
        if not data:
            raise AnvilProtocolError(
                f"read({self.label}) failed: Unexpected EOF (anvil closed the connection at once)"
            )
        self.buf += data
        return True

    def _recv(self, line_end: float, timeout: float, what: str) -> bytes:
        """One read of up to READ_SIZE bytes before ``line_end`` and the exchange's end."""
        wait = min(line_end, self.end) - time.monotonic()
        try:
            if wait <= 0:
                raise TimeoutError
            self.sock.settimeout(wait)
            return self.sock.recv(READ_SIZE)
        except TimeoutError:
            raise self._late_error(line_end, timeout, what) from None
        except OSError as e:
            raise AnvilError(f"read({self.label}) failed: {e.strerror or e}") from None

    def _late_error(self, line_end: float, timeout: float, what: str) -> AnvilError:
        if self.end <= line_end:
            return self.deadline_error(what)
        return self.timeout_error(timeout, what)

    def timeout_error(self, timeout: float, what: str) -> AnvilError:
        return AnvilError(f"read({self.label}) failed: timed out after {timeout:g} s waiting for {what}")

    def deadline_error(self, what: str) -> AnvilError:
        return AnvilError(
            f"read({self.label}) failed: {what} did not end within the {self.span:g} s deadline"
        )

    def _eof_error(self, detail: str = "") -> AnvilProtocolError:
        return AnvilProtocolError(f"read({self.label}) failed: Unexpected EOF{detail}")

    def read_line(self, timeout: float, what: str, *, peek: bool = False, limit: int = 0) -> bytes | None:
        """The next line without its LF; None at EOF on a line boundary.

        ``peek`` leaves the line in the buffer (and to the debug log of its next reader);
        a line longer than ``limit`` bytes (default ``MAX_REPLY_LINE``) is an error.
        """
        limit = limit or MAX_REPLY_LINE
        line_end = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\n")
            if 0 <= i <= limit:
                line = self.buf[:i]
                if peek:
                    return line
                self.buf = self.buf[i + 1 :]
                if self.debug is not None:
                    self.debug("anvil< " + _show(line))
                return line
            self._check_length(self.buf if i < 0 else self.buf[:i], limit, what)
            data = self._recv(line_end, timeout, what)
            if not data:
                if self.buf:
                    raise self._eof_error(" in the middle of a line")
                return None
            self.buf += data

    def _check_length(self, partial_line: bytes, limit: int, what: str) -> None:
        if len(partial_line) > limit:
            raise AnvilProtocolError(
                f"{self.label}: anvil sent a line longer than {limit} bytes in {what}: "
                + excerpt(partial_line)
            )

    def iter_blocks(self, timeout: float, what: str) -> Iterator[list[bytes]]:
        """Yield the reply's lines in chunk-sized lists, up to the empty terminator line.

        Returns normally after the terminator (consumed, not yielded) with True as the
        generator's value, or at EOF on a line boundary with False; EOF inside a line
        raises. Each line must complete within ``timeout`` s of the previous one, and the
        whole reply within the exchange's deadline.
        """
        debug = self.debug
        buf = self.buf
        self.buf = b""
        line_end = time.monotonic() + timeout
        while True:
            if b"\n" in buf:
                lines = buf.split(b"\n")
                buf = lines.pop()
                try:
                    end = lines.index(b"")
                except ValueError:
                    end = -1
                if end >= 0:  # keep what follows the terminator, should the caller reuse us
                    self.buf = b"".join([line + b"\n" for line in lines[end + 1 :]]) + buf
                    del lines[end:]
                if debug is not None:
                    for line in lines:
                        debug("anvil< " + _show(line))
                    if end >= 0:
                        debug("anvil< ")
                if lines:
                    yield lines
                if end >= 0:
                    return True
                line_end = time.monotonic() + timeout
            data = self._recv(line_end, timeout, what)
            if not data:
                if buf:
                    raise self._eof_error(" in the middle of a line")
                return False
            if buf:
                buf += data
                if len(buf) > MAX_REPLY_LINE and b"\n" not in buf:
                    self._check_length(buf, MAX_REPLY_LINE, what)
            else:
                buf = data


class ConnectDump:
    """A streaming CONNECT-DUMP reply: iterate it for SessionV1/SessionV2 records.

    ``protocol`` says which; ``alt_fields`` is the 2.4 header (empty for 2.3). The
    socket is read in large chunks as you iterate and closed at the end, so memory
    stays bounded however many sessions anvil has. Use either the records,
    :meth:`pieces` (parsed in bulk) or :meth:`iter_lines` / :meth:`iter_blocks` (raw
    lines), only one of them.

    Malformed lines follow doveadm: 2.3 skips them (counted in ``invalid_lines`` and
    passed to ``on_invalid``, which doveadm logs as "Invalid input: <line>"); 2.4
    raises :class:`AnvilProtocolError` after the rows before it were yielded. EOF
    before the terminator raises in 2.4; in 2.3 it ends the dump like doveadm 2.3
    unless it cuts a line in half, which raises. ``complete`` tells whether the
    terminator was seen.
    """

    def __init__(
        self,
        conn: _Conn,
        protocol: int,
        *,
        timeout: float,
        on_invalid: Callable[[bytes], None] | None = None,
    ) -> None:
        self.protocol = protocol
        self.alt_fields: tuple[str, ...] = ()
        self.invalid_lines = 0
        self.complete = False
        self._conn: _Conn | None = conn
        self._timeout = timeout
        self._on_invalid = on_invalid
        self._records: Iterator[SessionV1] | Iterator[SessionV2] | None = None
        self._started = False
        if protocol == 2:
            try:
                header = conn.read_line(timeout, "the CONNECT-DUMP header line")
            except BaseException:
                self.close()
                raise
            if header is None:
                self.close()
                raise conn._eof_error()
            self.alt_fields = tuple(f.decode(ENCODING, ERRORS) for f in split_tabescaped(header))

    @property
    def path(self) -> str:
        return self._conn.label if self._conn is not None else ""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ConnectDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def iter_blocks(self) -> Iterator[list[bytes]]:
        """Raw session lines (no LF, terminator excluded) in lists of one socket read each."""
        if self._started:
            raise RuntimeError("a ConnectDump can be iterated only once")
        self._started = True
        conn = self._conn
        if conn is None:
            return
        try:
            self.complete = yield from conn.iter_blocks(self._timeout, "the CONNECT-DUMP reply")
            if not self.complete and self.protocol == 2:
                raise conn._eof_error()
        finally:
            self.close()

    def iter_lines(self) -> Iterator[bytes]:
        """Raw session lines one by one (no LF, terminator excluded)."""
        for block in self.iter_blocks():
            yield from block

    def pieces(self) -> Iterator[Piece]:
        """The sessions, parsed in bulk: column blocks and lists of records, in dump order.

        Together they are exactly the records that iterating gives, with the same invalid-line
        handling (see :mod:`doveadm_py.anvil.bulk`), at a quarter of the cost on big dumps.
        """
        from doveadm_py.anvil.bulk import BulkParser

        parser = BulkParser(
            self.protocol, n_alt=len(self.alt_fields), on_invalid=self._invalid, label=self.path
        )
        return parser.pieces(self.iter_blocks())

    def __iter__(self) -> Iterator[SessionV1] | Iterator[SessionV2]:
        if self._records is None:
            self._records = self._iter_v2() if self.protocol == 2 else self._iter_v1()
        return self._records

    def __next__(self) -> SessionV1 | SessionV2:
        return next(iter(self))

    def _invalid(self, line: bytes) -> None:
        """A malformed 2.3 line: counted, reported, skipped."""
        self.invalid_lines += 1
        if self._on_invalid is not None:
            self._on_invalid(line)

    def _iter_v1(self) -> Iterator[SessionV1]:
        parse = parse_v1_line
        for block in self.iter_blocks():
            for line in block:
                try:
                    record = parse(line)
                except AnvilProtocolError:
                    self._invalid(line)
                    continue
                yield record

    def _iter_v2(self) -> Iterator[SessionV2]:
        parse = parse_v2_line
        n_alt = len(self.alt_fields)
        label = self.path
        for block in self.iter_blocks():
            for line in block:
                try:
                    record = parse(line, n_alt)
                except AnvilProtocolError as e:
                    raise AnvilProtocolError(f"{label}: {e}") from None
                yield record


class PenaltyDump(Iterator[PenaltyRecord]):
    """The records of a PENALTY-DUMP reply (see :meth:`AnvilClient.penalty_dump`)."""

    def __init__(self, conn: _Conn, records: Iterator[PenaltyRecord]) -> None:
        self._conn: _Conn | None = conn
        self._records = records

    def __next__(self) -> PenaltyRecord:
        return next(self._records)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PenaltyDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AnvilClient:
    """Talks to one anvil socket (``path``: a UNIX socket path, or ``host:port`` for TCP when
    it has no '/'), detecting the protocol once on first use.

    ``debug`` gets one line per line sent (``anvil> …``) and received (``anvil< …``).
    """

    KICK_WINDOW = 100  # kicks in flight on the pipelined connection (anvil runs 100 at once)
    DRAIN_WAIT = 1.0  # after the last kick reply, how long to watch for unrequested lines

    def __init__(
        self,
        path: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        kick_timeout: float = 30.0,
        deadline: float = 60.0,
        debug: Callable[[str], None] | None = None,
        greeting_grace: float = 1.0,
        generations: Generations | None = None,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.kick_timeout = kick_timeout
        self.deadline = deadline
        self.greeting_grace = greeting_grace
        self.generations = generations if generations is not None else Generations.default()
        self._debug = debug
        self._protocol: int | None = None
        self._server_version: tuple[int, int] = (0, 0)
        self._confirmed = False
        self._identity: Identity | None = None  # the socket file's, while it can be trusted
        self._idle: _Conn | None = None  # the detection connection, until a request uses it

    # -- connection and protocol detection ---------------------------------------------------

    def __enter__(self) -> AnvilClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._idle is not None:
            self._idle.close()
            self._idle = None

    @property
    def protocol(self) -> int:
        """1 (Dovecot 2.3) or 2 (2.4); connects on first use.

        2 is certain, and so is 1 for a socket remembered as 2.3. Otherwise 1 means no
        greeting within ``greeting_grace``: it is certain once ``protocol_confirmed``
        (after the first dump); a dump that meets a late 2.4 greeting switches to 2. So
        branch on ``ConnectDump.protocol`` when you dump anyway, or call
        :meth:`confirm_protocol` before choosing a protocol-specific path.
        """
        self.connect()
        assert self._protocol is not None
        return self._protocol

    @property
    def protocol_confirmed(self) -> bool:
        return self._confirmed

    def confirm_protocol(self) -> int:
        """The protocol, made certain: free for 2 or once confirmed, else one PENALTY-DUMP.

        PENALTY-DUMP is read-only, small and answered by both generations, so it
        proves a 2.3 server (or meets a late 2.4 greeting) without waiting on silence.
        """
        self.connect()
        if not self._confirmed:
            for _ in self.penalty_dump():
                pass
        assert self._protocol is not None
        return self._protocol

    @property
    def server_version(self) -> tuple[int, int]:
        """(2, minor) from the 2.4 greeting; (1, 0) for 2.3, which announces no version."""
        self.connect()
        return self._server_version

    def connect(self) -> None:
        """Connect and detect the protocol; idempotent, and called by every request.

        A socket remembered as 2.3 is spoken to at once; one remembered as 2.4 is given
        the read timeout to greet; an unknown one ``greeting_grace`` (see
        :mod:`doveadm_py.anvil.generations`).
        """
        if self._protocol is not None:
            return
        identity = socket_identity(self.path) if "/" in self.path else None
        known = self.generations.lookup(identity)
        conn = self._open()
        try:
            if identity is not None and socket_identity(self.path) != identity:
                identity = known = None  # replaced while connecting: neither trust it nor learn
            self._identity = identity
            if known == 1:
                self._speak_v1(conn, "known to speak protocol 1 (Dovecot 2.3)")
                self._confirmed = True
            else:
                wait = self.timeout if known == 2 else min(self.greeting_grace, self.timeout)
                if conn.poll(wait):
                    self._read_greeting(conn)
                elif known == 2:
                    raise conn.timeout_error(wait, "anvil's VERSION line (known to speak protocol 2)")
                else:
                    self._speak_v1(conn, f"no greeting within {wait:g} s, trying protocol 1")
        except BaseException:
            conn.close()
            raise
        self._idle = conn

    def _speak_v1(self, conn: _Conn, why: str) -> None:
        self._protocol = 1
        self._server_version = (1, 0)
        if self._debug is not None:
            self._debug(f"anvil: {why}")

    def _learn(self, protocol: int) -> None:
        """Remember the socket's generation once an exchange proved it."""
        self.generations.remember(self._identity, protocol)

    def _open(self) -> _Conn:
        path = self.path
        if "/" in path:
            func = "net_connect_unix"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(path)
            except OSError as e:
                sock.close()
                raise self._connect_error(func, e) from None
            except BaseException:
                sock.close()
                raise
        else:
            func = "net_connect"
            host, port = _split_hostport(path)
            try:
                sock = socket.create_connection((host, port), timeout=self.connect_timeout)
            except OSError as e:
                raise self._connect_error(func, e) from None
        if self._debug is not None:
            self._debug(f"anvil: connected to {path}")
        return _Conn(sock, path, self._debug)

    def _connect_error(self, func: str, e: OSError) -> AnvilError:
        if isinstance(e, TimeoutError):
            return AnvilError(f"{func}({self.path}) failed: timed out after {self.connect_timeout:g} s")
        message = f"{func}({self.path}) failed: {e.strerror or e}"
        if isinstance(e, PermissionError):
            message += " (the anvil socket is root-only in Dovecot 2.3, group dovecot in 2.4)"
        if func == "net_connect_unix" and isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
            return AnvilError(message, hint=NO_ANVIL_HINT)
        return AnvilError(message)

    def _read_greeting(self, conn: _Conn) -> None:
        line = conn.read_line(self.timeout, "anvil's VERSION line", limit=MAX_SHORT_LINE)
        if line is None:
            raise conn._eof_error(" (no VERSION line)")
        self._check_greeting(line, conn.label)
        conn.greeted = True

    def _check_greeting(self, line: bytes, label: str) -> None:
        """Accept ``VERSION anvil-server 2 <uint>`` like doveadm; anything else is an error."""
        fields = split_tabescaped(line)
        if not fields or fields[0] != b"VERSION":
            raise AnvilProtocolError(f"{label}: anvil didn't send VERSION line: {excerpt(line)}")
        if (
            len(fields) < 4
            or fields[1] != b"anvil-server"
            or not _is_uint(fields[2])
            or int(fields[2]) != 2
            or not _is_uint(fields[3])
        ):
            raise AnvilProtocolError(f"{label}: Invalid VERSION line: {excerpt(line)}")
        self._protocol = 2
        self._server_version = (2, int(fields[3]))
        self._confirmed = True
        self._learn(2)

    def _take_conn(self) -> _Conn:
        conn, self._idle = self._idle, None
        return conn if conn is not None else self._open()

    def _request(self, payload: bytes, what: str) -> _Conn:
        """Send handshake + ``payload`` on a connection and return it, positioned at the reply."""
        self.connect()
        conn = self._take_conn()
        try:
            conn.begin(self.deadline)
            if self._protocol == 2:
                conn.send(V2_HANDSHAKE + payload, self.timeout)
                if not conn.greeted:
                    self._read_greeting(conn)
                return conn
            conn.send(V1_HANDSHAKE + payload, self.timeout)
            line = conn.read_line(self.timeout, what, peek=True)
            if line is not None and line.startswith(b"VERSION\t"):
                if self._debug is not None:
                    self._debug("anvil< " + _show(line))
                self._check_greeting(line, conn.label)  # raises unless a (late) 2.4 greeting
                if self._debug is not None:
                    self._debug("anvil: late protocol 2 greeting, reconnecting with protocol 2")
                conn.close()
                return self._request(payload, what)
            if line is not None:  # a reply, not a greeting: protocol 1 for certain
                self._confirmed = True
                self._learn(1)
            return conn
        except BaseException:
            conn.close()
            raise

    # -- requests ------------------------------------------------------------------------------

    def connect_dump(self, on_invalid: Callable[[bytes], None] | None = None) -> ConnectDump:
        """Send CONNECT-DUMP and return the streaming reply (header already read for 2.4)."""
        conn = self._request(b"CONNECT-DUMP\n", "the CONNECT-DUMP reply")
        assert self._protocol is not None
        return ConnectDump(conn, self._protocol, timeout=self.timeout, on_invalid=on_invalid)

    def penalty_dump(self) -> PenaltyDump:
        """Send PENALTY-DUMP (both generations) and return an iterator over its records.

        A malformed line raises ``AnvilProtocolError`` ("Read invalid penalty line: …"),
        fatal as in doveadm. EOF before the terminator follows the CONNECT-DUMP rules.
        The socket closes at the end, on ``close()`` (or leaving a ``with`` block), or
        when the iterator is dropped.
        """
        conn = self._request(b"PENALTY-DUMP\n", "the PENALTY-DUMP reply")
        return PenaltyDump(conn, self._iter_penalties(conn, self._protocol == 2))

    def _iter_penalties(self, conn: _Conn, strict_eof: bool) -> Iterator[PenaltyRecord]:
        try:
            complete = yield from self._parse_penalties(conn)
            if not complete and strict_eof:
                raise conn._eof_error()
        finally:
            conn.close()

    def _parse_penalties(self, conn: _Conn) -> Iterator[PenaltyRecord]:
        blocks = conn.iter_blocks(self.timeout, "the PENALTY-DUMP reply")
        while True:
            try:
                block = next(blocks)
            except StopIteration as stop:
                return bool(stop.value)
            for line in block:
                try:
                    record = parse_penalty_line(line)
                except AnvilProtocolError as e:
                    raise AnvilProtocolError(f"{conn.label}: {e}") from None
                yield record

    def kick_user(self, user: str, guid: str | None = None) -> int:
        """KICK-USER (2.4 only): the number anvil reports (signalled processes / sessions)."""
        return self._kick_one(KickRequest.user(user, guid))

    def kick_alt_user(self, field: str, value: str, except_ip: str | None = None) -> int:
        """KICK-ALT-USER (2.4 only): kick sessions whose alt-username ``field`` equals ``value``."""
        return self._kick_one(KickRequest.alt(field, value, except_ip))

    def _kick_one(self, request: KickRequest) -> int:
        result = self.kick_many([request])
        if result.errors:
            raise AnvilError(f"{self.path}: {result.errors[0]}")
        return result.count

    def kick_many(self, requests: Iterable[KickRequest]) -> KickResult:
        """Send all kicks pipelined on one connection and sum the replies.

        Every request line is built (and length-checked) before anything is sent. At
        most ``KICK_WINDOW`` requests are in flight, so neither side's buffers fill up.
        A reply that is not a count becomes "Unexpected reply from anvil: <r>" in
        ``errors``; a reply timeout (``kick_timeout`` without any reply) or a lost
        connection becomes a "Failed to send kick to anvil: …" error and returns what
        was counted so far, as doveadm does. Failing to connect or a bad greeting raises.
        """
        lines = [self._kick_line(r) for r in requests]
        if not lines:
            return KickResult(0, [])
        self._require_v2()
        conn = self._take_conn()
        try:
            conn.begin(self.deadline)
            if not conn.greeted:  # nothing is sent before the server greeted as 2.4
                self._read_greeting(conn)
            return self._pipeline(conn, lines)
        finally:
            conn.close()

    def _kick_line(self, request: KickRequest) -> bytes:
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
                f"{self.path}: request too long for anvil ({len(line) + 1} bytes, the limit is "
                f"{MAX_LINE}): {_show(line[:80])}…"
            )
        return line

    def _require_v2(self) -> None:
        self.connect()
        if self._protocol == 2:
            return
        if not self._confirmed:
            # No greeting in the grace period: give a busy 2.4 server up to a second in all
            # to greet (so it never sees a protocol 1 VERSION line), then settle it with one
            # read-only PENALTY-DUMP rather than waiting out the whole read timeout.
            conn = self._take_conn()
            try:
                if conn.poll(max(0.0, min(self.timeout, 1.0) - self.greeting_grace)):
                    self._read_greeting(conn)
                    self._idle = conn
                    return
            except BaseException:
                conn.close()
                raise
            conn.close()
            if self.confirm_protocol() == 2:
                return
        raise AnvilError(
            f"{self.path}: kicking through anvil needs Dovecot 2.4 (anvil protocol 2); "
            "this anvil speaks protocol 1 (Dovecot 2.3 kicks by signal)"
        )

    def _pipeline(self, conn: _Conn, lines: list[bytes]) -> KickResult:
        """Send the handshake and ``lines`` on a greeted connection, one reply line per kick.

        Replies must be short numbers: a longer partial line ends the exchange. Lines beyond one
        per kick are a protocol error, reported and not counted; after the last reply the client
        half-closes and reads until anvil closes (briefly) so that a trailing extra shows too.
        """
        debug = self._debug
        sock = conn.sock
        total = len(lines)
        window = max(1, self.KICK_WINDOW)
        out = bytearray(V2_HANDSHAKE)
        if debug is not None:
            debug("anvil> " + _show(V2_HANDSHAKE.split(b"\n")[0]))
            debug("anvil> ")
        buf = conn.buf
        conn.buf = b""
        sent = answered = count = 0
        errors: list[str] = []
        failure = ""
        line_end = time.monotonic() + self.kick_timeout
        sock.setblocking(False)
        registered = selectors.EVENT_READ
        with selectors.DefaultSelector() as sel:
            sel.register(sock, registered)
            while answered < total:
                while sent < total and sent - answered < window:
                    out += lines[sent]
                    out += b"\n"
                    if debug is not None:
                        debug("anvil> " + _show(lines[sent]))
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
                        failure = f"Anvil queries timed out after {self.kick_timeout:.3f} secs"
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
                        debug("anvil< " + _show(line))
                    answered += 1
                    if _is_uint(line):
                        count += int(line)
                    else:
                        errors.append(f"Unexpected reply from anvil: {excerpt(line)}")
                    line_end = time.monotonic() + self.kick_timeout
                if failure:
                    break
        if failure:
            errors.append(
                f"Failed to send kick to anvil: {failure} ({total - answered} of {total} unanswered)"
            )
        else:
            extra = self._trailing_data(conn, buf)
            if extra:
                if debug is not None:
                    debug("anvil< " + _show(extra))
                errors.append(
                    f"anvil sent more than the {total} reply line(s) requested (protocol error, "
                    f"not counted): {excerpt(extra)}"
                )
        return KickResult(count, errors)

    def _trailing_data(self, conn: _Conn, buf: bytes) -> bytes:
        """What anvil sends after the last reply: half-close, then read until it closes (as it
        does at once), for at most ``DRAIN_WAIT`` s and ``MAX_SHORT_LINE`` bytes."""
        sock = conn.sock
        end = min(time.monotonic() + self.DRAIN_WAIT, conn.end)
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
