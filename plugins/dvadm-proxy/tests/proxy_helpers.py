"""What the real-Dovecot proxy tests share: the sessions, running both tools, order-free comparison."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from doveadm_py.testing.imap import wait_registered
from doveadm_py.testing.proxy import ProxyDovecot, open_proxied_sessions, wait_no_proxies

RunDvadm = Callable[..., subprocess.CompletedProcess[bytes]]
Spec = tuple[str, str]

ALIASES = {"jane": "jane-a", "foo": "shared", "james": "shared", "jano": "jano-a", "bar@example.org": "bar-a"}
PROXIED = [("jane", "127.0.3.7"), ("foo", "127.0.3.8"), ("james", "127.0.3.9")]
DIRECT = [("jane", "127.0.0.12"), ("foo", "127.0.0.15"), ("james", "127.0.0.13")]


def both(server: ProxyDovecot, dvadm: RunDvadm, *args: str) -> tuple[Any, Any]:
    ours = dvadm(*server.dvadm_args(), *args)
    theirs = server.doveadm(*args)
    return ours, theirs


def records(formatter: str, out: bytes) -> tuple[Any, list[Any]]:
    """(first line or None, the other records sorted): the comparison order cannot matter for."""
    if formatter == "json":
        rows = json.loads(out)
        return None, sorted(json.dumps(row, sort_keys=True) for row in rows)
    if formatter == "pager":
        return None, sorted(out.split(b"\f\n"))
    lines = out.split(b"\n")
    if formatter == "flow" or formatter == "-h":
        return None, sorted(lines)
    return lines[0], sorted(lines[1:])


def kick_once(
    server: ProxyDovecot,
    run: Callable[..., Any],
    args: Sequence[str],
    proxied_specs: Sequence[Spec],
    expected: set[Spec],
) -> tuple[Any, set[Spec], set[Spec]]:
    """Open the sessions, run one kick, wait for the ``expected`` (user, ip) to close (and a
    while for any other); return (result, proxied closed, direct closed)."""
    proxied, direct = open_proxied_sessions(server, proxied_specs, DIRECT)
    with proxied, direct:
        result = run("proxy", "kick", *args)
        closed = proxied.wait_for_disconnects(expected, timeout=10, settle=0.5)
        direct_closed = direct.wait_for_disconnects(expected, timeout=10, settle=0)
    if server.server.generation == 1:
        wait_no_proxies(server)
    wait_registered(server, 0, timeout=10)  # the backends are gone too: the next round starts clean
    return result, closed, direct_closed
