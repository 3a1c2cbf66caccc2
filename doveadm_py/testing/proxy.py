"""A throwaway Dovecot 2.3 whose imap-login proxies logins on a second port to its own backend port.

Reference section 10 ("A Dovecot 2.3 that proxies to itself"): a second ``inet_listener`` in
``service imap-login`` (the proxy port), ``login_trusted_networks`` so the backend sees the
client's address, and, *before* the regular passdb, a passwd-file passdb keyed
``px<port>-<user>`` through ``username_format=px%{real_lport}-%u``: a login on the proxy port
finds its line (``proxy=y host=... port=<backend port>`` and any extra fields such as
``user_alias=...``); a login on the backend port finds no ``px<backend port>-`` key and falls
through to the regular passdb. ``%{lport}`` instead of ``%{real_lport}`` would loop (the proxy's
forwarded ID makes the backend see the proxy's port).

The backend also listens on ``127.0.0.2`` (:data:`SECOND_BACKEND`), so proxies can go to two
destination hosts: ``proxy kick -h`` then has something to tell apart.

Each proxied login is one imap-login process (Dovecot's default ``service_count = 1``) with its
own connection to ``<base_dir>/ipc``: exactly the set-up in which ``LIST-FULL`` shows every
process's header line.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Mapping, Sequence

from doveadm_py.testing.dovecot import DovecotError, DovecotInstance, free_port
from doveadm_py.testing.imap import ImapSession, SessionGroup, _anvil_counts, wait_registered

SECOND_BACKEND = "127.0.0.2"
"""A second address the backend listens on: proxies to it have another destination host."""


class ProxyDovecot(DovecotInstance):
    """A :class:`DovecotInstance` with a login proxy in front of its own IMAP backend.

    ``proxy_fields`` maps a username to the extra passdb fields its proxied logins carry,
    e.g. ``{"jane": {"user_alias": "jane-alias"}}``; ``proxy_hosts`` maps a username to the
    backend address its proxy connects to (default ``127.0.0.1``, or :data:`SECOND_BACKEND`).
    Every user can log in directly (``imap_port``) and through the proxy (``proxy_port``).
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        extra_conf: str = "",
        *,
        proxy_fields: Mapping[str, Mapping[str, str]] | None = None,
        proxy_hosts: Mapping[str, str] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(users, extra_conf, **kwargs)  # type: ignore[arg-type]
        self.proxy_fields = {user: dict(fields) for user, fields in (proxy_fields or {}).items()}
        self.proxy_hosts = dict(proxy_hosts or {})
        for user, fields in self.proxy_fields.items():
            for key, value in fields.items():
                if not key or any(c in key + value for c in " :\t\r\n\0"):
                    raise ValueError(f"proxy field {key}={value!r} of {user} cannot go into a passwd-file")
        self.proxy_port: int | None = None

    @property
    def ipc_path(self) -> str:
        """``<base_dir>/ipc``, the socket ``doveadm proxy`` talks to."""
        return str(self.base_dir / "ipc")

    def _write_files(self) -> None:
        self.proxy_port = free_port(self.host)
        while self.proxy_port == self.imap_port:
            self.proxy_port = free_port(self.host)
        super()._write_files()
        work = self._work()
        lines = []
        for user, password in self.users.items():
            host = self.proxy_hosts.get(user, self.host)
            fields = {
                "proxy": "y",
                "host": host,
                "port": str(self.imap_port),
                **self.proxy_fields.get(user, {}),
            }
            extra = " ".join(f"{key}={value}" for key, value in fields.items())
            lines.append(f"px{self.proxy_port}-{user}:{{PLAIN}}{password}::::::{extra}\n")
        path = work / "proxy-passwd"
        path.write_text("".join(lines))
        os.chown(path, 0, pwd.getpwnam("dovecot").pw_gid)
        path.chmod(0o640)

    def config_text(self) -> str:
        text = super().config_text()
        work = self._work()
        proxy_passdb = (
            "# Logins on the proxy port find px<proxy port>-<user>: proxy=y to the backend port.\n"
            "passdb {\n"
            "  driver = passwd-file\n"
            f"  args = scheme=PLAIN username_format=px%{{real_lport}}-%u {work}/proxy-passwd\n"
            "}\n"
        )
        marker = "passdb {\n"
        if marker not in text:
            raise DovecotError("the base configuration has no passdb block to put the proxy passdb before")
        text = text.replace(marker, proxy_passdb + marker, 1)
        return (
            text
            + f"""
login_trusted_networks = 127.0.0.0/8
service imap-login {{
  inet_listener imap-proxy {{
    address = {self.host}
    port = {self.proxy_port}
  }}
  inet_listener imap-second {{
    address = {SECOND_BACKEND}
    port = {self.imap_port}
  }}
}}
"""
        )


def open_proxied_sessions(
    instance: ProxyDovecot,
    proxied: Sequence[tuple[str, str]] = (),
    direct: Sequence[tuple[str, str]] = (),
    *,
    timeout: float = 10.0,
) -> tuple[SessionGroup, SessionGroup]:
    """Log in idle sessions through the proxy and directly; wait until anvil lists all backends.

    Returns (proxied group, direct group). A proxied session's backend is an anvil entry too,
    from the client's own address (the proxy forwards it to a trusted backend).
    """
    if instance.imap_port is None or instance.proxy_port is None:
        raise DovecotError("the Dovecot instance is not started")
    deadline = time.monotonic() + timeout
    baseline = _anvil_counts(instance.connect_dump())
    groups = (SessionGroup(), SessionGroup())
    try:
        for group, port, specs in (
            (groups[0], instance.proxy_port, proxied),
            (groups[1], instance.imap_port, direct),
        ):
            for user, source_ip in specs:
                remaining = max(deadline - time.monotonic(), 0.001)
                password = instance.users.get(user, "")
                group.sessions.append(ImapSession(instance.host, port, user, password, source_ip, remaining))
        wanted = baseline.copy()
        for group in groups:
            for session in group:
                wanted[session.ident] += 1
        wait_registered(instance, wanted, max(deadline - time.monotonic(), 0.001))
    except BaseException:
        for group in groups:
            group.close()
        raise
    return groups


def ipc_exchange(instance: ProxyDovecot, command: bytes, timeout: float = 5.0) -> bytes:
    """One raw ``proxy\\t*\\t<command>`` on the instance's ipc socket; the reply up to its ``+``/``-``."""
    import socket

    deadline = time.monotonic() + timeout
    reply = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(instance.ipc_path)
        sock.sendall(b"proxy\t*\t" + command + b"\n")
        while not any(line[:1] in (b"+", b"-") for line in reply.split(b"\n")[:-1]):
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                raise DovecotError(f"ipc closed the connection after {reply!r}")
            reply += chunk
    return reply


def wait_no_proxies(instance: ProxyDovecot, timeout: float = 10.0) -> bytes:
    """Wait (bounded) until no login process proxies any more; returns the last LIST-FULL reply.

    ``+\\n``: no process ever proxied; ``+(null)\\n``: every one that did is gone.
    """
    deadline = time.monotonic() + timeout
    while True:
        reply = ipc_exchange(instance, b"LIST-FULL")
        if reply in (b"+\n", b"+(null)\n"):
            return reply
        if time.monotonic() >= deadline:
            raise TimeoutError(f"login processes still proxy after {timeout} s: {reply!r}")
        time.sleep(0.05)
