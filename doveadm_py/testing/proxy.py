"""A throwaway Dovecot (2.3 or 2.4) whose login proxy forwards to two backend addresses of its own.

The harness's ``DovecotInstance(proxy=True)`` already proxies logins on ``proxy_port`` to its own
``imap_port`` on 127.0.0.1 (reference section 10, "A Dovecot 2.3 that proxies to itself").
:class:`ProxyDovecot` adds a second destination: the backend also listens on ``127.0.0.2``
(:data:`SECOND_BACKEND`), and ``proxy_hosts`` sends chosen users' proxies there, so that
``proxy kick -h`` has destinations to tell apart. Each proxied login is one imap-login process
(Dovecot's default), so on 2.3 every one has its own connection to ``<base_dir>/ipc``: the set-up
in which ``LIST-FULL`` shows every process's header line.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from doveadm_py.testing.dovecot import DovecotError, DovecotInstance
from doveadm_py.testing.imap import ImapSession, SessionGroup, _anvil_counts, wait_registered

if TYPE_CHECKING:
    from typing import TypedDict

    from typing_extensions import Unpack

    from doveadm_py.testing.servers import DovecotServer

    class _InstanceOptions(TypedDict, total=False):
        """DovecotInstance's other keywords, passed through."""

        server: str | DovecotServer | None
        auth_failure_delay: int
        start_timeout: float
        stop_timeout: float
        binary: str | None


SECOND_BACKEND = "127.0.0.2"
"""A second address the backend listens on: proxies to it have another destination host."""


class ProxyDovecot(DovecotInstance):
    """A :class:`DovecotInstance` with ``proxy=True`` and a second backend address.

    ``proxy_fields`` maps a username to its ``user_*`` fields (as ``user_fields``: in the proxy's
    passdb reply too); ``proxy_hosts`` maps a username to the backend address its proxy connects
    to (default the instance's host, or :data:`SECOND_BACKEND`). Every user logs in directly
    (``imap_port``) and through the proxy (``proxy_port``). Other keywords: as DovecotInstance.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        extra_conf: str = "",
        *,
        proxy_fields: Mapping[str, Mapping[str, str]] | None = None,
        proxy_hosts: Mapping[str, str] | None = None,
        **kwargs: Unpack[_InstanceOptions],
    ) -> None:
        super().__init__(users, extra_conf, proxy=True, user_fields=proxy_fields, **kwargs)
        self.proxy_hosts = dict(proxy_hosts or {})
        for user, host in self.proxy_hosts.items():
            if host not in (self.host, SECOND_BACKEND):
                raise ValueError(
                    f"proxy host {host!r} of {user}: the backend listens on {self.host} and {SECOND_BACKEND}"
                )

    @property
    def ipc_path(self) -> str:
        """``<base_dir>/ipc``, the socket ``doveadm proxy`` talks to on 2.3."""
        return str(self.base_dir / "ipc")

    def _write_files(self) -> None:
        super()._write_files()
        # The proxy passdb's lines are "<key><user>:...proxy=y host=<host> port=..." (key "px<port>-" on 2.3).
        prefix = f"px{self.proxy_port}-" if self.server.generation == 1 else ""
        for path in self._work().glob("proxy-*"):
            lines = path.read_text().splitlines(keepends=True)
            for i, line in enumerate(lines):
                user = line.split(":", 1)[0].removeprefix(prefix)
                host = self.proxy_hosts.get(user)
                if host is not None:
                    lines[i] = line.replace(f" host={self.host} ", f" host={host} ", 1)
            path.write_text("".join(lines))

    def config_text(self) -> str:
        key = "address" if self.server.generation == 1 else "listen"
        return (
            super().config_text()
            + f"""
service imap-login {{
  inet_listener imap-second {{
    {key} = {SECOND_BACKEND}
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
