"""Helpers of the anvil conformance suites (protocol 1 and 2): raw exchanges and stand-in processes."""

from __future__ import annotations

import socket
import subprocess
import time

from doveadm_py.testing.dovecot import process_cmdline


def stand_in(title: str = "dovecot/imap") -> subprocess.Popen[bytes]:
    """A process whose /proc cmdline starts with ``title``, as Dovecot's mail processes' do."""
    proc = subprocess.Popen(["bash", "-c", f"exec -a {title} sleep 60"])
    deadline = time.monotonic() + 5
    while not process_cmdline(proc.pid).startswith(title.encode()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def raw(path: str, request: bytes, timeout: float = 2.0) -> tuple[bytes, bool]:
    """Send ``request``; return what came back until the empty line, and whether anvil hung up."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return data, False
            except ConnectionResetError:  # closed with our unread request still queued
                return data, True
            if not chunk:
                return data, True
            data += chunk
            if data == b"\n" or data.endswith(b"\n\n"):
                return data, False
        return data, False
