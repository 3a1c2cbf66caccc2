"""The simulator's kick delay is honoured below a millisecond (the benchmark uses 0.2 ms).

epoll rounds a timeout up to whole milliseconds, so the simulator's event loop used to answer a
0.2 ms kick after 1.1 ms, which made one round trip after another look 5x slower than anvil's.
"""

from __future__ import annotations

import socket
import time

import pytest

from doveadm_py.testing.simulator import AnvilSimulator, SimSession

ROUND_TRIPS = 100


@pytest.mark.parametrize("delay", [0.0002, 0.0005])
def test_sub_millisecond_kick_delay(delay: float) -> None:
    sessions = [SimSession(1000, "someone", "imap", "192.0.2.1")]
    with (
        AnvilSimulator(2, sessions=sessions, kick_delay=delay) as sim,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.settimeout(10)
        sock.connect(sim.path)
        replies = sock.makefile("rb")
        sock.sendall(b"VERSION\tanvil-client\t2\t0\n\n")
        assert replies.readline().startswith(b"VERSION\t")
        trips = []
        for i in range(ROUND_TRIPS):  # users nobody is: nothing is kicked, each reply is "0"
            start = time.perf_counter()
            sock.sendall(b"KICK-USER\tnobody-%d\n" % i)
            assert replies.readline() == b"0\n"
            trips.append(time.perf_counter() - start)
        replies.close()
    # Every trip honours the delay. The fastest one shows the rounding: epoll's whole milliseconds
    # would make each trip last >= 1 ms, while a busy machine only ever slows some trips down.
    assert min(trips) >= delay, f"a round trip of {min(trips) * 1e6:.0f} us for a {delay * 1e6:.0f} us delay"
    assert min(trips) < delay + 0.0004, (
        f"fastest round trip {min(trips) * 1e6:.0f} us for a {delay * 1e6:.0f} us delay"
    )
