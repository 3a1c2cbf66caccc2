"""One conformance suite for anvil protocol 1, run against the simulator and a real Dovecot 2.3.

Whatever passes against the simulator must pass against the real server: the same client
calls and the same raw exchanges give the same results on both backends. Each backend holds
the same sessions (users from 127.x addresses) in processes whose title is ``dovecot/imap``:
real IMAP processes for Dovecot, stand-ins started by the test for the simulator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from anvil_helpers import raw, stand_in

from doveadm_py.anvil import AnvilClient, AnvilError
from doveadm_py.testing.dovecot import DovecotInstance, process_cmdline
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.imap import open_sessions
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

SPECS = [("jane", "127.0.0.1"), ("jano", "127.0.0.2"), ("foo", "127.0.0.5"), ("foo", "127.0.1.9")]
V1 = b"VERSION\tanvil\t1\t0\n"


@dataclass
class Backend:
    name: str
    path: str


@pytest.fixture(scope="module", params=["simulator", "dovecot"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "simulator":
        procs = [stand_in() for _ in SPECS]
        sessions = [SimSession(p.pid, user, ip=ip) for p, (user, ip) in zip(procs, SPECS, strict=True)]
        try:
            with AnvilSimulator(protocol=1, sessions=sessions) as sim:
                yield Backend("simulator", sim.path)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=5)
        return
    require_dovecot()
    with DovecotInstance() as dovecot, open_sessions(dovecot, SPECS):
        yield Backend("dovecot", str(dovecot.anvil_path))


def test_detects_protocol_1_without_waiting(backend: Backend) -> None:
    """Once met (a first contact waits up to 1 s for a greeting), a 2.3 socket is spoken to at once."""
    with AnvilClient(backend.path) as client:
        assert client.confirm_protocol() == 1
    started = time.monotonic()
    with AnvilClient(backend.path) as client:
        assert client.confirm_protocol() == 1
        assert client.server_version == (1, 0)
    assert time.monotonic() - started < 1


def test_dump_lists_exactly_the_sessions_with_live_dovecot_pids(backend: Backend) -> None:
    started = time.monotonic()
    with AnvilClient(backend.path, timeout=5) as client:
        dump = list(client.connect_dump())
    assert time.monotonic() - started < 2  # stopped at the empty line, did not wait for EOF
    assert sorted((s.username, s.ip) for s in dump) == sorted(SPECS)
    assert {s.service for s in dump} == {"imap"} and {s.refcount for s in dump} == {1}
    assert len({s.pid for s in dump}) == len(SPECS)
    for s in dump:
        assert os.path.exists(f"/proc/{s.pid}")
        assert process_cmdline(s.pid).startswith(b"dovecot/imap")


def test_penalty_dump_is_empty_without_failed_logins(backend: Backend) -> None:
    with AnvilClient(backend.path) as client:
        assert list(client.penalty_dump()) == []


def test_kicks_need_protocol_2(backend: Backend) -> None:
    with AnvilClient(backend.path) as client, pytest.raises(AnvilError, match=r"2\.4"):
        client.kick_user("jane")


def test_raw_dump_ends_with_an_empty_line_and_the_connection_stays_open(backend: Backend) -> None:
    data, closed = raw(backend.path, V1 + b"CONNECT-DUMP\n")
    assert data.endswith(b"\n\n") and not closed
    assert sorted(line.split(b"\t")[0] for line in data.splitlines() if line) == sorted(
        f"imap/{ip}/{user}".encode() for user, ip in SPECS
    )


def test_empty_request_lines_are_ignored(backend: Backend) -> None:
    data, _closed = raw(backend.path, V1 + b"\n\nPENALTY-DUMP\n")
    assert data == b"\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(V1 + b"NO-SUCH-COMMAND\n", id="unknown-command"),
        pytest.param(b"VERSION\tanvil-client\t2\t0\n\nCONNECT-DUMP\n", id="v2-handshake"),
        pytest.param(b"VERSION\tanvil\t2\t0\nCONNECT-DUMP\n", id="wrong-major"),
        pytest.param(V1 + b"CONNECT-DUMP\t" + b"x" * 1100 + b"\n", id="over-1024-bytes"),
    ],
)
def test_bad_requests_get_disconnected_without_a_reply(backend: Backend, request_bytes: bytes) -> None:
    data, closed = raw(backend.path, request_bytes)
    assert (data, closed) == (b"", True)
