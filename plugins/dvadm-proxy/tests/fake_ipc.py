"""A scripted stand-in for Dovecot 2.3's ipc socket, for what a real server cannot do: faults.

Each connection's first line is recorded in ``received`` (raw, with its LF), then the scripted
``reply`` bytes are sent, or a fault is played: ``hang`` (say nothing), ``drip`` (send
``reply`` one byte every ``drip_interval`` s), ``flood`` (``:x`` lines without end), ``close``
(close without a word), ``greet`` (a 2.4 anvil greeting on accept, then ``reply``).
Every wait is bounded: the server stops when the test does, and each connection by ``limit`` s.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from types import TracebackType

FAULTS = ("hang", "drip", "flood", "close", "greet")


class FakeIpc:
    def __init__(
        self,
        reply: bytes = b"+\n",
        *,
        fault: str | None = None,
        drip_interval: float = 0.05,
        limit: float = 30.0,
    ) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(fault)
        self.reply = reply
        self.fault = fault
        self.drip_interval = drip_interval
        self.limit = limit
        self.received: list[bytes] = []
        self.accepted = 0
        self.dir = tempfile.mkdtemp(prefix="fake-ipc-")
        self.path = os.path.join(self.dir, "ipc")
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeIpc:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + self.limit
        with conn:
            try:
                if self.fault == "close":
                    return
                if self.fault == "greet":
                    conn.sendall(b"VERSION\tanvil-server\t2\t0\n")
                line = self._read_line(conn, deadline)
                if line is None:
                    return
                self.received.append(line)
                if self.fault == "hang":
                    self._wait(deadline)
                elif self.fault == "drip":
                    for byte in self.reply:
                        if self._stop.is_set() or time.monotonic() > deadline:
                            return
                        conn.sendall(bytes([byte]))
                        time.sleep(self.drip_interval)
                    self._wait(deadline)
                elif self.fault == "flood":
                    chunk = b":x\n" * 4096
                    conn.settimeout(5)
                    while not self._stop.is_set() and time.monotonic() < deadline:
                        conn.sendall(chunk)
                else:
                    conn.sendall(self.reply)
                    self._wait(deadline)
            except OSError:
                return

    def _read_line(self, conn: socket.socket, deadline: float) -> bytes | None:
        data = b""
        conn.settimeout(0.05)
        while b"\n" not in data:
            if self._stop.is_set() or time.monotonic() > deadline:
                return None
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return data or None
            data += chunk
        return data

    def _wait(self, deadline: float) -> None:
        """Keep the connection open (as the ipc server does) until the client goes or the test ends."""
        while not self._stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
