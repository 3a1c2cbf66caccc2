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
exactly doveadm's bytes (reference section 10). This module detects the protocol and
routes the requests; the rest lives beside it: :mod:`~doveadm_py.anvil.connection` (one
bounded socket), :mod:`~doveadm_py.anvil.dump` (CONNECT-DUMP), :mod:`~doveadm_py.anvil.penalty`
(PENALTY-DUMP) and :mod:`~doveadm_py.anvil.kick` (the kick pipeline).

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

from collections.abc import Callable, Iterable

from doveadm_py.anvil.connection import (
    MAX_SHORT_LINE,
    V1_HANDSHAKE,
    V2_HANDSHAKE,
    Connection,
    is_uint,
    open_connection,
    show,
)
from doveadm_py.anvil.dump import ConnectDump
from doveadm_py.anvil.escape import split_tabescaped
from doveadm_py.anvil.generations import Generations, Identity, socket_identity
from doveadm_py.anvil.kick import KickRequest, KickResult, kick_line, pipeline
from doveadm_py.anvil.penalty import PenaltyDump, read_penalties
from doveadm_py.anvil.records import AnvilError, AnvilProtocolError, excerpt


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
        self._idle: Connection | None = None  # the detection connection, until a request uses it

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
        conn = open_connection(self.path, self.connect_timeout, self._debug)
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

    def _speak_v1(self, conn: Connection, why: str) -> None:
        self._protocol = 1
        self._server_version = (1, 0)
        if self._debug is not None:
            self._debug(f"anvil: {why}")

    def _learn(self, protocol: int) -> None:
        """Remember the socket's generation once an exchange proved it."""
        self.generations.remember(self._identity, protocol)

    def _read_greeting(self, conn: Connection) -> None:
        line = conn.read_line(self.timeout, "anvil's VERSION line", limit=MAX_SHORT_LINE)
        if line is None:
            raise conn.eof_error(" (no VERSION line)")
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
            or not is_uint(fields[2])
            or int(fields[2]) != 2
            or not is_uint(fields[3])
        ):
            raise AnvilProtocolError(f"{label}: Invalid VERSION line: {excerpt(line)}")
        self._protocol = 2
        self._server_version = (2, int(fields[3]))
        self._confirmed = True
        self._learn(2)

    def _take_conn(self) -> Connection:
        conn, self._idle = self._idle, None
        return conn if conn is not None else open_connection(self.path, self.connect_timeout, self._debug)

    def _request(self, payload: bytes, what: str) -> Connection:
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
                    self._debug("anvil< " + show(line))
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
        return PenaltyDump(conn, read_penalties(conn, self.timeout, strict_eof=self._protocol == 2))

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
        return result.connections

    def kick_many(self, requests: Iterable[KickRequest]) -> KickResult:
        """Send all kicks pipelined on one connection and sum the replies.

        Every request line is built (and length-checked) before anything is sent. At
        most ``KICK_WINDOW`` requests are in flight, so neither side's buffers fill up.
        A reply that is not a count becomes "Unexpected reply from anvil: <r>" in
        ``errors``; a reply timeout (``kick_timeout`` without any reply) or a lost
        connection becomes a "Failed to send kick to anvil: …" error and returns what
        was counted so far, as doveadm does. Failing to connect or a bad greeting raises.
        """
        lines = [kick_line(r, self.path) for r in requests]
        if not lines:
            return KickResult(0, [])
        self._require_v2()
        conn = self._take_conn()
        try:
            conn.begin(self.deadline)
            if not conn.greeted:  # nothing is sent before the server greeted as 2.4
                self._read_greeting(conn)
            return pipeline(
                conn,
                lines,
                kick_timeout=self.kick_timeout,
                window=self.KICK_WINDOW,
                drain_wait=self.DRAIN_WAIT,
            )
        finally:
            conn.close()

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
