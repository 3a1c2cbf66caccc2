"""One connection to an anvil socket: bounded reads and writes, every failure an AnvilError.

Anvil itself has no timeouts, so all of them are ours: the caller's connect timeout, a
``timeout`` for each line of a reply (a line must arrive in full within it, which also
catches a server that drips bytes), and a deadline for a whole exchange (:meth:`Connection.begin`),
which catches a server that drips a line's bytes just fast enough. Lines are bounded in
length (a greeting or kick reply to a few hundred bytes), and messages quote server data
only as a short escaped :func:`~doveadm_py.anvil.records.excerpt`. Every failure is an
:class:`~doveadm_py.anvil.records.AnvilError` naming the socket.
"""

from __future__ import annotations

import socket
import time
import weakref
from collections.abc import Callable, Generator

from doveadm_py.anvil.records import AnvilError, AnvilProtocolError, excerpt
from doveadm_py.errors import EX_USAGE

V1_HANDSHAKE = b"VERSION\tanvil\t1\t0\n"
# VERSION line, then the empty handshake line: an admin client with no service/pid.
V2_HANDSHAKE = b"VERSION\tanvil-client\t2\t0\n\n"
READ_SIZE = 256 * 1024
MAX_REPLY_LINE = 1024 * 1024  # far above any real anvil line; bounds memory against a broken server
MAX_SHORT_LINE = 256  # a VERSION line or a kick reply (a number): a few bytes
_UINT_MAX = 2**32 - 1


#: After a missing or refused anvil socket (doveadm's own message comes first).
NO_ANVIL_HINT = "is Dovecot running? For another instance or config use -i INSTANCE or -c FILE (or -a SOCKET)"


def show(line: bytes) -> str:
    """Unambiguous one-line rendering for debug output (tabs as \\t, odd bytes as \\xNN)."""
    return repr(line)[2:-1]


def is_uint(text: bytes) -> bool:
    """``str_to_uint``: ASCII digits within an unsigned int (length first: int() refuses huge strings)."""
    return text.isdigit() and len(text) <= 10 and int(text) <= _UINT_MAX


def split_hostport(target: str) -> tuple[str, int]:
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


class Connection:
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
                self.debug("anvil> " + show(line))
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

    def eof_error(self, detail: str = "") -> AnvilProtocolError:
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
                    self.debug("anvil< " + show(line))
                return line
            self._check_length(self.buf if i < 0 else self.buf[:i], limit, what)
            data = self._recv(line_end, timeout, what)
            if not data:
                if self.buf:
                    raise self.eof_error(" in the middle of a line")
                return None
            self.buf += data

    def _check_length(self, partial_line: bytes, limit: int, what: str) -> None:
        if len(partial_line) > limit:
            raise AnvilProtocolError(
                f"{self.label}: anvil sent a line longer than {limit} bytes in {what}: "
                + excerpt(partial_line)
            )

    def iter_blocks(self, timeout: float, what: str) -> Generator[list[bytes], None, bool]:
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
                        debug("anvil< " + show(line))
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
                    raise self.eof_error(" in the middle of a line")
                return False
            if buf:
                buf += data
                if len(buf) > MAX_REPLY_LINE and b"\n" not in buf:
                    self._check_length(buf, MAX_REPLY_LINE, what)
            else:
                buf = data


def open_connection(path: str, connect_timeout: float, debug: Callable[[str], None] | None) -> Connection:
    """Connect to ``path`` (a UNIX socket when it has a '/', else ``host:port`` for TCP)."""
    if "/" in path:
        func = "net_connect_unix"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(connect_timeout)
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise _connect_error(path, func, e, connect_timeout) from None
        except BaseException:
            sock.close()
            raise
    else:
        func = "net_connect"
        host, port = split_hostport(path)
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as e:
            raise _connect_error(path, func, e, connect_timeout) from None
    if debug is not None:
        debug(f"anvil: connected to {path}")
    return Connection(sock, path, debug)


def _connect_error(path: str, func: str, e: OSError, connect_timeout: float) -> AnvilError:
    if isinstance(e, TimeoutError):
        return AnvilError(f"{func}({path}) failed: timed out after {connect_timeout:g} s")
    message = f"{func}({path}) failed: {e.strerror or e}"
    if isinstance(e, PermissionError):
        message += " (the anvil socket is root-only in Dovecot 2.3, group dovecot in 2.4)"
    if func == "net_connect_unix" and isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
        return AnvilError(message, hint=NO_ANVIL_HINT)
    return AnvilError(message)
