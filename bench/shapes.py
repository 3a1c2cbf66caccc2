"""Session tables of different shapes for the ``who`` benchmark, as raw CONNECT-DUMP lines.

Every shape is deterministic and built from its size alone. A shape says what kind of server it
stands for; the aggregation's cost depends on how sessions share users, services, pids and IPs:

- ``distinct-ips``: an ISP-sized server, every session from its own client IP, ~3 sessions a user.
- ``ip-pool``: every client behind one of 64 addresses (NAT, a webmail), ~3 sessions a user.
- ``heavy-users``: 100 users with 10,000 sessions each (shared or system accounts); doveadm's
  cost grows with the square of a user's sessions (it searches its pid and IP lists linearly).
- ``one-per-user``: a million users with one session each: a group per session.
- ``long-names``: ``firstname.lastname.N@department.university.example`` names, ~3 sessions a user.
- ``alt-proxy`` (protocol 2 only): three alt-username fields, half the sessions proxied by
  ``imap-login`` with a destination IP.
- ``lmtp``: lmtp deliveries only, which have no client IP.

Services mix imap, pop3, submission and lmtp (no IP) like the simulator's generated table; one
session in 50 has refcount 2 on protocol 1 (2.3 counts a line that many times). Protocol 2 lines
carry a GUID and, unless the shape says otherwise, a ``user_alias`` value on most sessions.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

SERVICES = ("imap",) * 14 + ("pop3",) * 4 + ("submission", "lmtp")


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    protocols: tuple[int, ...] = (1, 2)


SHAPES = (
    Shape("distinct-ips", "every session its own client IP, n/3 users"),
    Shape("ip-pool", "client IPs from a pool of 64, n/3 users"),
    Shape("heavy-users", "100 users with n/100 sessions each, IPs from a pool of 50,000"),
    Shape("one-per-user", "n users with one session each"),
    Shape("long-names", "~60-character user@domain names, n/3 users"),
    Shape("alt-proxy", "3 alt-username fields, half the sessions imap-login proxies with dest_ip", (2,)),
    Shape("lmtp", "lmtp sessions only, no client IP, n/3 users"),
)
BY_NAME = {shape.name: shape for shape in SHAPES}


def _ipv4(j: int) -> str:
    return f"{10 + j % 3}.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}"


def _ipv6(j: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, b"\x20\x01\x0d\xb8" + (j * 2654435761).to_bytes(16, "big")[-12:])


def _ip(j: int) -> str:
    """Client IP number j, canonical as anvil prints it; one in four is IPv6."""
    return _ipv6(j) if j % 4 == 3 else _ipv4(j)


def _users(shape: str, n: int) -> list[str]:
    if shape == "one-per-user":
        count = n
    elif shape == "heavy-users":
        count = 100
    else:
        count = max(1, n // 3)
    if shape == "long-names":
        return [
            f"firstname{u % 997}.lastname{u}@department{u % 13}.university-of-somewhere.example"
            for u in range(count)
        ]
    return [f"user{u}@example.{('org', 'com', 'net')[u % 3]}" for u in range(count)]


def _ip_picker(shape: str, n: int) -> Callable[[int], str]:
    if shape == "distinct-ips":
        return _ip
    pool = [_ip(j) for j in range(64 if shape == "ip-pool" else min(max(n, 1), 50_000))]
    return lambda i: pool[(i * 31) % len(pool)]


def dump_lines(shape: str, protocol: int, n: int) -> tuple[list[bytes], list[bytes]]:
    """(header lines, session lines) of ``shape`` with ``n`` sessions, as anvil sends them."""
    if protocol not in BY_NAME[shape].protocols:
        raise ValueError(f"shape {shape} has no protocol {protocol} version")
    users = _users(shape, n)
    ip_of = _ip_picker(shape, n)
    n_users = len(users)
    step = 1 if shape == "one-per-user" else 7919  # spreads a user's sessions over the dump
    lines = []
    if protocol == 1:
        for i in range(n):
            service = "lmtp" if shape == "lmtp" else SERVICES[i % len(SERVICES)]
            user = users[(i * step) % n_users]
            refcount = 2 if i % 50 == 7 else 1
            if service == "lmtp":
                lines.append(f"lmtp/{user}\t{1000 + i}\t{refcount}".encode())
            else:
                lines.append(f"{service}/{ip_of(i)}/{user}\t{1000 + i}\t{refcount}".encode())
        return [], lines
    alt_proxy = shape == "alt-proxy"
    header = [b"user_alias\tmaster_user\taccount_id"] if alt_proxy else [b"user_alias"]
    for i in range(n):
        u = (i * step) % n_users
        service = "lmtp" if shape == "lmtp" else SERVICES[i % len(SERVICES)]
        dest_ip = ""
        if alt_proxy and i % 2:
            service, dest_ip = "imap-login", f"10.255.{(i >> 8) & 255}.{i & 255}"
        ip = "" if service == "lmtp" else ip_of(i)
        guid = f"{(i * 2654435761) & 0xFFFFFFFF:08x}{i:08x}5a1c000083ecc375"
        if alt_proxy:
            master = "master@example.org" if i % 5 == 0 else ""
            tail = f"\talias{u}\t{master}\tacct-{u}"
        else:
            tail = f"\talias{u}" if u % 4 else ""
        lines.append(f"{1000 + i}\t{users[u]}\t{service}\t{ip}\t{guid}\t{dest_ip}{tail}".encode())
    return header, lines
