"""Client for Dovecot 2.3's ``ipc`` socket, the transport of ``doveadm proxy`` on 2.3.

The wire (``src/lib-master/ipc-client.c``, ``src/ipc/client.c``@2.3.19.1): no handshake; the
client sends ``<group>\\t*\\t<command>\\n`` (``*``: every process of the group) and reads
``:<data>`` lines, then ``+<text>`` (success) or ``-<text>`` (failure). Any other line is
invalid; doveadm then gives up on the connection.

The ipc service itself has no timeouts and doveadm waits forever, so all bounds are ours: a
connect timeout, a timeout per line (a line must arrive in full within it, which also catches
a server that drips bytes), an overall deadline for the whole reply, and a maximum line
length. Every failure is an :class:`IpcError` (exit 75) whose message says what failed, as
doveadm's ``<COMMAND> failed: <reason>`` does.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

from doveadm_py.api import TempFailError

MAX_LINE = 1024 * 1024
"""Far above any real reply line (a user, its alt names, four short fields); bounds memory."""
READ_SIZE = 64 * 1024
ANVIL_GREETING = b"VERSION\tanvil-server\t"


class IpcError(TempFailError):
    """The ipc socket failed: unreachable, closed early, hung, or sent something invalid.

    Exit 75, printed as doveadm 2.3 logs it: ``Error: KICK failed: <reason>``.
    """

    prefix = "Error"


class AnvilGreeting(IpcError):
    """The socket greeted like a Dovecot 2.4 anvil: it is no 2.3 ipc socket (nothing was done)."""


def _show(data: bytes) -> str:
    return repr(data)[2:-1]


class IpcConnection:
    """One connection to the ipc socket with bounded reads; ``sock`` may be already connected."""

    def __init__(
        self,
        path: str,
        *,
        connect_timeout: float,
        timeout: float,
        deadline: float,
        sock: socket.socket | None = None,
        debug: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.deadline_seconds = deadline
        self.debug = debug
        self.buf = b""
        if sock is None:
            sock = connect(path, connect_timeout)
        self.sock = sock

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> IpcConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, what: str, command: bytes) -> IpcReply:
        """Send ``proxy\\t*\\t<command>`` and return the reply, read as it is iterated."""
        line = b"proxy\t*\t" + command + b"\n"
        if self.debug is not None:
            self.debug("ipc> " + _show(line[:-1]))
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(line)
        except TimeoutError:
            raise IpcError(f"{what} failed: write({self.path}) timed out after {self.timeout:g} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise IpcError(f"{what} failed: Disconnected") from None
        except OSError as e:
            raise IpcError(f"{what} failed: write({self.path}) failed: {e.strerror or e}") from None
        return IpcReply(self, what, time.monotonic() + self.deadline_seconds)

    def read_line(self, what: str, deadline: float) -> bytes:
        """The next line without its LF; every failure raises :class:`IpcError`."""
        line_deadline = min(time.monotonic() + self.timeout, deadline)
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 1 :]
                if self.debug is not None:
                    self.debug("ipc< " + _show(line))
                return line
            if len(self.buf) > MAX_LINE:
                raise IpcError(f"{what} failed: ipc sent a line longer than {MAX_LINE} bytes")
            remaining = line_deadline - time.monotonic()
            if remaining <= 0:
                if line_deadline >= deadline:
                    whole = self.deadline_seconds
                    raise IpcError(f"{what} failed: no complete reply from {self.path} within {whole:g} s")
                raise IpcError(f"{what} failed: read({self.path}) timed out after {self.timeout:g} s")
            try:
                self.sock.settimeout(remaining)
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                continue
            except OSError as e:
                raise IpcError(f"{what} failed: read({self.path}) failed: {e.strerror or e}") from None
            if not data:
                raise IpcError(f"{what} failed: Disconnected")
            self.buf += data

    def greeted(self, grace: float) -> bool:
        """Whether the server spoke first within ``grace`` s (a 2.3 ipc server never does)."""
        try:
            self.sock.settimeout(grace)
            data = self.sock.recv(READ_SIZE)
        except (TimeoutError, BlockingIOError, OSError):
            return False  # an error or EOF is for the request to report
        self.buf += data
        return bool(data)


def connect(path: str, timeout: float) -> socket.socket:
    """A connected UNIX socket; a failure is an :class:`IpcError` naming the path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except TimeoutError:
        sock.close()
        raise IpcError(f"connect({path}) failed: timed out after {timeout:g} s") from None
    except OSError as e:
        sock.close()
        raise IpcError(f"connect({path}) failed: {e.strerror or e}") from None
    except BaseException:
        sock.close()
        raise
    return sock


class IpcReply:
    """The reply to one request: iterate it for the ``:`` data lines (without the ``:``).

    After the iteration ``text`` holds the ``+`` line's text. A ``-`` line raises
    :class:`IpcError` (``<what> failed: <text>``), as does anything that is no reply line.
    """

    def __init__(self, conn: IpcConnection, what: str, deadline: float) -> None:
        self.conn = conn
        self.what = what
        self.deadline = deadline
        self.text: bytes | None = None
        self._first = True

    def __iter__(self) -> Iterator[bytes]:
        while self.text is None:
            line = self.conn.read_line(self.what, self.deadline)
            first, self._first = self._first, False
            kind, data = line[:1], line[1:]
            if kind == b":":
                yield data
            elif kind == b"+":
                self.text = data
            elif kind == b"-":
                raise IpcError(f"{self.what} failed: {text(data)}")
            elif first and line.startswith(ANVIL_GREETING):
                raise AnvilGreeting(f"{self.conn.path} greeted like a Dovecot 2.4 anvil: {text(line)}")
            else:
                raise IpcError(f"{self.what} failed: Invalid input: {text(line)}")

    def finish(self) -> bytes:
        """Read (and drop) any data lines left; the ``+`` text."""
        for _ in self:
            pass
        assert self.text is not None
        return self.text


def text(data: bytes) -> str:
    """Wire bytes for a message: undecodable bytes and control characters escaped."""
    shown = data.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
