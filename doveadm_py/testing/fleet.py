"""Fleet test helpers: Dovecot's doveadm HTTP listener config, fleet files, and fake API servers.

:func:`http_api_conf` is the ``extra_conf`` that gives a :class:`DovecotInstance` its doveadm
HTTP API; :func:`write_fleet` writes a fleet file with 0600 key files, :func:`make_certificates` a CA and
a certificate for 127.0.0.1. :class:`FakeApiServer`
answers like Dovecot 2.3's API with canned sessions after a delay, or misbehaves (``fault``:
``"hang"`` accepts and never answers, ``"garbage"`` sends invalid JSON, ``"500"``, ``"401"``,
``"close"`` closes without an answer, ``"drip"`` sends a byte every 0.1 s, ``"drip-head"``
a header that never ends, ``"drip-tls"`` a TLS handshake that never ends), or sends
``raw_reply`` as its 200 body; it is for the benchmark and for faults a real server cannot
be made to show.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from doveadm_py.testing.dovecot import DovecotInstance
from doveadm_py.testing.imap import SessionGroup, open_sessions


def http_api_conf(
    port: int, api_key: str | None = None, password: str | None = None, extra: str = "", *, v24: bool = False
) -> str:
    """dovecot.conf lines enabling the doveadm HTTP API on 127.0.0.1:``port`` (2.4: ``listen``)."""
    lines = []
    if api_key is not None:
        lines.append(f"doveadm_api_key = {api_key}")
    if password is not None:
        lines.append(f"doveadm_password = {password}")
    listener = f"    port = {port}\n    {'listen' if v24 else 'address'} = 127.0.0.1\n{extra}"
    lines.append(f"service doveadm {{\n  inet_listener http {{\n{listener}  }}\n}}")
    return "\n".join(lines) + "\n"


def write_fleet(directory: Path, servers: Mapping[str, Mapping[str, Any]], defaults: str = "") -> Path:
    """``fleet.toml`` in ``directory``; a server's ``key`` becomes a 0600 ``<name>.key`` api_key_file."""
    parts = [defaults] if defaults else []
    for name, spec in servers.items():
        entry = dict(spec)
        key = entry.pop("key", None)
        if key is not None:
            key_file = directory / f"{name}.key"
            key_file.write_text(key + "\n")
            key_file.chmod(0o600)
            entry["api_key_file"] = str(key_file)
        lines = [f"[servers.{name}]"]
        for k, v in entry.items():
            lines.append(f"{k} = {json.dumps(v)}")
        parts.append("\n".join(lines))
    path = directory / "fleet.toml"
    path.write_text("\n\n".join(parts) + "\n")
    return path


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl CLI): (ca, cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make the test certificates")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    # Extensions as Python 3.13's strict verification (VERIFY_X509_STRICT) requires them.
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=dvadm test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "ext").write_text(
        "subjectAltName=IP:127.0.0.1\nauthorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext")  # fmt: skip
    (directory / "server.key").chmod(0o600)
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


class FakeApiServer:
    """A loopback HTTP server answering API ``who``/``kick`` like Dovecot 2.3, a thread per client."""

    def __init__(
        self,
        sessions: Sequence[Mapping[str, str]] = (),
        *,
        delay: float = 0.0,
        fault: str | None = None,
        raw_reply: bytes | None = None,
    ) -> None:
        self.sessions = [dict(s) for s in sessions]
        self.raw_reply = raw_reply
        self.delay = delay
        self.fault = fault
        self.requests: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self._accept.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            with contextlib.suppress(OSError):
                if self.fault == "drip-tls":  # a TLS record header, then its body a byte every 0.1 s
                    conn.sendall(b"\x16\x03\x03\x40\x00")
                    while not self._stop.wait(0.1):
                        conn.sendall(b"a")
                    return
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                self.requests.append(head + b"\r\n\r\n" + body)
                if self.fault == "hang":
                    self._stop.wait(60)
                    return
                if self.fault == "drip-head":  # a header that never ends, a byte every 0.1 s
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                    while not self._stop.wait(0.1):
                        conn.sendall(b"a")
                    return
                deadline = time.monotonic() + self.delay
                while time.monotonic() < deadline and not self._stop.is_set():
                    self._stop.wait(deadline - time.monotonic())
                if self.fault == "close":
                    return
                status, reply = self._reply(body)
                if self.fault == "drip":  # a valid reply, one byte at a time, 0.1 s apart
                    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(reply)}\r\n\r\n".encode()
                    for i in range(len(head + reply)):
                        if self._stop.wait(0.1):
                            return
                        conn.sendall((head + reply)[i : i + 1])
                    return
                conn.sendall(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n"
                    f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode()
                    + reply
                )

    def _reply(self, body: bytes) -> tuple[str, bytes]:
        if self.fault == "500":
            return "500 Internal Server Error", b"Internal Server Error"
        if self.fault == "401":
            return "401 Unauthorized", b"Unauthorized"
        if self.raw_reply is not None:
            return "200 OK", self.raw_reply
        if self.fault == "garbage":
            return "200 OK", b'[["doveadmResponse",[{"username":'
        if not body:  # GET /doveadm/v1: the 2.3 command list
            kick = {"command": "kick", "parameters": [{"name": "force"}, {"name": "mask"}]}
            return "200 OK", json.dumps([kick]).encode()
        command, _, tag = json.loads(body)[0]
        if command == "who":
            return "200 OK", json.dumps([["doveadmResponse", self.sessions, tag]]).encode()
        return "200 OK", json.dumps([["error", {"type": "exitCode", "exitCode": 68}, tag]]).encode()


def wait_port_closed(port: int, timeout: float = 5.0) -> None:
    """Wait (bounded) until nothing accepts on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            return
        time.sleep(0.05)


@contextlib.contextmanager
def sessions_on(
    servers: Mapping[str, DovecotInstance],
    specs: Mapping[str, Sequence[tuple[str, str]]],
    timeout: float = 10.0,
) -> Iterator[dict[str, SessionGroup]]:
    """Idle IMAP sessions on several servers (``specs``: server name -> (user, source IP)s).

    On exit they are closed and, bounded by ``timeout``, anvil has dropped them, so the next
    test starts from no sessions.
    """
    groups: dict[str, SessionGroup] = {}
    try:
        for name, server_specs in specs.items():
            groups[name] = open_sessions(servers[name], server_specs)
        yield groups
    finally:
        for group in groups.values():
            group.close()
        deadline = time.monotonic() + timeout
        for instance in servers.values():
            while instance.running and instance.connect_dump() and time.monotonic() < deadline:
                time.sleep(0.02)


def disconnected(
    groups: Mapping[str, SessionGroup], expected: Mapping[str, set[tuple[str, str]]], timeout: float = 10.0
) -> dict[str, set[tuple[str, str]]]:
    """Wait (bounded) for the expected disconnects on each server; every (user, ip) that did disconnect."""
    return {
        name: group.wait_for_disconnects(expected.get(name, set()), timeout) for name, group in groups.items()
    }
