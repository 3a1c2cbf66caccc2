"""Raw IMAP clients that log in and sit idle, so anvil lists them and ``kick`` has something to disconnect.

Each session binds its own loopback source address (Linux accepts any 127.x.y.z), which is how tests get
sessions "from" different IPs without any network set-up. Every wait here is bounded.
"""

from __future__ import annotations

import select
import socket
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from doveadm_py.testing.dovecot import DovecotInstance, DumpEntry

_POLL_SECONDS = 0.02


class ImapError(RuntimeError):
    """The server did not behave like an IMAP server (no greeting, closed early, no reply in time)."""


class LoginError(ImapError):
    """LOGIN was refused; ``reply`` is the server's tagged reply line."""

    def __init__(self, message: str, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply = reply


def quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501), so passwords with spaces or quotes still log in."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Connection:
    """A socket bound to a source address, with line reading against a deadline."""

    def __init__(self, host: str, port: int, source_ip: str, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.bind((source_ip, 0))
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        except BaseException:
            self.sock.close()
            raise

    def read_line(self) -> bytes:
        while b"\n" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise ImapError(f"no complete line from the server in time (got {self.buffer!r})")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            if not chunk:
                raise ImapError(f"server closed the connection (got {self.buffer!r})")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def read_tagged(self, tag: bytes) -> bytes:
        """Read until the tagged reply for ``tag``; untagged lines before it are dropped."""
        while True:
            line = self.read_line()
            if line.startswith(tag + b" "):
                return line


class ImapSession:
    """One logged-in, idle IMAP session from ``source_ip``.

    Connecting and logging in happen in the constructor (bounded by ``timeout``); a refused login raises
    :class:`LoginError` and leaves no socket open. Afterwards everything the server sends (typically
    ``b"* BYE Server shutting down.\\r\\n"`` when kicked) accumulates in :attr:`received`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        source_ip: str = "127.0.0.1",
        timeout: float = 10.0,
    ) -> None:
        self.host, self.port, self.user, self.source_ip = host, port, user, source_ip
        self.received = b""
        self._eof = False
        conn = _Connection(host, port, source_ip, timeout)
        try:
            self.greeting = conn.read_line()
            if not self.greeting.startswith(b"* OK"):
                raise ImapError(f"unexpected greeting {self.greeting!r}")
            conn.sock.sendall(f"a LOGIN {quote(user)} {quote(password)}\r\n".encode())
            self.login_reply = conn.read_tagged(b"a")
            if not self.login_reply.startswith(b"a OK"):
                raise LoginError(
                    f"LOGIN {user} from {source_ip} refused: {self.login_reply!r}", self.login_reply
                )
        except BaseException:
            conn.sock.close()
            raise
        self.received = conn.buffer
        self._sock = conn.sock
        self._sock.setblocking(False)

    @property
    def spec(self) -> tuple[str, str]:
        """(user, source_ip), the form sessions are requested in."""
        return self.user, self.source_ip

    @property
    def ident(self) -> str:
        """How 2.3 anvil names this session: ``imap/<ip>/<user>``."""
        return f"imap/{self.source_ip}/{self.user}"

    def _drain(self, timeout: float) -> None:
        """Collect what the server sent within ``timeout`` seconds; note EOF or a reset."""
        if self._eof:
            return
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        if not poller.poll(max(int(timeout * 1000), 0)):
            return
        while True:
            try:
                chunk = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:  # ECONNRESET and friends: the server is gone all the same
                chunk = b""
            if not chunk:
                self._eof = True
                return
            self.received += chunk

    def is_connected(self) -> bool:
        """False once the server closed the connection (or we did); never blocks."""
        self._drain(0)
        return not self._eof

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds for the server to close; True if it did."""
        deadline = time.monotonic() + timeout
        while not self._eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._drain(min(remaining, 0.1))
        return self._eof

    def close(self) -> None:
        """Drop the connection without LOGOUT (what a vanished client does)."""
        self._eof = True
        self._sock.close()

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "connected" if not self._eof else "closed"
        return f"<ImapSession {self.user} from {self.source_ip} {state} received={self.received!r}>"


def failed_login(
    host: str, port: int, user: str, bad_password: str, source_ip: str = "127.0.0.1", timeout: float = 30.0
) -> bytes:
    """Attempt one LOGIN that must fail; return the tagged reply (e.g. ``a NO [AUTHENTICATIONFAILED] ...``).

    Each failure feeds anvil's auth penalty for ``source_ip``, and the reply waits for ``auth_failure_delay``
    (checked every 0.5 s, so expect about 0.5 s even with a delay of 0), plus the penalty delay on later
    attempts from the same IP: allow for it in ``timeout``. Raises :class:`ImapError` if the login succeeds.
    """
    try:
        session = ImapSession(host, port, user, bad_password, source_ip, timeout)
    except LoginError as refused:
        return refused.reply
    session.close()
    raise ImapError(f"LOGIN {user} with a bad password from {source_ip} succeeded")


def _anvil_counts(entries: Sequence[DumpEntry]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for entry in entries:
        counts[entry.ident] += entry.refcount
    return counts


def wait_registered(
    instance: DovecotInstance, expected: int | Mapping[str, int], timeout: float = 5.0
) -> list[DumpEntry]:
    """Poll anvil's CONNECT-DUMP until it shows the expected sessions; return that dump.

    ``expected`` is either the exact total number of connections, or a mapping ident -> minimum count
    (``imap/<ip>/<user>``). Raises :class:`TimeoutError` (showing the last dump) when not reached in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        dump = instance.connect_dump()
        counts = _anvil_counts(dump)
        if isinstance(expected, int):
            done = sum(counts.values()) == expected
        else:
            done = all(counts[ident] >= n for ident, n in expected.items())
        if done:
            return dump
        if time.monotonic() >= deadline:
            raise TimeoutError(f"anvil did not register {expected!r} within {timeout} s; it lists {dump!r}")
        time.sleep(_POLL_SECONDS)


class SessionGroup:
    """Sessions opened together, observed together (who got disconnected, with what last words)."""

    def __init__(self, sessions: Sequence[ImapSession] = ()) -> None:
        self.sessions: list[ImapSession] = list(sessions)

    def __iter__(self) -> Iterator[ImapSession]:
        return iter(self.sessions)

    def __len__(self) -> int:
        return len(self.sessions)

    def __getitem__(self, index: int) -> ImapSession:
        return self.sessions[index]

    def connected(self) -> list[ImapSession]:
        return [session for session in self.sessions if session.is_connected()]

    def disconnected(self) -> list[ImapSession]:
        """Sessions the server (or we) closed; each keeps what it received in ``received``."""
        return [session for session in self.sessions if not session.is_connected()]

    def wait_for_disconnects(
        self, expected: Collection[tuple[str, str]], timeout: float = 5.0, settle: float = 0.2
    ) -> set[tuple[str, str]]:
        """Wait (bounded) until every session whose (user, source_ip) is in ``expected`` is closed.

        Then waits ``settle`` seconds more so that sessions closed by mistake alongside them are caught too,
        and returns the (user, source_ip) of every disconnected session: compare it with ``expected``.
        """
        wanted = [session for session in self.sessions if session.spec in set(expected)]
        deadline = time.monotonic() + timeout
        for session in wanted:
            session.wait_closed(max(deadline - time.monotonic(), 0))
        time.sleep(settle)
        return {session.spec for session in self.disconnected()}

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    def __enter__(self) -> SessionGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_sessions(
    instance: DovecotInstance,
    specs: Sequence[tuple[str, str]],
    *,
    password: str | None = None,
    timeout: float = 10.0,
    port: int | None = None,
) -> SessionGroup:
    """Log in one idle session per (user, source_ip) and wait until anvil lists all of them.

    The password is ``password`` or the instance's own for that user. ``port`` defaults to the instance's
    IMAP port (give ``instance.proxy_port`` to log in through its proxy). On any failure the sessions already
    opened are closed and the error (e.g. :class:`LoginError` with the server's reply) propagates.
    """
    port = port or instance.imap_port
    if port is None:
        raise ImapError("the Dovecot instance is not started")
    deadline = time.monotonic() + timeout
    baseline = _anvil_counts(instance.connect_dump())
    group = SessionGroup()
    try:
        for user, source_ip in specs:
            secret = password if password is not None else instance.users.get(user, "")
            remaining = max(deadline - time.monotonic(), 0.001)
            group.sessions.append(ImapSession(instance.host, port, user, secret, source_ip, remaining))
        wanted = baseline + Counter(session.ident for session in group)
        wait_registered(instance, wanted, max(deadline - time.monotonic(), 0.001))
    except BaseException:
        group.close()
        raise
    return group
