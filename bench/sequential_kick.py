"""Baseline for the kick benchmark: ``dvadm kick`` with one request in flight at a time.

doveadm 2.4 sends a kick and waits for its reply before sending the next one. This runs dvadm
itself (same start-up, same dump, same filtering, same request lines) with only
``AnvilClient.kick_many`` replaced by a plain blocking send-one-wait-one loop over one
connection, so the benchmark measures pipelining and nothing else. The loop is as cheap as a
sequential client gets (buffered reads, no selector), which keeps the comparison fair.

Usage: ``python bench/sequential_kick.py [dvadm arguments]``, e.g. ``kick -a SOCKET 'user*'``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterable

from doveadm_py.anvil import AnvilClient, KickRequest, KickResult
from doveadm_py.anvil.escape import join_tabescaped
from doveadm_py.app import main

HANDSHAKE = b"VERSION\tanvil-client\t2\t0\n\n"


def request_line(request: KickRequest) -> bytes:
    """The request as doveadm 2.4 writes it (reference section 10), without the LF."""
    kind, name, value, except_ip = request
    if kind == "user":
        fields = [b"KICK-USER", name.encode("utf-8", "surrogateescape")]
        if value is not None and value.strip("0"):
            fields.append(value.lower().encode())
    else:
        fields = [b"KICK-ALT-USER", name.encode("utf-8", "surrogateescape")]
        fields.append((value or "").encode("utf-8", "surrogateescape"))
        if except_ip is not None:
            fields.append(except_ip.encode())
    return join_tabescaped(fields)


def kick_many_sequential(self: AnvilClient, requests: Iterable[KickRequest]) -> KickResult:
    """Send each kick and wait for its reply before the next; sum the counts."""
    lines = [request_line(r) + b"\n" for r in requests]
    if not lines:
        return KickResult(0, [])
    if "/" not in self.path:
        raise SystemExit("sequential_kick: only UNIX socket paths are supported")
    errors: list[str] = []
    count = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(self.kick_timeout)
        sock.connect(self.path)
        sock.sendall(HANDSHAKE)
        replies = sock.makefile("rb")
        greeting = replies.readline()
        if not greeting.startswith(b"VERSION\tanvil-server\t2\t"):
            raise SystemExit(f"sequential_kick: not a protocol 2 anvil: {greeting!r}")
        for line in lines:
            sock.sendall(line)
            reply = replies.readline()
            if not reply.endswith(b"\n"):
                errors.append("Failed to send kick to anvil: Unexpected EOF")
                break
            reply = reply[:-1]
            if reply.isdigit():
                count += int(reply)
            else:
                errors.append(f"Unexpected reply from anvil: {reply.decode('utf-8', 'replace')}")
        replies.close()
    return KickResult(count, errors)


if __name__ == "__main__":
    AnvilClient.kick_many = kick_many_sequential  # type: ignore[method-assign]
    sys.exit(main())
