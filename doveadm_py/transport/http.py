"""A remote Dovecot through its doveadm HTTP API (reference section 8), with urllib3.

Only ``who`` with ``separateConnections`` (the full session list, filtered and
aggregated by dvadm's own code), ``kick`` and ``penalty`` are used: 2.3's aggregated
``who`` answers invalid JSON, so it is never asked for. The generation comes from the
session rows (2.4's have ``dest_ip``), else from the command list at ``GET /doveadm/v1``
(2.4's ``kick`` takes ``destHost``).

Secrets go into the ``Authorization`` header only: never into URLs, messages or ``-D``
logs. Every failure is a :class:`RemoteError` whose message names the cause; Dovecot
(2.3.19, 2.4.5) does not answer a wrong key on a request that says ``Connection: close`` (dvadm does
not, a proxy in front may), so a read timeout names wrong credentials as a likely cause.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..anvil.records import SessionV1, SessionV2
from ..errors import TempFailError
from .base import KickOutcome

if TYPE_CHECKING:
    from ..commands.kick.report import KickReport
    from ..masks import Filter

MAX_REPLY = 512 * 1024 * 1024
"""Bytes of one reply at most: a million sessions are ~100 MiB of JSON."""
TOTAL_READS = 4
"""A whole reply must arrive within this many read timeouts."""
V1_KEYS = ("username", "service", "pid", "ip")
V2_KEYS = (*V1_KEYS, "dest_ip")
TIMEOUT_HINT = (
    "; wrong credentials are a likely cause (Dovecot leaves a wrong API key or password "
    "unanswered when the request says Connection: close, as a proxy in front may)"
)


class RemoteError(TempFailError):
    """A server failed: unreachable, timed out, TLS, HTTP status, malformed reply, error exit code."""


class Credentials:
    """An API key (``X-Dovecot-API``) or a doveadm password (``Basic doveadm:…``); repr hides it."""

    __slots__ = ("_header",)

    def __init__(self, *, api_key: str | None = None, password: str | None = None) -> None:
        if api_key is not None:
            self._header = "X-Dovecot-API " + base64.b64encode(api_key.encode()).decode()
        elif password is not None:
            self._header = "Basic " + base64.b64encode(f"doveadm:{password}".encode()).decode()
        else:
            raise ValueError("an API key or a password is needed")

    def header(self) -> str:
        return self._header

    def __repr__(self) -> str:
        return "<Credentials hidden>"


class HttpTransport:
    """One server's doveadm HTTP API; ``name`` labels its rows and errors."""

    def __init__(
        self,
        name: str,
        url: str,
        credentials: Credentials,
        *,
        ca_file: str | None = None,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
        debug: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        # A path in the URL (a proxy in front that serves the API under a prefix) leads the API's.
        self.api_path = "/" + "/".join(filter(None, (*self.url.split("/")[3:], "doveadm/v1")))
        self._credentials = credentials
        self.ca_file = ca_file
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.debug = debug
        self._protocol: int | None = None
        self._pool: Any = None
        self._tag = 0
        self._sock: Any = None  # the pool's live socket, for the watchdog
        self._expired: Any = None  # threading.Event of the request in progress

    # -- the interface -------------------------------------------------------------------------

    @property
    def protocol(self) -> int:
        if self._protocol is None:
            self._protocol = self._ask_generation()
        return self._protocol

    def sessions(self) -> RemoteDump:
        """Every session (``who`` with ``separateConnections``, no masks) as a dump."""
        rows = self.command("who", {"separateConnections": True})
        dump = RemoteDump.from_rows(self.name, rows, self._protocol)
        if dump.protocol == 0:
            dump.protocol = self.protocol
        self._protocol = dump.protocol
        return dump

    def penalty_rows(self) -> Iterator[Sequence[str]]:
        rows = self.command("penalty", {})
        keys = ("IP", "penalty", "last_penalty", "last_update")
        for row in rows:
            yield tuple(_text(self.name, row, key) for key in keys)

    def kick(self, filter_: Filter, dest_host: str | None, args: argparse.Namespace) -> KickReport:
        """Kick (or dry-run) with dvadm's promises kept, as :meth:`LocalTransport.kick`: the session
        list first, then the server's own kick (:func:`doveadm_py.transport.kick.kick_server`)."""
        from .kick import kick_server

        return kick_server(self, filter_, dest_host, args)

    def api_kick(self, masks: Sequence[str], dest_host: str | None, passdb_field: str | None) -> KickOutcome:
        """The API's kick as such; 2.3 answers the users it kicked (exit 68: none), 2.4 a count."""
        params: dict[str, Any] = {}
        if masks:
            params["mask"] = list(masks)
        if dest_host is not None:
            params["destHost"] = dest_host
        if passdb_field is not None:
            params["passdbField"] = passdb_field
        try:
            rows = self.command("kick", params)
        except RemoteExitCode as err:
            if err.exit_code_remote == 68 and self.protocol == 1:
                return KickOutcome(0)
            raise
        if self.protocol == 1:
            return KickOutcome(len(rows), tuple(_text(self.name, r, "result") for r in rows))
        count = _text(self.name, rows[0], "count") if rows else "0"
        if not count.isdigit():
            raise RemoteError(f"{self.name}: malformed kick reply: count {count!r}")
        return KickOutcome(int(count))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- requests ------------------------------------------------------------------------------

    def command(self, name: str, params: dict[str, Any]) -> list[Any]:
        """Run one doveadm command; its result rows (a list of objects) or a RemoteError."""
        self._tag += 1
        tag = f"dvadm{self._tag}"
        body = json.dumps([[name, params, tag]]).encode()
        reply = self._request("POST", self.api_path, body, f"{name} {json.dumps(params)}")
        return self._result(reply, name, tag)

    def _ask_generation(self) -> int:
        commands = self._request("GET", self.api_path, None, "list commands")
        if not isinstance(commands, list):
            raise RemoteError(f"{self.name}: malformed command list from GET /doveadm/v1")
        for entry in commands:
            if isinstance(entry, dict) and entry.get("command") == "kick":
                names = {p.get("name") for p in entry.get("parameters", ()) if isinstance(p, dict)}
                return 2 if "destHost" in names else 1
        raise RemoteError(f"{self.name}: the server's doveadm HTTP API has no kick command")

    def _result(self, reply: Any, name: str, tag: str) -> list[Any]:
        if not (isinstance(reply, list) and reply and isinstance(reply[0], list) and reply[0]):
            raise RemoteError(f"{self.name}: malformed reply to {name}: not a list of results")
        result = reply[0]
        kind = result[0]
        if kind == "error" and len(result) == 3 and isinstance(result[1], dict):
            error = result[1]
            if error.get("type") == "exitCode":
                raise RemoteExitCode(self.name, name, error.get("exitCode"))
            if error.get("type") == "unAuthorized":  # 2.3 and 2.4: not in doveadm_allowed_commands
                raise RemoteError(f"{self.name}: the server does not allow {name} (doveadm_allowed_commands)")
            raise RemoteError(f"{self.name}: {name} failed on the server: {_short(error)}")
        well_formed = kind == "doveadmResponse" and len(result) == 3 and result[2] == tag
        if not well_formed or not isinstance(result[1], list):
            raise RemoteError(f"{self.name}: malformed reply to {name}: {_short(result)}")
        rows = result[1]
        if not all(isinstance(r, dict) for r in rows):
            raise RemoteError(f"{self.name}: malformed reply to {name}: rows are not objects")
        return rows

    def _request(self, method: str, path: str, body: bytes | None, what: str) -> Any:
        import urllib3

        if self._pool is None:
            self._pool = self._make_pool(urllib3)
        headers = {"Authorization": self._credentials.header(), "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.debug is not None:
            origin = "/".join(self.url.split("/")[:3])
            self.debug(f"http {self.name}> {method} {origin}{path} {what}")
        started = time.monotonic()
        limit = self.timeout * TOTAL_READS
        # Each read has its timeout, but a server dripping its headers or body a byte at a time
        # never trips it: the watchdog shuts the socket down once the whole reply is late.
        import threading

        self._expired = threading.Event()
        watchdog = threading.Timer(limit, self._expire, (self._expired,))
        watchdog.daemon = True
        watchdog.start()
        try:
            response = self._pool.urlopen(
                method,
                path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                preload_content=False,
                timeout=urllib3.Timeout(connect=self.connect_timeout, read=self.timeout),
            )
            data = self._read(response)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            if self._expired.is_set():
                raise RemoteError(self._late()) from None
            if not isinstance(err, urllib3.exceptions.HTTPError):
                raise
            raise RemoteError(f"{self.name}: {self._describe(err, urllib3)}") from None
        finally:
            watchdog.cancel()
        if self._expired.is_set():  # the shut socket may read as a reply that ended early
            raise RemoteError(self._late())
        if self.debug is not None:
            took = time.monotonic() - started
            self.debug(f"http {self.name}< {response.status} {len(data)} bytes in {took:.3f} s")
        if response.status == 401:
            raise RemoteError(f"{self.name}: authentication failed (HTTP 401): check the API key or password")
        if response.status != 200:
            raise RemoteError(f"{self.name}: HTTP {response.status} {response.reason or ''}".rstrip())
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as err:
            raise RemoteError(f"{self.name}: malformed JSON in the reply: {err}") from None

    def _read(self, response: Any) -> bytes:
        """The whole body: each read within the timeout, all of it within TOTAL_READS timeouts
        (a server that drips bytes), at most MAX_REPLY bytes."""
        deadline = time.monotonic() + self.timeout * TOTAL_READS
        chunks = []
        size = 0
        try:
            while chunk := response.read1(1 << 20):
                size += len(chunk)
                if size > MAX_REPLY:
                    raise RemoteError(f"{self.name}: reply larger than {MAX_REPLY >> 20} MiB, giving up")
                if time.monotonic() > deadline:
                    raise RemoteError(self._late())
                chunks.append(chunk)
        finally:
            response.release_conn()
        return b"".join(chunks)

    def _make_pool(self, urllib3: Any) -> Any:
        if self.url.startswith("https://"):
            import ssl

            context = ssl.create_default_context(cafile=self.ca_file)
            pool = urllib3.connection_from_url(self.url, maxsize=1, ssl_context=context)
        else:
            pool = urllib3.connection_from_url(self.url, maxsize=1)
        transport = self

        class WatchedConnection(pool.ConnectionCls):  # type: ignore[name-defined,misc]
            """Hands its TCP socket to the watchdog before any TLS handshake (which could drip too);
            one connected after the deadline is shut at once."""

            def _new_conn(self) -> Any:
                sock = super()._new_conn()
                transport._sock = sock
                if transport._expired is not None and transport._expired.is_set():
                    transport._expire(transport._expired)
                return sock

        pool.ConnectionCls = WatchedConnection
        return pool

    def _late(self) -> str:
        return f"{self.name}: reply still incomplete after {self.timeout * TOTAL_READS:g} s, giving up"

    def _expire(self, expired: Any) -> None:
        """The watchdog: the request ran past its deadline; a blocked read returns at once."""
        import contextlib
        import socket

        expired.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _describe(self, err: Exception, urllib3: Any) -> str:
        exc = urllib3.exceptions
        reason = getattr(err, "reason", None) or err
        if isinstance(err, exc.ReadTimeoutError) or isinstance(reason, exc.ReadTimeoutError):
            return f"no answer from {self.url} within {self.timeout:g} s{TIMEOUT_HINT}"
        if isinstance(reason, exc.SSLError) or isinstance(err, exc.SSLError):
            return f"TLS error with {self.url}: {_cause(reason)}"
        if isinstance(reason, exc.NewConnectionError) or isinstance(err, exc.NewConnectionError):
            return f"cannot connect to {self.url}: {_cause(reason)}"
        # NewConnectionError is a ConnectTimeoutError too: test it first.
        if isinstance(reason, exc.ConnectTimeoutError) or isinstance(err, exc.ConnectTimeoutError):
            return f"connecting to {self.url} timed out after {self.connect_timeout:g} s"
        if isinstance(err, exc.ProtocolError):
            return (
                f"{self.url} closed the connection without an answer "
                "(the server's doveadm failed; see its log)"
            )
        return f"request to {self.url} failed: {_cause(reason)}"


class RemoteExitCode(RemoteError):
    """The command ran on the server and exited with an error code."""

    def __init__(self, server: str, command: str, code: Any) -> None:
        self.exit_code_remote = code if isinstance(code, int) else None
        hint = " (usage error)" if code == 64 else " (nothing matched)" if code == 68 else ""
        super().__init__(f"{server}: {command} failed on the server with exit code {code}{hint}")


class RemoteDump:
    """A server's session list with the interface of :class:`~doveadm_py.anvil.ConnectDump`."""

    complete = True

    def __init__(self, protocol: int, alt_fields: tuple[str, ...], sessions: list[Any]) -> None:
        self.protocol = protocol
        self.alt_fields = alt_fields
        self.sessions = sessions

    @classmethod
    def from_rows(cls, server: str, rows: list[dict[str, Any]], protocol: int | None) -> RemoteDump:
        """Sessions from ``who -1`` JSON rows; protocol 0 when no row tells (and none was known)."""
        if not rows:
            return cls(protocol or 0, (), [])
        first = rows[0]
        v2 = "dest_ip" in first
        keys = V2_KEYS if v2 else V1_KEYS
        alt_fields = tuple(k for k in first if k not in keys) if v2 else ()
        sessions: list[Any] = []
        for row in rows:
            text = [_text(server, row, k) for k in keys]
            pid = text[2]
            if not (pid.isdigit() and len(pid) <= 10):
                raise RemoteError(f"{server}: malformed who reply: pid {pid!r}")
            if v2:
                alt = tuple(_text(server, row, k, "") for k in alt_fields)
                sessions.append(SessionV2(int(pid), text[0], text[1], text[3], "", text[4], alt))
            else:
                # 2.3's who -1 repeats a line refcount times: each row is one connection.
                sessions.append(SessionV1(text[1], text[3], text[0], int(pid), 1))
        return cls(2 if v2 else 1, alt_fields, sessions)

    def pieces(self) -> Iterator[list[Any]]:
        if self.sessions:
            yield self.sessions

    def __iter__(self) -> Iterator[Any]:
        return iter(self.sessions)

    def close(self) -> None:
        pass


def _text(server: str, row: dict[str, Any], key: str, default: str | None = None) -> str:
    value = row.get(key, default)
    if not isinstance(value, str):
        raise RemoteError(f"{server}: malformed reply: {key!r} is {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _cause(err: Any) -> str:
    """The innermost OS or TLS reason, without urllib3's object reprs."""
    seen = err
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, OSError) and isinstance(seen.strerror, str):
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(err).rsplit("): ", 1)[-1]
