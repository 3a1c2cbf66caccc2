"""A protocol-faithful anvil server for tests, benchmarks and demos (no Dovecot needed).

:class:`AnvilSimulator` serves Dovecot 2.3's anvil protocol 1 or 2.4's protocol 2 on
a UNIX socket, from one event-loop thread that serves many clients at once. It
behaves like the real servers as far as an admin client can tell (reference
sections 1-3 and 10): 2.4 greets on accept and 2.3 never speaks first, each rejects
the other's VERSION line, bad input disconnects, lines over 1024 bytes disconnect,
dumps end with an empty line and keep the connection open, and KICK-USER /
KICK-ALT-USER select and count sessions as anvil does. What anvil would log goes
to :attr:`AnvilSimulator.errors`; every line received is in ``requests``.

``fault=`` makes it misbehave in one way (see :data:`FAULTS`), so clients can be
tested against hung, slow, truncated and malformed servers. :meth:`generate`
installs a large deterministic session table whose dump is built once and then
streamed at socket speed.

Run ``python -m doveadm_py.testing.simulator --protocol 2 --sessions 100000 --socket PATH``
to serve one until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from doveadm_py.anvil.escape import join_tabescaped, split_tabescaped, tabescape
from doveadm_py.anvil.generations import Generations, socket_identity
from doveadm_py.anvil.records import ENCODING, ERRORS, PenaltyRecord, excerpt

FAULTS = ("hang", "drip", "drip-forever", "close-mid-dump", "garbage", "wrong-version")
"""Dump faults. hang: accept, never answer. drip: send dumps one byte per
``drip_interval``. drip-forever: the same, but the dump never ends (its lines
repeat). close-mid-dump: send half of a dump (cut inside a line), then close.
garbage: a malformed line after the first dump line. wrong-version: 2.4 greets
with major 3; 2.3 answers the VERSION line with such a greeting and closes."""
KICK_FAULTS = ("kick-no-newline", "kick-extra-lines", "kick-huge-reply")
"""2.4 kick reply faults. kick-no-newline: answer a kick with digits that never
end (no LF; sent as fast as the client reads). kick-extra-lines: answer each kick
three times. kick-huge-reply: answer with a 1 MiB number and LF."""
HUGE_REPLY = 1 << 20

MAX_LINE = 1024
_TIMEOUT_GRAIN = 0.001  # the timeout resolution of epoll and poll (select has microseconds)
# The malformed line fault="garbage" inserts: by protocol for CONNECT-DUMP, 0 for PENALTY-DUMP.
GARBAGE = {1: b"garbage-line-without-a-slash\tnot-a-pid", 2: b"not-a-pid\tgarbage", 0: b"garbage\tline"}


def _new_guid() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class SimSession:
    """One connection in the simulated anvil.

    2.3 dumps it as ``service/ip/username`` (``service/username`` when ip is '',
    like lmtp) with ``refcount``; 2.4 as one line with its ``guid`` and ``alt``
    values. ``kick_type`` is what the process declared: 'S' (SIGTERM, counted once
    per pid, kills every session of the pid), 'W' (same), 'A' (anvil asks the
    process: one per session it drops) or 'N' (not kickable, like lmtp).
    """

    pid: int
    username: str
    service: str = "imap"
    ip: str = ""
    guid: str = field(default_factory=_new_guid)
    dest_ip: str = ""
    alt: dict[str, str] = field(default_factory=dict)
    refcount: int = 1
    kick_type: str = "S"


def _enc(s: str) -> bytes:
    return s.encode(ENCODING, ERRORS)


def _dump_line_v1(s: SimSession) -> bytes:
    ident = f"{s.service}/{s.ip}/{s.username}" if s.ip else f"{s.service}/{s.username}"
    return b"%s\t%d\t%d" % (tabescape(_enc(ident)), s.pid, s.refcount)


def _dump_line_v2(s: SimSession, alt_fields: Sequence[str]) -> bytes:
    fields = [b"%d" % s.pid, _enc(s.username), _enc(s.service), _enc(s.ip), _enc(s.guid), _enc(s.dest_ip)]
    if s.alt:
        used = [i for i, name in enumerate(alt_fields) if name in s.alt]
        if used:
            fields += [_enc(s.alt.get(name, "")) for name in alt_fields[: used[-1] + 1]]
    return join_tabescaped(fields)


def _payload(head: list[bytes], lines: list[bytes]) -> bytes:
    """A dump reply: header lines, records, the empty terminator line."""
    return b"".join([line + b"\n" for line in (*head, *lines)]) + b"\n"


class _Table:
    """The session rows plus lazily built lookup indexes for kicks."""

    def __init__(self, sessions: Iterable[SimSession], alt_fields: Sequence[str]) -> None:
        self.rows: dict[int, SimSession] = dict(enumerate(sessions))
        names = list(alt_fields)
        for s in self.rows.values():
            names += [k for k in s.alt if k not in names]
        self.alt_fields = names
        self._by_user: dict[str, set[int]] | None = None
        self._by_pid: dict[int, set[int]] | None = None
        self._by_alt: dict[tuple[str, str], set[int]] | None = None

    def dump_lines(self, protocol: int) -> tuple[list[bytes], list[bytes]]:
        """The header lines (the 2.4 alt-field names; none for 2.3) and the session lines."""
        rows = self.rows.values()
        if protocol == 1:
            return [], [_dump_line_v1(s) for s in rows]
        names = self.alt_fields
        return [join_tabescaped([_enc(n) for n in names])], [_dump_line_v2(s, names) for s in rows]

    def payload(self, protocol: int) -> bytes:
        return _payload(*self.dump_lines(protocol))

    def _index(self) -> None:
        by_user: dict[str, set[int]] = {}
        by_pid: dict[int, set[int]] = {}
        by_alt: dict[tuple[str, str], set[int]] = {}
        for k, s in self.rows.items():
            by_user.setdefault(s.username, set()).add(k)
            by_pid.setdefault(s.pid, set()).add(k)
            for item in s.alt.items():
                by_alt.setdefault(item, set()).add(k)
        self._by_user, self._by_pid, self._by_alt = by_user, by_pid, by_alt

    def kick_user(self, user: str, guid: str | None) -> int:
        if self._by_user is None:
            self._index()
        assert self._by_user is not None
        keys = [k for k in self._by_user.get(user, ()) if guid is None or self.rows[k].guid == guid]
        return self._kick(keys, by_alt=False)

    def kick_alt_user(self, name: str, value: str, except_ip: str | None) -> int:
        if name not in self.alt_fields:
            return 0
        if self._by_alt is None:
            self._index()
        assert self._by_alt is not None
        keys = [k for k in self._by_alt.get((name, value), ()) if self.rows[k].ip != except_ip]
        return self._kick(keys, by_alt=True)

    def _kick(self, keys: list[int], *, by_alt: bool) -> int:
        """Count like anvil: 'S'/'W' +1 per pid signalled, 'A' +1 per session the process
        drops (for KICK-USER it drops all of that user's sessions in it), 'N' skipped."""
        assert self._by_pid is not None and self._by_user is not None
        count = 0
        signalled: set[int] = set()
        asked: set[tuple[int, str]] = set()
        removed: set[int] = set()
        for k in sorted(keys, key=lambda k: (self.rows[k].pid, self.rows[k].guid)):
            s = self.rows[k]
            if s.kick_type in ("S", "W"):
                if s.pid not in signalled:
                    signalled.add(s.pid)
                    count += 1
            elif s.kick_type == "A":
                if by_alt:
                    removed.add(k)
                    count += 1
                elif (s.pid, s.username) not in asked:
                    asked.add((s.pid, s.username))
                    dropped = self._by_pid[s.pid] & self._by_user[s.username]
                    removed |= dropped
                    count += len(dropped)
        for pid in signalled:
            removed |= self._by_pid[pid]
        self._remove(removed)
        return count

    def _remove(self, keys: set[int]) -> None:
        assert self._by_pid is not None and self._by_user is not None and self._by_alt is not None
        for k in keys:
            s = self.rows.pop(k)
            self._by_user[s.username].discard(k)
            self._by_pid[s.pid].discard(k)
            for item in s.alt.items():
                self._by_alt[item].discard(k)


_KICK_TYPES = {"lmtp": "N", "imap-login": "A"}


class _GeneratedTable:
    """A deterministic synthetic table whose dump is built once; rows are made on demand."""

    SERVICES = {
        1: ("imap",) * 14 + ("pop3",) * 5 + ("lmtp",),
        2: ("imap",) * 12 + ("pop3",) * 4 + ("submission", "lmtp", "imap-login", "imap-hibernate"),
    }

    def __init__(self, n: int, users: int, protocol: int) -> None:
        self.n = n
        self.alt_fields = ["user_alias"] if protocol == 2 else []
        self._names = [f"user{u}@example.{('org', 'com', 'net')[u % 3]}" for u in range(users)]
        self._ips = self._ip_pool(min(max(n, 1), 50000))
        self._protocol = protocol
        self._lines = self._build_lines()
        self._payload = _payload(*self._lines)

    @staticmethod
    def _ip_pool(k: int) -> list[str]:
        """k canonical client IPs, one in four IPv6 (formatted the way inet_ntop does)."""
        ips = []
        for j in range(k):
            if j % 4 == 3:
                packed = b"\x20\x01\x0d\xb8" + (j * 2654435761).to_bytes(12, "big")[-12:]
                ips.append(socket.inet_ntop(socket.AF_INET6, packed))
            else:
                ips.append(f"{10 + j % 3}.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}")
        return ips

    def row(self, i: int) -> tuple[int, str, str, str, str, str, str, int, str]:
        """(pid, username, service, ip, guid, dest_ip, alias, refcount, kick_type) of session i."""
        services = self.SERVICES[self._protocol]
        service = services[i % len(services)]
        u = (i * 7919) % len(self._names)
        ip = "" if service == "lmtp" else self._ips[(i * 31) % len(self._ips)]
        pid = 999 if service == "imap-hibernate" else 1000 + i  # one process hibernates everyone
        dest_ip = "10.255.0.1" if service == "imap-login" else ""
        alias = f"alias{u}" if self._protocol == 2 and u % 4 != 0 else ""
        guid = f"{(i * 2654435761) & 0xFFFFFFFF:08x}{i:08x}5a1c000083ecc375"
        kick_type = _KICK_TYPES.get(service, "S")
        return pid, self._names[u], service, ip, guid, dest_ip, alias, 2 if i % 50 == 7 else 1, kick_type

    def _build_lines(self) -> tuple[list[bytes], list[bytes]]:
        # Generated values need no tab escaping, so format them directly (fast).
        lines: list[bytes] = []
        if self._protocol == 1:
            for i in range(self.n):
                pid, user, service, ip, _, _, _, refcount, _ = self.row(i)
                ident = f"{service}/{ip}/{user}" if ip else f"{service}/{user}"
                lines.append(f"{ident}\t{pid}\t{refcount}".encode())
            return [], lines
        for i in range(self.n):
            pid, user, service, ip, guid, dest_ip, alias, _, _ = self.row(i)
            tail = f"\t{alias}" if alias else ""
            lines.append(f"{pid}\t{user}\t{service}\t{ip}\t{guid}\t{dest_ip}{tail}".encode())
        return [b"user_alias"], lines

    def dump_lines(self, protocol: int) -> tuple[list[bytes], list[bytes]]:
        return self._lines

    def payload(self, protocol: int) -> bytes:
        return self._payload

    def materialize(self) -> _Table:
        sessions = []
        for i in range(self.n):
            pid, user, service, ip, guid, dest_ip, alias, refcount, kick_type = self.row(i)
            alt = {"user_alias": alias} if alias else {}
            sessions.append(SimSession(pid, user, service, ip, guid, dest_ip, alt, refcount, kick_type))
        return _Table(sessions, self.alt_fields)


class _Client:
    __slots__ = ("closing", "drip", "events", "held", "inbuf", "index", "out", "sock", "state")

    def __init__(self, sock: socket.socket, index: int, state: str) -> None:
        self.sock = sock
        self.index = index
        self.state = state  # version, handshake, ready, hung, closed
        self.inbuf = bytearray()
        self.out: deque[memoryview] = deque()
        self.closing = False  # close once the output is flushed
        self.held = False  # 2.4 greeting not sent yet: don't read requests
        self.drip: memoryview | None = None
        self.events = selectors.EVENT_READ


class AnvilSimulator:
    """Serve a simulated anvil on ``<directory or a fresh temp dir>/<socket_name>``
    (or on ``127.0.0.1:<free port>`` with ``tcp=True``: ``path`` is then that address).

    ``sessions`` can be replaced at any time (assign a new list; reading gives a
    snapshot whose SimSession objects must not be edited in place). A simulator
    runs once: start(), then stop(). ``requests`` holds every line received (handshake included, no LF),
    ``kicks`` the KICK-* lines, ``raw_received`` the bytes of each connection in
    accept order, ``accept_times`` when each was accepted, ``errors`` what anvil would have
    logged. ``greeting_delay`` delays the 2.4 greeting (and the reading of requests, as a busy anvil would);
    ``remember`` records the simulator's generation where dvadm remembers anvil sockets
    (:mod:`doveadm_py.anvil.generations`), as if dvadm had met it before; by default for
    protocol 1 only, so that tests do not pay the first contact's wait for a 2.3 greeting
    that never comes (pass False to test a first contact).
    ``kick_delay`` delays each kick reply (kicks are handled concurrently, like
    anvil's 100 parallel kicks).
    """

    def __init__(
        self,
        protocol: int = 2,
        *,
        sessions: Iterable[SimSession] = (),
        alt_fields: Sequence[str] = (),
        directory: str | None = None,
        fault: str | None = None,
        kick_delay: float = 0.0,
        penalties: Iterable[PenaltyRecord] = (),
        greeting_delay: float = 0.0,
        drip_interval: float = 0.05,
        socket_name: str = "anvil",
        tcp: bool = False,
        remember: bool | None = None,
    ) -> None:
        if protocol not in (1, 2):
            raise ValueError(f"protocol must be 1 or 2, not {protocol!r}")
        if fault is not None and fault not in FAULTS + KICK_FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS + KICK_FAULTS)}")
        self.protocol = protocol
        self.fault = fault
        self.remember = protocol == 1 if remember is None else remember
        self.kick_delay = kick_delay
        self.greeting_delay = greeting_delay
        self.drip_interval = drip_interval
        self.penalties: list[PenaltyRecord] = list(penalties)
        self.requests: list[bytes] = []
        self.kicks: list[bytes] = []
        self.errors: list[str] = []
        self.accepted = 0
        self.accept_times: list[float] = []  # time.monotonic() of each accept
        self._raw: list[bytearray] = []
        self._lock = threading.Lock()
        self._alt_fields = list(alt_fields)
        self._table: _Table | _GeneratedTable = _Table(sessions, self._alt_fields)
        self._own_dir = directory is None and not tcp
        self._dir = tempfile.mkdtemp(prefix="anvil-sim-") if self._own_dir else (directory or "")
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        if tcp:  # bound now so that the address is known: "127.0.0.1:<port>"
            self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
            self.path = f"127.0.0.1:{self._listener.getsockname()[1]}"
        else:
            self.path = os.path.join(self._dir, socket_name)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._sel: selectors.BaseSelector | None = None
        self._clients: set[_Client] = set()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    # -- public API ----------------------------------------------------------------------------

    @property
    def sessions(self) -> list[SimSession]:
        with self._lock:
            if isinstance(self._table, _GeneratedTable):
                self._table = self._table.materialize()
            return list(self._table.rows.values())

    @sessions.setter
    def sessions(self, sessions: Iterable[SimSession]) -> None:
        table = _Table(sessions, self._alt_fields)
        with self._lock:
            self._table = table

    @property
    def alt_fields(self) -> list[str]:
        """The 2.4 dump header: the given names plus any other alt key the sessions use."""
        return list(self._table.alt_fields)

    @property
    def raw_received(self) -> list[bytes]:
        return [bytes(b) for b in self._raw]

    def generate(self, n: int, *, users: int | None = None) -> None:
        """Install ``n`` deterministic sessions for about n/3 users (or ``users``).

        The table mixes services (2.3: imap, pop3, lmtp; 2.4 also submission, an
        imap-login proxy and imap-hibernate sharing one pid), IPv4 and IPv6 clients
        and, for 2.4, a ``user_alias`` alt field most sessions set. The dump is built
        here, once (about 2 s per million sessions), and then sent as one buffer; the
        rows themselves are made only if a kick or ``sessions`` needs them.
        """
        table = _GeneratedTable(n, max(1, users if users is not None else n // 3), self.protocol)
        with self._lock:
            self._table = table

    def start(self) -> AnvilSimulator:
        if self._thread is not None:
            return self
        listener = self._listener
        if listener is None:
            if os.path.exists(self.path):
                os.unlink(self.path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.path)
            listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        if self.remember and listener.family == socket.AF_UNIX:
            Generations.default().remember(socket_identity(self.path), self.protocol)
        self._sel = selectors.DefaultSelector()
        self._sel.register(listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._run, name="anvil-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake_w.send(b"x")
            self._thread.join(10)
            self._thread = None
            for c in list(self._clients):
                self._close(c)
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self._listener is not None:
            if self._listener.family == socket.AF_UNIX and os.path.exists(self.path):
                os.unlink(self.path)
            self._listener.close()
            self._listener = None
        self._wake_r.close()
        self._wake_w.close()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> AnvilSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- event loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        sel = self._sel
        assert sel is not None
        fine_timeouts = isinstance(sel, selectors.SelectSelector)
        while not self._stopping:
            timeout = None
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
                if 0 < timeout < _TIMEOUT_GRAIN and not fine_timeouts:
                    # epoll and poll round a timeout up to whole milliseconds, so a 0.2 ms kick delay
                    # would take 1 ms: sleep the sub-millisecond rest, then only poll.
                    time.sleep(timeout)
                    timeout = 0
            for key, mask in sel.select(timeout):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    self._wake_r.recv(64)
                else:
                    client: _Client = key.data
                    try:
                        if mask & selectors.EVENT_WRITE:
                            self._flush(client)
                        if mask & selectors.EVENT_READ and client.state != "closed":
                            self._read(client)
                    except Exception as e:  # a simulator bug: report it, keep serving others
                        self.errors.append(f"simulator error: {e!r}")
                        self._close(client)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, callback = heapq.heappop(self._timers)
                try:
                    callback()
                except Exception as e:
                    self.errors.append(f"simulator error: {e!r}")

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), callback))

    def _accept(self) -> None:
        assert self._listener is not None and self._sel is not None
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        self.accept_times.append(time.monotonic())
        self.accepted += 1
        self._raw.append(bytearray())
        client = _Client(sock, len(self._raw) - 1, "hung" if self.fault == "hang" else "version")
        self._clients.add(client)
        self._sel.register(sock, selectors.EVENT_READ, client)
        if self.protocol == 2 and client.state != "hung":
            major = 3 if self.fault == "wrong-version" else 2
            greeting = b"VERSION\tanvil-server\t%d\t0\n" % major
            if self.greeting_delay > 0:
                client.held = True
                self._later(self.greeting_delay, lambda: self._greet(client, greeting))
            else:
                self._send(client, greeting)

    def _greet(self, client: _Client, greeting: bytes) -> None:
        if client.state == "closed":
            return
        client.held = False
        self._send(client, greeting)
        self._process(client)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(client)
            return
        self._raw[client.index] += data
        if client.state == "hung" or client.closing:
            return
        client.inbuf += data
        if not client.held:
            self._process(client)

    def _process(self, client: _Client) -> None:
        buf = client.inbuf
        while not client.closing and client.state != "closed":
            i = buf.find(b"\n")
            if i < 0 and len(buf) < MAX_LINE:
                return
            if i < 0 or i + 1 > MAX_LINE:
                self._fail(client, "BUG: Anvil client connection sent too much data")
                return
            line = bytes(buf[:i])
            del buf[: i + 1]
            self._handle(client, line)

    def _handle(self, client: _Client, line: bytes) -> None:
        self.requests.append(line)
        if client.state == "version":
            self._handle_version(client, line)
        elif client.state == "handshake":
            self._handle_handshake(client, line)
        elif not line:
            if self.protocol == 2:
                self._fail(client, "Anvil client sent empty line")
            # protocol 1 ignores empty lines
        else:
            self._handle_command(client, line)

    def _handle_version(self, client: _Client, line: bytes) -> None:
        service, major = (b"anvil-client", 2) if self.protocol == 2 else (b"anvil", 1)
        if self.fault == "wrong-version":
            major = 3
        f = split_tabescaped(line)
        if (
            not (len(f) >= 4 and f[0] == b"VERSION" and f[1] == service and f[2].isdigit() and f[3].isdigit())
            or int(f[2]) != major
        ):
            if self.fault == "wrong-version" and self.protocol == 1:
                self._send(client, b"VERSION\tanvil-server\t3\t0\n")
            self._fail(
                client,
                "Anvil client not compatible with this server (mixed old and new binaries?) " + excerpt(line),
            )
            return
        client.state = "handshake" if self.protocol == 2 else "ready"

    def _handle_handshake(self, client: _Client, line: bytes) -> None:
        if not line:  # an admin client such as doveadm
            client.state = "ready"
            return
        f = split_tabescaped(line)
        if len(f) < 2 or not f[1].isdigit():
            self._fail(client, f"Invalid handshake pid: {excerpt(line)}")
        else:
            self._fail(client, "simulator: multiplexed service connections are not simulated")

    def _handle_command(self, client: _Client, line: bytes) -> None:
        args = split_tabescaped(line)
        cmd, args = args[0], args[1:]
        if cmd == b"CONNECT-DUMP":
            with self._lock:
                if self.fault == "garbage":  # a malformed line after the first record
                    head, lines = self._table.dump_lines(self.protocol)
                    data = _payload(head, [*lines[:1], GARBAGE[self.protocol], *lines[1:]])
                else:
                    data = self._table.payload(self.protocol)
            self._send_dump(client, data)
        elif cmd == b"PENALTY-DUMP":
            lines = [  # least recently updated first, like anvil
                b"%s\t%d\t%d\t%d" % (tabescape(_enc(p.ident)), p.penalty, p.last_penalty, p.last_update)
                for p in sorted(self.penalties, key=lambda p: p.last_update)
            ]
            if self.fault == "garbage":
                lines.insert(0, GARBAGE[0])
            self._send_dump(client, _payload([], lines))
        elif cmd in (b"KICK-USER", b"KICK-ALT-USER") and self.protocol == 2:
            self.kicks.append(line)
            self._handle_kick(client, cmd.decode(), [a.decode(ENCODING, ERRORS) for a in args])
        else:
            self._fail(client, f"Anvil client input error: Unknown command: {excerpt(line)}")

    def _handle_kick(self, client: _Client, cmd: str, args: list[str]) -> None:
        if cmd == "KICK-USER":
            if not args:
                self._fail(client, "Anvil client input error: KICK-USER: Not enough parameters")
                return
            guid = args[1] if len(args) > 1 else None
            if guid is not None:
                if len(guid) != 32 or not all(c in "0123456789abcdefABCDEF" for c in guid):
                    self._fail(client, "Anvil client input error: KICK-USER: Invalid conn-guid")
                    return
                guid = guid.lower()
            with self._lock:
                count = self._kickable().kick_user(args[0], guid)
        else:
            if len(args) < 2:
                self._fail(client, "Anvil client input error: KICK-ALT-USER: Not enough parameters")
                return
            with self._lock:
                count = self._kickable().kick_alt_user(args[0], args[1], args[2] if len(args) > 2 else None)
        reply = b"%d\n" % count
        if self.fault == "kick-extra-lines":
            reply *= 3
        elif self.fault == "kick-huge-reply":
            reply = b"1" * HUGE_REPLY + b"\n"
        elif self.fault == "kick-no-newline":
            self._endless(client, b"%d" % count + b"1" * 65535)
            return
        if self.kick_delay > 0:
            self._later(self.kick_delay, lambda: self._send(client, reply))
        else:
            self._send(client, reply)

    def _kickable(self) -> _Table:
        if isinstance(self._table, _GeneratedTable):
            self._table = self._table.materialize()
        return self._table

    def _send_dump(self, client: _Client, data: bytes) -> None:
        if self.fault in ("drip", "drip-forever"):
            if self.fault == "drip-forever":
                data = data[:-1]  # no terminator
            client.drip = memoryview(data)
            self._later(0, lambda: self._drip(client))
        elif self.fault == "close-mid-dump":
            self._send(client, data[: self._cut(data)])
            client.closing = True
            self._flush(client)
        else:
            self._send(client, data)

    @staticmethod
    def _cut(data: bytes) -> int:
        """About half of ``data``, never on a line boundary (so the client sees a cut line)."""
        cut = len(data) // 2
        while 0 < cut < len(data) - 1 and data[cut - 1 : cut] == b"\n":
            cut += 1
        return cut if cut < len(data) - 1 else 0

    def _drip(self, client: _Client) -> None:
        if client.state == "closed" or client.drip is None:
            return
        self._send(client, bytes(client.drip[:1]))
        rest = client.drip[1:]
        if not rest and self.fault == "drip-forever":  # start over, without the terminator
            with self._lock:
                rest = memoryview(b"".join(line + b"\n" for line in self._table.dump_lines(self.protocol)[1]))
        client.drip = rest or None
        if client.drip is not None:
            self._later(self.drip_interval, lambda: self._drip(client))

    def _endless(self, client: _Client, chunk: bytes) -> None:
        """Send ``chunk`` over and over, each time the previous one left (no unbounded queue)."""
        if client.state == "closed":
            return
        if not client.out:
            self._send(client, chunk)
        self._later(0.001, lambda: self._endless(client, chunk))

    def _send(self, client: _Client, data: bytes) -> None:
        if client.state == "closed":
            return
        client.out.append(memoryview(data))
        self._flush(client)

    def _flush(self, client: _Client) -> None:
        out = client.out
        while out:
            try:
                n = client.sock.send(out[0])
            except BlockingIOError:
                break
            except OSError:
                self._close(client)
                return
            if n < len(out[0]):
                out[0] = out[0][n:]
                break
            out.popleft()
        if not out and client.closing:
            self._close(client)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
        if events != client.events and self._sel is not None:
            client.events = events
            self._sel.modify(client.sock, events, client)

    def _fail(self, client: _Client, message: str) -> None:
        """Log like anvil and disconnect (after flushing what was already queued)."""
        self.errors.append(message)
        client.closing = True
        self._flush(client)

    def _close(self, client: _Client) -> None:
        if client.state == "closed":
            return
        client.state = "closed"
        self._clients.discard(client)
        if self._sel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(client.sock)
        client.sock.close()


def main(argv: list[str] | None = None, stdout: TextIO | None = None) -> int:
    """Serve a simulated anvil until SIGTERM or SIGINT; print the socket path when ready."""
    parser = argparse.ArgumentParser(prog="python -m doveadm_py.testing.simulator", description=main.__doc__)
    parser.add_argument("--protocol", type=int, choices=(1, 2), default=2)
    parser.add_argument("--sessions", type=int, default=0, metavar="N", help="generate N sessions")
    parser.add_argument("--users", type=int, default=None, help="distinct users (default N/3)")
    parser.add_argument("--socket", required=True, metavar="PATH", help="UNIX socket to create")
    parser.add_argument("--kick-delay", type=float, default=0.0, metavar="SECS")
    parser.add_argument("--fault", choices=FAULTS + KICK_FAULTS, default=None)
    args = parser.parse_args(argv)
    out = stdout if stdout is not None else sys.stdout
    directory, name = os.path.split(os.path.abspath(args.socket))
    sim = AnvilSimulator(
        args.protocol, directory=directory, socket_name=name, kick_delay=args.kick_delay, fault=args.fault
    )
    if args.sessions:
        sim.generate(args.sessions, users=args.users)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with sim:
        out.write(sim.path + "\n")
        out.flush()
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
