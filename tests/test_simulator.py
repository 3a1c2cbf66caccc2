"""The anvil simulator speaks like the real servers (reference sections 1-3 and 10), at the byte level."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from doveadm_py.anvil import AnvilClient, PenaltyRecord, parse_v1_line, parse_v2_line
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

V2_GREETING = b"VERSION\tanvil-server\t2\t0\n"
V2_HELLO = b"VERSION\tanvil-client\t2\t0\n\n"
V1_HELLO = b"VERSION\tanvil\t1\t0\n"

SECTION10_V1_DUMP = (
    b"imap/127.0.0.6/foo\t7267\t1\nimap/127.0.0.2/jano\t7259\t1\nimap/127.0.1.9/foo\t7265\t1\n"
    b"imap/127.0.0.1/jane\t7257\t1\nimap/127.0.0.3/james\t7261\t1\nimap/127.0.0.7/bar@example.org\t7269\t1\n"
    b"imap/127.0.0.5/foo\t7263\t1\n\n"
)


def section10_v1() -> list[SimSession]:
    return [parse_to_session(line) for line in SECTION10_V1_DUMP.split(b"\n")[:-2]]


def parse_to_session(line: bytes) -> SimSession:
    r = parse_v1_line(line)
    return SimSession(r.pid, r.username, r.service, r.ip, refcount=r.refcount)


def connect(sim: AnvilSimulator, timeout: float = 2.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sim.path)
    return s


def recv_until(s: socket.socket, end: bytes) -> bytes:
    """Read until the data ends with ``end`` or EOF (bounded by the socket timeout)."""
    data = b""
    while not data.endswith(end):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_to_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def exchange(sim: AnvilSimulator, request: bytes, end: bytes = b"\n\n") -> bytes:
    with connect(sim) as s:
        s.sendall(request)
        return recv_until(s, end)


@pytest.fixture
def sim1() -> Iterator[AnvilSimulator]:
    with AnvilSimulator(1, sessions=section10_v1()) as sim:
        yield sim


@pytest.fixture
def sim2() -> Iterator[AnvilSimulator]:
    sessions = [
        SimSession(
            6427,
            "foo",
            ip="127.0.0.5",
            guid="cdca6138f29e056b1b19000083ecc375",
            alt={"user_alias": "foo-alias"},
        ),
        SimSession(
            6410,
            "jane",
            "imap-login",
            "127.0.3.7",
            "2eb1af34f29e056b0a19000083ecc375",
            "127.0.0.1",
            {"user_alias": "jane-alias"},
            kick_type="A",
        ),
        SimSession(6420, "foo", ip="127.0.3.8", alt={"user_alias": "foo-alias"}),
        SimSession(6429, "foo", ip="127.0.1.5"),
        SimSession(6414, "james", ip="127.0.0.4", alt={"user_alias": "something"}),
        SimSession(6418, "bar@example.org", ip="127.0.0.7", alt={"user_alias": "something"}),
    ]
    with AnvilSimulator(2, sessions=sessions, alt_fields=["user_alias"]) as sim:
        yield sim


# -- greetings and the section 10 exchanges ----------------------------------------------------


def test_v2_greets_on_accept_and_v1_never_speaks_first(sim1: AnvilSimulator) -> None:
    with AnvilSimulator(2) as sim2, connect(sim2) as s:
        assert recv_until(s, b"\n") == V2_GREETING
    with connect(sim1, timeout=0.2) as s, pytest.raises(TimeoutError):
        s.recv(100)


def test_section10_v1_exchange(sim1: AnvilSimulator) -> None:
    assert exchange(sim1, V1_HELLO + b"CONNECT-DUMP\n") == SECTION10_V1_DUMP
    assert exchange(sim1, V1_HELLO + b"PENALTY-DUMP\n", b"\n") == b"\n"
    with connect(sim1) as s:  # the connection stays open after a dump
        s.sendall(V1_HELLO + b"CONNECT-DUMP\n")
        assert recv_until(s, b"\n\n") == SECTION10_V1_DUMP
        s.sendall(b"\n\nCONNECT-DUMP\n")  # protocol 1 ignores empty lines
        assert recv_until(s, b"\n\n") == SECTION10_V1_DUMP
    assert sim1.errors == []


def test_section10_v2_dump(sim2: AnvilSimulator) -> None:
    sim2.sessions = sim2.sessions[:2]
    assert exchange(sim2, V2_HELLO + b"CONNECT-DUMP\n") == (
        V2_GREETING + b"user_alias\n"
        b"6427\tfoo\timap\t127.0.0.5\tcdca6138f29e056b1b19000083ecc375\t\tfoo-alias\n"
        b"6410\tjane\timap-login\t127.0.3.7\t2eb1af34f29e056b0a19000083ecc375\t127.0.0.1\tjane-alias\n\n"
    )
    sim2.sessions = []  # the header keeps the field names anvil has seen
    assert exchange(sim2, V2_HELLO + b"CONNECT-DUMP\n") == V2_GREETING + b"user_alias\n\n"
    assert sim2.requests == [b"VERSION\tanvil-client\t2\t0", b"", b"CONNECT-DUMP"] * 2


def test_v2_dump_escapes_and_pads_alt_values() -> None:
    sessions = [
        SimSession(1, "a\tb", "imap", "", "0" * 31 + "1", alt={"second": "x\ny"}),
        SimSession(2, "c", "imap", "", "0" * 31 + "2", alt={"first": "f"}),
        SimSession(3, "d", "imap", "", "0" * 31 + "3"),
    ]
    with AnvilSimulator(2, sessions=sessions, alt_fields=["first", "sec\tond", "unused"]) as sim:
        sim.sessions = [
            *sessions[:1],
            SimSession(9, "e", guid="f" * 32, alt={"sec\tond": "z"}),
            *sessions[1:],
        ]
        data = exchange(sim, V2_HELLO + b"CONNECT-DUMP\n")
    lines = data.split(b"\n")
    assert lines[1] == b"first\tsec\x01tond\tunused\tsecond"  # a name only sessions use is appended
    assert lines[2] == b"1\ta\x01tb\timap\t\t" + b"0" * 31 + b"1\t\t\t\t\tx\x01ny"  # padded up to its slot
    assert lines[3] == b"9\te\timap\t\t" + b"f" * 32 + b"\t\t\tz"
    assert lines[4] == b"2\tc\timap\t\t" + b"0" * 31 + b"2\t\tf"  # only as many values as it uses
    assert lines[5] == b"3\td\timap\t\t" + b"0" * 31 + b"3\t"
    assert parse_v2_line(lines[2], 4).alt == ("", "", "", "x\ny")


def test_v1_dump_formats(sim1: AnvilSimulator) -> None:
    sim1.sessions = [
        SimSession(5, "bob", "lmtp"),
        SimSession(6, "t\tab", "pop3", "2001:db8::1", refcount=3),
    ]
    assert (
        exchange(sim1, V1_HELLO + b"CONNECT-DUMP\n") == b"lmtp/bob\t5\t1\npop3/2001:db8::1/t\x01tab\t6\t3\n\n"
    )


def test_penalty_dump_order_and_format() -> None:
    penalties = [PenaltyRecord("192.0.2.1", 3, 100, 300), PenaltyRecord("::1", 1, 50, 200)]
    with AnvilSimulator(2, penalties=penalties) as sim:
        assert (
            exchange(sim, V2_HELLO + b"PENALTY-DUMP\n")
            == V2_GREETING + b"::1\t1\t50\t200\n192.0.2.1\t3\t100\t300\n\n"
        )


# -- kicks -------------------------------------------------------------------------------------


def test_section10_kick_exchanges(sim2: AnvilSimulator) -> None:
    # foo: three signalled backend pids
    assert exchange(sim2, V2_HELLO + b"KICK-USER\tfoo\n", b"\n3\n") == V2_GREETING + b"3\n"
    assert (
        exchange(sim2, V2_HELLO + b"KICK-ALT-USER\tuser_alias\tsomething\n", b"\n2\n") == V2_GREETING + b"2\n"
    )
    assert exchange(sim2, V2_HELLO + b"KICK-USER\tnosuchuser\n", b"\n0\n") == V2_GREETING + b"0\n"
    assert sim2.kicks == [
        b"KICK-USER\tfoo",
        b"KICK-ALT-USER\tuser_alias\tsomething",
        b"KICK-USER\tnosuchuser",
    ]
    assert [s.username for s in sim2.sessions] == ["jane"]


def kick(sim: AnvilSimulator, *lines: str) -> list[int]:
    with connect(sim) as s:
        s.sendall(V2_HELLO + b"".join(line.encode() + b"\n" for line in lines))
        data = recv_until(s, b"\n")
        while data.count(b"\n") < len(lines) + 1:
            data += s.recv(100)
    return [int(n) for n in data.split(b"\n")[1:-1]]


def test_kick_types_and_counts() -> None:
    sessions = [
        SimSession(50, "a", "imap-hibernate", "192.0.2.1", "a" * 32),  # 'S', shares pid 50 with b
        SimSession(50, "b", "imap-hibernate", "192.0.2.2", "b" * 32),
        SimSession(51, "a", "imap", "192.0.2.1", "c" * 32),
        SimSession(60, "c", "imap-login", "192.0.2.3", "d" * 32, "10.0.0.1", {"f": "v"}, kick_type="A"),
        SimSession(60, "c", "imap-login", "192.0.2.4", "e" * 32, "10.0.0.1", {"f": "v"}, kick_type="A"),
        SimSession(60, "d", "imap-login", "192.0.2.5", "1" * 32, "10.0.0.1", kick_type="A"),
        SimSession(70, "e", "lmtp", kick_type="N"),
        SimSession(80, "w", "imap", kick_type="W"),
    ]
    with AnvilSimulator(2, sessions=sessions) as sim:
        assert kick(sim, "KICK-USER\ta") == [2]  # pids 50 and 51, once each
        assert sorted(s.username for s in sim.sessions) == ["c", "c", "d", "e", "w"]  # b died with pid 50
        assert kick(sim, "KICK-ALT-USER\tf\tv\t192.0.2.3") == [1]  # one 'A' session, except that IP
        assert kick(sim, "KICK-USER\tc\t" + "d" * 32) == [1]  # the GUID selects the last c session...
        sim.sessions = sessions[3:6]
        assert kick(sim, "KICK-USER\tc\t" + "D" * 32) == [2]  # ...but the process drops all of c's
        assert [s.username for s in sim.sessions] == ["d"]
        sim.sessions = sessions
        assert kick(sim, "KICK-USER\te", "KICK-USER\tw", "KICK-ALT-USER\tnofield\tv") == [0, 1, 0]
        assert "e" in [s.username for s in sim.sessions]


def test_kick_delay_replies_concurrently() -> None:
    sessions = [SimSession(i, f"u{i}") for i in range(5)]
    with AnvilSimulator(2, sessions=sessions, kick_delay=0.3) as sim:
        start = time.monotonic()
        assert kick(sim, *(f"KICK-USER\tu{i}" for i in range(5))) == [1] * 5
        elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 1.0


# -- input validation: everything the real servers disconnect for ------------------------------


@pytest.mark.parametrize(
    ("protocol", "request_bytes", "reply", "error"),
    [
        (
            2,
            b"VERSION\tanvil-client\t2\t0\nCONNECT-DUMP\n",
            V2_GREETING,
            "Invalid handshake pid: CONNECT-DUMP",
        ),
        (2, V2_HELLO + b"\n", V2_GREETING, "Anvil client sent empty line"),
        (2, V1_HELLO + b"CONNECT-DUMP\n", V2_GREETING, "not compatible with this server"),
        (2, b"VERSION\tanvil-client\t2\tx\n\n", V2_GREETING, "not compatible"),
        (2, b"VERSION\tanvil-client\t3\t0\n\n", V2_GREETING, "not compatible"),
        (2, V2_HELLO + b"NOPE\n", V2_GREETING, "Unknown command: NOPE"),
        (2, V2_HELLO + b"KICK-USER\n", V2_GREETING, "KICK-USER: Not enough parameters"),
        (2, V2_HELLO + b"KICK-USER\tfoo\tnot-a-guid\n", V2_GREETING, "KICK-USER: Invalid conn-guid"),
        (2, V2_HELLO + b"KICK-ALT-USER\tuser_alias\n", V2_GREETING, "KICK-ALT-USER: Not enough parameters"),
        (2, b"VERSION\tanvil-client\t2\t0\nimap\t1234\n", V2_GREETING, "not simulated"),
        (1, V2_HELLO + b"CONNECT-DUMP\n", b"", "not compatible with this server"),
        (1, b"\n" + V1_HELLO, b"", "not compatible"),
        (1, V1_HELLO + b"KICK-USER\tfoo\n", b"", "Unknown command: KICK-USER\tfoo"),
    ],
)
def test_bad_input_disconnects(protocol: int, request_bytes: bytes, reply: bytes, error: str) -> None:
    with AnvilSimulator(protocol) as sim, connect(sim) as s:
        s.sendall(request_bytes)
        assert recv_to_eof(s) == reply
        assert len(sim.errors) == 1 and error in sim.errors[0]


@pytest.mark.parametrize("protocol", [1, 2])
def test_line_length_limit(protocol: int) -> None:
    hello = V1_HELLO if protocol == 1 else V2_HELLO
    with AnvilSimulator(protocol) as sim:
        with connect(sim) as s:  # 1023 bytes + LF fits
            s.sendall(hello + b"PENALTY-DUMP\t" + b"x" * (1023 - 13) + b"\n")
            reply = b"\n" if protocol == 1 else V2_GREETING + b"\n"
            assert recv_until(s, reply) == reply
        assert sim.errors == []
        with connect(sim) as s:
            s.sendall(hello + b"PENALTY-DUMP\t" + b"x" * (1024 - 13) + b"\n")
            recv_to_eof(s)
        with connect(sim) as s:  # no LF in sight
            s.sendall(hello + b"y" * 2000)
            recv_to_eof(s)
    assert sim.errors == ["BUG: Anvil client connection sent too much data"] * 2


def test_requests_and_raw_bytes_are_recorded(sim2: AnvilSimulator) -> None:
    exchange(sim2, V2_HELLO + b"KICK-USER\tnobody\n", b"0\n")
    with connect(sim2) as s:
        s.sendall(b"VERSION\tanvil-client\t2\t0\n")
        recv_until(s, b"\n")
        s.sendall(b"\nPENALTY-DUMP\n")
        assert recv_until(s, b"\n") == b"\n"
    assert sim2.raw_received == [V2_HELLO + b"KICK-USER\tnobody\n", V2_HELLO + b"PENALTY-DUMP\n"]
    assert sim2.requests[-3:] == [b"VERSION\tanvil-client\t2\t0", b"", b"PENALTY-DUMP"]
    assert sim2.kicks == [b"KICK-USER\tnobody"]
    assert sim2.accepted == 2


def test_serves_many_clients_at_once(sim1: AnvilSimulator) -> None:
    sockets = [connect(sim1) for _ in range(10)]
    try:
        for s in sockets:
            s.sendall(V1_HELLO)
        for s in reversed(sockets):
            s.sendall(b"CONNECT-DUMP\n")
        assert [recv_until(s, b"\n\n") for s in sockets] == [SECTION10_V1_DUMP] * 10
    finally:
        for s in sockets:
            s.close()


# -- faults ------------------------------------------------------------------------------------


def test_fault_hang(sim1: AnvilSimulator) -> None:
    with AnvilSimulator(2, fault="hang") as sim, connect(sim, timeout=0.3) as s:
        s.sendall(V2_HELLO + b"CONNECT-DUMP\n")
        with pytest.raises(TimeoutError):
            s.recv(100)
        assert sim.requests == [] and sim.accepted == 1


def test_fault_drip(sim1: AnvilSimulator) -> None:
    sim1.fault = "drip"
    sim1.drip_interval = 0.05
    with connect(sim1) as s:
        s.sendall(V1_HELLO + b"CONNECT-DUMP\n")
        start = time.monotonic()
        received = [s.recv(100) for _ in range(4)]
        elapsed = time.monotonic() - start
    assert received == [b"i", b"m", b"a", b"p"]
    assert elapsed >= 0.14


@pytest.mark.parametrize("protocol", [1, 2])
def test_fault_close_mid_dump_cuts_a_line(protocol: int) -> None:
    sessions = [SimSession(i, f"user{i}", ip="192.0.2.1") for i in range(9)]
    with AnvilSimulator(protocol, sessions=sessions, fault="close-mid-dump") as sim, connect(sim) as s:
        s.sendall((V1_HELLO if protocol == 1 else V2_HELLO) + b"CONNECT-DUMP\n")
        data = recv_to_eof(s)
    body = data.split(b"\n")[1 if protocol == 1 else 3 :]  # after the greeting and (empty) header
    assert len(body) < len(sessions) and body[-1] and b"" not in body  # a cut line, no terminator


def test_fault_wrong_version() -> None:
    with AnvilSimulator(2, fault="wrong-version") as sim, connect(sim) as s:
        s.sendall(V2_HELLO + b"CONNECT-DUMP\n")
        assert recv_to_eof(s) == b"VERSION\tanvil-server\t3\t0\n"
    with AnvilSimulator(1, fault="wrong-version") as sim, connect(sim) as s:
        s.sendall(V1_HELLO + b"CONNECT-DUMP\n")
        assert recv_to_eof(s) == b"VERSION\tanvil-server\t3\t0\n"


def test_fault_garbage(sim1: AnvilSimulator) -> None:
    sim1.fault = "garbage"
    lines = exchange(sim1, V1_HELLO + b"CONNECT-DUMP\n").split(b"\n")
    assert lines[1] == b"garbage-line-without-a-slash\tnot-a-pid"
    assert len(lines) == len(section10_v1()) + 1 + 2


def test_greeting_delay_holds_requests() -> None:
    with AnvilSimulator(2, greeting_delay=0.3) as sim, connect(sim) as s:
        start = time.monotonic()
        s.sendall(V2_HELLO + b"PENALTY-DUMP\n")
        assert recv_until(s, b"\n\n") == V2_GREETING + b"\n"
        assert time.monotonic() - start >= 0.3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="protocol"):
        AnvilSimulator(3)
    with pytest.raises(ValueError, match="unknown fault"):
        AnvilSimulator(2, fault="explode")


# -- sessions, generate() ----------------------------------------------------------------------


def test_sessions_snapshot_and_auto_guid(sim2: AnvilSimulator) -> None:
    snapshot = sim2.sessions
    snapshot.clear()
    assert len(sim2.sessions) == 6  # reading gives a copy; assign to change
    guids = [SimSession(1, "x").guid for _ in range(100)]
    assert len(set(guids)) == 100
    assert all(len(g) == 32 and g == g.lower() and int(g, 16) >= 0 for g in guids)


@pytest.mark.parametrize("protocol", [1, 2])
def test_generate_is_deterministic_and_realistic(protocol: int) -> None:
    dumps = []
    for _ in range(2):
        with AnvilSimulator(protocol) as sim, AnvilClient(sim.path) as client:
            sim.generate(3000, users=500)
            dump = client.connect_dump()
            dumps.append((dump.alt_fields, list(dump)))
    assert dumps[0] == dumps[1]
    alt_fields, records = dumps[0]
    assert len(records) == 3000
    assert 400 <= len({r.username for r in records}) <= 500
    services = {r.service for r in records}
    assert {"imap", "pop3", "lmtp"} <= services
    assert all(r.ip == "" for r in records if r.service == "lmtp")
    assert any(":" in r.ip for r in records) and any("." in r.ip for r in records)
    assert all(socket.inet_ntop(*(ip_family(r.ip))) == r.ip for r in records if r.ip)
    if protocol == 2:
        assert alt_fields == ("user_alias",)
        assert {"submission", "imap-login", "imap-hibernate"} <= services
        assert len({r.guid for r in records}) == 3000
        assert all(r.dest_ip for r in records if r.service == "imap-login")
        assert sum(1 for r in records if r.alt) > 2000
    else:
        assert {r.refcount for r in records} == {1, 2}


def ip_family(ip: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return family, socket.inet_pton(family, ip)


def test_generated_table_can_be_kicked() -> None:
    with AnvilSimulator(2) as sim, AnvilClient(sim.path) as client:
        sim.generate(2000, users=100)
        target = "user7@example.com"
        before = [r for r in client.connect_dump() if r.username == target]
        assert before
        expected = len({r.pid for r in before if r.service not in ("lmtp", "imap-login")}) + sum(
            1 for r in before if r.service == "imap-login"
        )
        assert client.kick_user(target) == expected
        after = [r for r in client.connect_dump() if r.username == target]
        assert all(r.service == "lmtp" for r in after)


def test_large_generated_dump_is_fast() -> None:
    with AnvilSimulator(2) as sim:
        sim.generate(100_000)
        with AnvilClient(sim.path) as client:
            start = time.monotonic()
            lines = sum(len(block) for block in client.connect_dump().iter_blocks())
            assert time.monotonic() - start < 2.0
    assert lines == 100_000


def test_directory_and_cleanup(tmp_path: Path) -> None:
    with AnvilSimulator(1, directory=str(tmp_path)) as sim:
        assert sim.path == str(tmp_path / "anvil") and os.path.exists(sim.path)
    assert not os.path.exists(sim.path) and tmp_path.exists()
    sim = AnvilSimulator(1).start()
    directory = os.path.dirname(sim.path)
    sim.stop()
    assert not os.path.exists(directory)


# -- command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_command_line_serves_until_signalled(tmp_path: Path, signum: int) -> None:
    path = str(tmp_path / "sock")
    args = ["--protocol", "1", "--sessions", "500", "--socket", path, "--kick-delay", "0.1"]
    command = [sys.executable, "-m", "doveadm_py.testing.simulator", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == path + "\n"
            with AnvilClient(path) as client:
                assert client.protocol == 1
                assert sum(1 for _ in client.connect_dump()) == 500
            proc.send_signal(signum)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not os.path.exists(path)
