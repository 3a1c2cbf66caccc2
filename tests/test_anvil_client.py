"""AnvilClient and the record parsers, against the simulator (both protocols) and small scripted servers."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doveadm_py.anvil import (
    AnvilClient,
    AnvilError,
    AnvilProtocolError,
    KickRequest,
    PenaltyRecord,
    RequestTooLongError,
    SessionV1,
    SessionV2,
    parse_penalty_line,
    parse_v1_line,
    parse_v2_line,
)
from doveadm_py.anvil import connection as anvil_connection
from doveadm_py.anvil.generations import Generations, socket_identity
from doveadm_py.errors import EX_TEMPFAIL, EX_USAGE, TempFailError
from doveadm_py.testing.simulator import FAULTS, AnvilSimulator, SimSession

# The 2.3.19.1 instance of reference section 10, in its hash order.
V1_SESSIONS = [
    SimSession(7267, "foo", ip="127.0.0.6"),
    SimSession(7259, "jano", ip="127.0.0.2"),
    SimSession(7265, "foo", ip="127.0.1.9"),
    SimSession(7257, "jane", ip="127.0.0.1"),
    SimSession(7261, "james", ip="127.0.0.3"),
    SimSession(7269, "bar@example.org", ip="127.0.0.7"),
    SimSession(7263, "foo", ip="127.0.0.5"),
]
GUID_JANO = "1e36430d589e056bf60d000083ecc375"
# The simulator shares our GIL: on a loaded box its greeting can miss the default 2 ms grace,
# and the (correct) late-greeting fallback would add a connection to exact-byte assertions.
V2_GRACE = 1.0


def v2_sessions() -> list[SimSession]:
    """A 2.4 instance like section 10's: backends, a proxied login, an alias shared by two users."""
    return [
        SimSession(6427, "foo", ip="127.0.0.5", alt={"user_alias": "foo-alias"}),
        SimSession(6420, "foo", ip="127.0.3.8", alt={"user_alias": "foo-alias"}),
        SimSession(6416, "foo", "imap-login", "127.0.3.8", dest_ip="127.0.0.1", kick_type="A"),
        SimSession(6413, "jane", ip="127.0.0.2", alt={"user_alias": "jane-alias"}),
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
        SimSession(6412, "jano", ip="127.0.0.3", guid=GUID_JANO),
        SimSession(6414, "james", ip="127.0.0.4", alt={"user_alias": "something"}),
        SimSession(6418, "bar@example.org", ip="127.0.0.7", alt={"user_alias": "something"}),
        SimSession(6430, "foo", "lmtp", kick_type="N"),
    ]


@pytest.fixture
def sim1() -> Iterator[AnvilSimulator]:
    with AnvilSimulator(1, sessions=V1_SESSIONS) as sim:
        yield sim


@pytest.fixture
def sim2() -> Iterator[AnvilSimulator]:
    with AnvilSimulator(2, sessions=v2_sessions(), alt_fields=["user_alias"]) as sim:
        yield sim


@contextlib.contextmanager
def scripted_server(tmp_path: Path, script: Callable[[socket.socket], None]) -> Iterator[str]:
    """A one-connection server on a UNIX socket that runs ``script`` on the accepted socket."""
    path = str(tmp_path / "anvil")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(5)

    def run() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                script(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.close()
        thread.join(5)


def read_lines(conn: socket.socket, n: int) -> bytes:
    """Read until ``n`` LFs have arrived (bounded by the socket timeout)."""
    data = b""
    while data.count(b"\n") < n:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# -- record parsers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "record"),
    [
        (b"imap/127.0.0.6/foo\t7267\t1", SessionV1("imap", "127.0.0.6", "foo", 7267, 1)),
        (b"lmtp/bob@example.org\t12\t3", SessionV1("lmtp", "", "bob@example.org", 12, 3)),
        (b"imap/::1/a/b\t5\t1", SessionV1("imap", "::1", "a/b", 5, 1)),  # user with '/' after an IP
        (b"lmtp/a/b\t5\t1", SessionV1("lmtp", "", "b", 5, 1)),  # upstream's misparse: 'a' is no IP
        (b"imap/not-an-ip/u\t5\t1", SessionV1("imap", "", "u", 5, 1)),  # bad IP: unset, line kept
        (b"imap/1.2/u\t0\t1", SessionV1("imap", "1.2", "u", 0, 1)),  # inet_aton form; pid 0 parses
        (b"pop3/2001:db8::1/u\x01tx\t9\t1\textra", SessionV1("pop3", "2001:db8::1", "u\tx", 9, 1)),
        ("imap/10.0.0.1/jöhn\t1\t1".encode(), SessionV1("imap", "10.0.0.1", "jöhn", 1, 1)),
        (b"imap/10.0.0.1/\xff\t1\t1", SessionV1("imap", "10.0.0.1", "\udcff", 1, 1)),
    ],
)
def test_parse_v1_line(line: bytes, record: SessionV1) -> None:
    assert parse_v1_line(line) == record


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"no-slash\t1\t1",
        b"imap/1.2.3.4/u\t1",  # fewer than 3 fields (upstream crashes)
        b"imap/1.2.3.4/u\tx\t1",
        b"imap/1.2.3.4/u\t-1\t1",
        b"imap/1.2.3.4/u\t+1\t1",
        b"imap/1.2.3.4/u\t 1\t1",
        b"imap/1.2.3.4/u\t1\t",
        b"imap/1.2.3.4/u\t1\t1_0",
        b"imap/1.2.3.4/u\t2147483648\t1",
        b"imap/1.2.3.4/u\t1\t4294967296",
        "imap/1.2.3.4/u\t\u0661\t1".encode(),  # a non-ASCII digit
    ],
)
def test_parse_v1_line_invalid(line: bytes) -> None:
    with pytest.raises(AnvilProtocolError, match="Invalid input"):
        parse_v1_line(line)


GUID = "cdca6138f29e056b1b19000083ecc375"


@pytest.mark.parametrize(
    ("line", "n_alt", "record"),
    [
        (
            f"6427\tfoo\timap\t127.0.0.5\t{GUID}\t\tfoo-alias".encode(),
            1,
            SessionV2(6427, "foo", "imap", "127.0.0.5", GUID, "", ("foo-alias",)),
        ),
        (
            b"6410\tjane\timap-login\t127.0.3.7\t2eb1af34f29e056b0a19000083ecc375\t127.0.0.1\tjane-alias",
            1,
            SessionV2(
                6410,
                "jane",
                "imap-login",
                "127.0.3.7",
                "2eb1af34f29e056b0a19000083ecc375",
                "127.0.0.1",
                ("jane-alias",),
            ),
        ),
        (f"7\tbob\tlmtp\t\t{GUID}\t".encode(), 2, SessionV2(7, "bob", "lmtp", "", GUID, "", ())),
        (f"7\tu\timap\t::1\t{GUID.upper()}\t".encode(), 0, SessionV2(7, "u", "imap", "::1", GUID, "", ())),
        (
            f"7\tu\timap\tfe80::1%eth0\t{GUID}\t".encode(),
            0,
            SessionV2(7, "u", "imap", "fe80::1%eth0", GUID, "", ()),
        ),
        (f"7\tu\timap\t[::1]\t{GUID}\t".encode(), 0, SessionV2(7, "u", "imap", "[::1]", GUID, "", ())),
        (f"7\tu\timap\t\t{GUID}\t\ta\tb\tc".encode(), 2, SessionV2(7, "u", "imap", "", GUID, "", ("a", "b"))),
        (f"7\t\timap\t\t{GUID}\t\t\t\x01t".encode(), 2, SessionV2(7, "", "imap", "", GUID, "", ("", "\t"))),
        (f"7\tu\x01nv\timap\t\t{GUID}\t".encode(), 0, SessionV2(7, "u\nv", "imap", "", GUID, "", ())),
    ],
)
def test_parse_v2_line(line: bytes, n_alt: int, record: SessionV2) -> None:
    assert parse_v2_line(line, n_alt) == record


@pytest.mark.parametrize(
    "line",
    [
        f"7\tu\timap\t\t{GUID}".encode(),  # 5 fields
        f"x\tu\timap\t\t{GUID}\t".encode(),
        f"7\tu\timap\tnot-ip\t{GUID}\t".encode(),
        f"7\tu\timap\t\t{GUID}\tnot-ip".encode(),
        f"7\tu\timap\t\t{GUID[:-1]}\t".encode(),
        f"7\tu\timap\t\t{GUID[:-1]}g\t".encode(),
        f"7\tu\timap\t\t{GUID[:-2]}  \t".encode(),
    ],
)
def test_parse_v2_line_invalid(line: bytes) -> None:
    with pytest.raises(AnvilProtocolError, match="Invalid input"):
        parse_v2_line(line, 1)


def test_parse_penalty_line() -> None:
    assert parse_penalty_line(b"192.0.2.7\t3\t1700000000\t1700000100") == PenaltyRecord(
        "192.0.2.7", 3, 1700000000, 1700000100
    )
    assert parse_penalty_line(b"not-an-ip\t0\t0\t0").ident == "not-an-ip"
    for bad in (b"", b"1.2.3.4\t1\t2", b"1.2.3.4\tx\t2\t3", b"1.2.3.4\t1\t-2\t3"):
        with pytest.raises(AnvilProtocolError, match="Read invalid penalty line"):
            parse_penalty_line(bad)


def test_parse_speed_is_reasonable() -> None:
    """A loose bound (a slow CI box does ~1 µs/line): parsing must stay linear and cheap. CPU time,
    not wall time: on a shared, loaded machine the process may get a fraction of a core."""
    lines = [
        b"imap/10.%d.%d.%d/user%d@example.org\t%d\t1" % (i % 7, i % 200, i % 250, i, i)
        for i in range(100_000)
    ]
    start = time.process_time()
    records = [parse_v1_line(line) for line in lines]
    assert time.process_time() - start < 1.5
    assert records[99_999].pid == 99_999


# -- protocol detection and raw exchanges (section 10) -----------------------------------------


def test_v1_connect_dump_matches_doveadm_bytes(sim1: AnvilSimulator) -> None:
    with AnvilClient(sim1.path) as client:
        assert client.protocol == 1
        assert client.server_version == (1, 0)
        dump = client.connect_dump()
        assert dump.protocol == 1 and dump.alt_fields == ()
        records = list(dump)
    assert records == [SessionV1("imap", s.ip, s.username, s.pid, 1) for s in V1_SESSIONS]
    assert dump.complete and dump.invalid_lines == 0
    assert sim1.raw_received == [b"VERSION\tanvil\t1\t0\nCONNECT-DUMP\n"]
    assert sim1.requests == [b"VERSION\tanvil\t1\t0", b"CONNECT-DUMP"]
    assert sim1.errors == []


def test_v2_connect_dump_matches_doveadm_bytes(sim2: AnvilSimulator) -> None:
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        assert client.protocol == 2
        assert client.server_version == (2, 0)
        dump = client.connect_dump()
        assert dump.protocol == 2 and dump.alt_fields == ("user_alias",)
        records = list(dump)
    assert records == [
        SessionV2(s.pid, s.username, s.service, s.ip, s.guid, s.dest_ip, tuple(s.alt.values()))
        for s in sim2.sessions  # same rows (GUIDs are random per SimSession)
    ]
    assert records[2] == SessionV2(6416, "foo", "imap-login", "127.0.3.8", records[2].guid, "127.0.0.1", ())
    assert records[4].guid == "2eb1af34f29e056b0a19000083ecc375"
    assert sim2.raw_received == [b"VERSION\tanvil-client\t2\t0\n\nCONNECT-DUMP\n"]
    assert sim2.requests == [b"VERSION\tanvil-client\t2\t0", b"", b"CONNECT-DUMP"]


def test_empty_v2_dump_has_empty_header(tmp_path: Path) -> None:
    with AnvilSimulator(2) as sim, AnvilClient(sim.path) as client:
        dump = client.connect_dump()
        assert dump.alt_fields == ()
        assert list(dump) == [] and dump.complete


def test_slow_v24_greeting_falls_back_to_protocol_2() -> None:
    """With a tiny grace (not the default), a late greeting still ends in protocol 2."""
    with AnvilSimulator(2, sessions=v2_sessions(), greeting_delay=0.2) as sim:
        with AnvilClient(sim.path, greeting_grace=0.002) as client:
            assert client.protocol == 1 and not client.protocol_confirmed  # nothing within the grace
            dump = client.connect_dump()
            assert dump.protocol == 2 and client.protocol == 2 and client.protocol_confirmed
            assert len(list(dump)) == len(v2_sessions())
            assert client.kick_user("jano") == 1  # later connections speak 2 at once
        assert sim.requests == [
            b"VERSION\tanvil\t1\t0",
            b"VERSION\tanvil-client\t2\t0",
            b"",
            b"CONNECT-DUMP",
            b"VERSION\tanvil-client\t2\t0",
            b"",
            b"KICK-USER\tjano",
        ]
        assert sim.errors[0].startswith("Anvil client not compatible with this server")


@pytest.mark.parametrize(("protocol", "expected"), [(1, 1), (2, 2)])
def test_confirm_protocol(protocol: int, expected: int) -> None:
    with (
        AnvilSimulator(protocol, greeting_delay=0.2, remember=False) as sim,
        AnvilClient(sim.path, greeting_grace=0.002) as client,
    ):
        assert client.protocol == 1 and not client.protocol_confirmed
        assert client.confirm_protocol() == expected and client.protocol_confirmed
        assert client.protocol == expected
        requests = len(sim.requests)
        assert client.confirm_protocol() == expected  # free once confirmed
        assert len(sim.requests) == requests
        assert sim.requests[-1] == b"PENALTY-DUMP"
    with AnvilSimulator(2) as sim, AnvilClient(sim.path, greeting_grace=V2_GRACE) as client:
        assert client.confirm_protocol() == 2  # a prompt greeting: no probe at all
        assert sim.requests == []


@pytest.mark.parametrize("grace", [0.002, None])
def test_late_greeting_before_a_kick_is_waited_for(grace: float | None) -> None:
    with AnvilSimulator(2, sessions=v2_sessions(), greeting_delay=0.2) as sim:
        kwargs = {} if grace is None else {"greeting_grace": grace}
        with AnvilClient(sim.path, timeout=3, **kwargs) as client:
            assert client.protocol == (1 if grace else 2)  # the default grace outwaits 0.2 s
            assert client.kick_user("foo") == 3  # pids 6427, 6420 signalled; the proxy drops 1
            assert client.protocol == 2
        assert sim.errors == []  # the 2.4 server never saw a protocol 1 VERSION line


def test_kick_on_protocol_1_needs_dovecot_24(sim1: AnvilSimulator) -> None:
    with AnvilClient(sim1.path, timeout=0.3) as client:
        start = time.monotonic()
        with pytest.raises(AnvilError, match=r"needs Dovecot 2\.4"):
            client.kick_user("foo")
        assert time.monotonic() - start < 2
        assert client.protocol_confirmed
        list(client.connect_dump())
        with pytest.raises(AnvilError, match=r"needs Dovecot 2\.4"):
            client.kick_many([KickRequest.alt("user_alias", "x")])
    assert all(not r.startswith(b"KICK") for r in sim1.requests)


def test_connect_is_idempotent_and_lazy(sim2: AnvilSimulator) -> None:
    client = AnvilClient(sim2.path, greeting_grace=V2_GRACE)
    assert sim2.accepted == 0
    client.connect()
    client.connect()
    assert client.protocol == 2
    time.sleep(0.05)
    assert sim2.accepted == 1
    client.close()


def test_invalid_greetings(tmp_path: Path) -> None:
    for greeting, message in [
        (b"VERSION\tanvil-server\t3\t0\n", "Invalid VERSION line"),
        (b"VERSION\tanvil-server\t2\tx\n", "Invalid VERSION line"),
        (b"VERSION\tother\t2\t0\n", "Invalid VERSION line"),
        (b"HELLO\n", "didn't send VERSION line"),
    ]:
        with scripted_server(tmp_path, lambda conn, g=greeting: conn.sendall(g)) as path:
            with AnvilClient(path, greeting_grace=1.0) as client, pytest.raises(AnvilProtocolError) as err:
                client.connect()
            assert message in str(err.value) and path in str(err.value)
        os.unlink(tmp_path / "anvil")


def test_tcp_address(tmp_path: Path) -> None:
    with AnvilSimulator(2, sessions=v2_sessions(), tcp=True) as sim:
        assert "/" not in sim.path
        with AnvilClient(sim.path) as client:
            assert len(list(client.connect_dump())) == len(v2_sessions())


@pytest.mark.parametrize(
    ("address", "message"),
    [("localhost", "Port not known"), ("::1", r"\[::1\]:<port>"), ("host:0", "Invalid"), ("[::1", "Invalid")],
)
def test_tcp_address_errors(address: str, message: str) -> None:
    with pytest.raises(AnvilError, match=message) as err:
        AnvilClient(address).connect()
    assert err.value.exit_code == EX_USAGE


# -- connection errors -------------------------------------------------------------------------


def test_missing_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "anvil")
    with pytest.raises(AnvilError) as err:
        AnvilClient(path).connect_dump()
    assert str(err.value) == f"net_connect_unix({path}) failed: No such file or directory"
    assert err.value.exit_code == EX_TEMPFAIL and isinstance(err.value, TempFailError)


def test_connection_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "anvil")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)  # bound but not listening
        with pytest.raises(AnvilError, match=r"net_connect_unix\(.*\) failed: Connection refused"):
            AnvilClient(path).connect()
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(AnvilError, match=f"net_connect\\(127.0.0.1:{port}\\) failed: Connection refused"):
        AnvilClient(f"127.0.0.1:{port}").connect()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores socket permissions")
def test_permission_denied(sim2: AnvilSimulator) -> None:
    os.chmod(sim2.path, 0)
    with pytest.raises(AnvilError, match="Permission denied"):
        AnvilClient(sim2.path, greeting_grace=V2_GRACE).connect()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            PermissionError(13, "Permission denied"),
            "failed: Permission denied (the anvil socket is root-only",
        ),
        (TimeoutError(), "failed: timed out after 0.25 s"),
    ],
)
def test_connect_error_messages(monkeypatch: pytest.MonkeyPatch, error: OSError, message: str) -> None:
    def fail(self: socket.socket, address: object) -> None:
        raise error

    monkeypatch.setattr(socket.socket, "connect", fail)
    with pytest.raises(AnvilError) as err:
        AnvilClient("/run/dovecot/anvil", connect_timeout=0.25).connect()
    assert str(err.value).startswith(f"net_connect_unix(/run/dovecot/anvil) {message}")


# -- dumps and faults --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "garbage"])
def test_every_fault_ends_in_anvil_error_within_timeout(protocol: int, fault: str) -> None:
    sessions = [SimSession(100 + i, f"user{i}", ip="192.0.2.1", alt={"user_alias": "a"}) for i in range(30)]
    with AnvilSimulator(protocol, sessions=sessions, fault=fault) as sim:
        start = time.monotonic()
        with AnvilClient(sim.path, timeout=0.5) as client, pytest.raises(AnvilError) as err:
            list(client.connect_dump())
        elapsed = time.monotonic() - start
    assert elapsed < 1.5
    assert sim.path in str(err.value)
    if fault in ("hang", "drip", "drip-forever"):
        assert "timed out after 0.5 s" in str(err.value)
    elif fault == "close-mid-dump":
        assert "Unexpected EOF" in str(err.value)
    else:
        assert "Invalid VERSION line" in str(err.value)


def test_garbage_line_v2_stops_after_earlier_rows(sim2: AnvilSimulator) -> None:
    sim2.fault = "garbage"
    rows = []
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client, pytest.raises(AnvilProtocolError) as err:
        for row in client.connect_dump():
            rows.append(row)
    assert len(rows) == 1  # the garbage line follows the first record
    assert str(err.value) == f"{sim2.path}: Invalid input: not-a-pid\tgarbage"


def test_garbage_line_v1_is_skipped_and_reported(sim1: AnvilSimulator) -> None:
    sim1.fault = "garbage"
    seen: list[bytes] = []
    with AnvilClient(sim1.path) as client:
        dump = client.connect_dump(on_invalid=seen.append)
        records = list(dump)
    assert len(records) == len(V1_SESSIONS)
    assert dump.invalid_lines == 1 and seen == [b"garbage-line-without-a-slash\tnot-a-pid"]
    assert dump.complete


def test_v1_eof_on_a_line_boundary_ends_the_dump(tmp_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        read_lines(conn, 2)
        conn.sendall(b"imap/192.0.2.1/a\t10\t1\nimap/192.0.2.2/b\t11\t2\n")

    with scripted_server(tmp_path, script) as path, AnvilClient(path) as client:
        dump = client.connect_dump()
        assert [r.username for r in dump] == ["a", "b"]
        assert not dump.complete  # as doveadm 2.3: no error, but callers can tell


def test_v2_eof_before_terminator_raises(tmp_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"VERSION\tanvil-server\t2\t1\n")
        read_lines(conn, 3)
        conn.sendall(f"\n7\tu\timap\t\t{GUID}\t\n".encode())

    with scripted_server(tmp_path, script) as path, AnvilClient(path, greeting_grace=1.0) as client:
        assert client.server_version == (2, 1)
        rows = []
        with pytest.raises(AnvilProtocolError, match=r"read\(.*\) failed: Unexpected EOF"):
            for row in client.connect_dump():
                rows.append(row)
        assert [r.username for r in rows] == ["u"]


@pytest.mark.parametrize("first", [b"", b"imap/192.0.2.1/a\t1\t1\n"])
def test_endless_line_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: bytes) -> None:
    monkeypatch.setattr(anvil_connection, "MAX_REPLY_LINE", 10_000)

    def script(conn: socket.socket) -> None:
        read_lines(conn, 2)
        with contextlib.suppress(OSError):
            conn.sendall(first)
            time.sleep(0.05)
            for _ in range(100):
                conn.sendall(b"x" * 1000)

    with scripted_server(tmp_path, script) as path, AnvilClient(path) as client:
        with pytest.raises(AnvilProtocolError, match="line longer than 10000 bytes"):
            list(client.connect_dump())
        assert client.protocol == 1


def test_iter_lines_and_blocks_are_raw(sim2: AnvilSimulator) -> None:
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        lines = list(client.connect_dump().iter_lines())
        blocks = list(client.connect_dump().iter_blocks())
    assert len(lines) == len(v2_sessions()) and all(isinstance(line, bytes) for line in lines)
    assert [line for block in blocks for line in block] == lines
    assert lines[0].startswith(b"6427\tfoo\timap\t127.0.0.5\t")


def test_big_generated_dump_streams(tmp_path: Path) -> None:
    with AnvilSimulator(1) as sim:
        sim.generate(200_000)
        with AnvilClient(sim.path) as client:
            start = time.process_time()  # CPU of both ends (one process): load-proof, still linear
            dump = client.connect_dump()
            count = sum(1 for _ in dump)
            assert time.process_time() - start < 5
    assert count == 200_000 and dump.complete and dump.invalid_lines == 0


def test_debug_callback_logs_every_line(sim2: AnvilSimulator) -> None:
    log: list[str] = []
    with AnvilClient(sim2.path, debug=log.append, greeting_grace=V2_GRACE) as client:
        list(client.connect_dump())
    assert "anvil< VERSION\\tanvil-server\\t2\\t0" in log
    assert "anvil> VERSION\\tanvil-client\\t2\\t0" in log
    assert "anvil> CONNECT-DUMP" in log
    assert "anvil< user_alias" in log
    received = [line for line in log if line.startswith("anvil< ")]
    assert len(received) == 1 + 1 + len(v2_sessions()) + 1  # greeting, header, rows, terminator


@pytest.mark.parametrize("protocol", [1, 2])
def test_penalty_dump(protocol: int) -> None:
    penalties = [
        PenaltyRecord("192.0.2.9", 2, 1700000000, 1700000300),
        PenaltyRecord("::1", 1, 1700000001, 1700000010),
    ]
    with AnvilSimulator(protocol, penalties=penalties) as sim, AnvilClient(sim.path) as client:
        assert list(client.penalty_dump()) == sorted(penalties, key=lambda p: p.last_update)
        sim.fault = "garbage"
        with pytest.raises(AnvilProtocolError, match="Read invalid penalty line: garbage\tline"):
            list(client.penalty_dump())
    handshake = b"VERSION\tanvil\t1\t0\n" if protocol == 1 else b"VERSION\tanvil-client\t2\t0\n\n"
    assert sim.raw_received[0] == handshake + b"PENALTY-DUMP\n"


def test_empty_penalty_dump_v1_is_one_empty_line(sim1: AnvilSimulator) -> None:
    with AnvilClient(sim1.path) as client:
        assert list(client.penalty_dump()) == []


# -- kicks -------------------------------------------------------------------------------------


def test_kick_user_fast_path_bytes(sim2: AnvilSimulator) -> None:
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        assert client.kick_user("foo") == 3  # two signalled pids + the proxy's one session; lmtp is 'N'
    assert sim2.raw_received == [b"VERSION\tanvil-client\t2\t0\n\nKICK-USER\tfoo\n"]
    assert sim2.kicks == [b"KICK-USER\tfoo"]
    assert [s.username for s in sim2.sessions].count("foo") == 1  # only the lmtp session is left


def test_kick_is_exact_and_case_sensitive(sim2: AnvilSimulator) -> None:
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        assert client.kick_user("Foo") == 0
        assert client.kick_user("fo") == 0
        assert client.kick_user("nosuchuser") == 0


def test_kick_user_with_guid(sim2: AnvilSimulator) -> None:
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        assert client.kick_user("jano", GUID_JANO.upper()) == 1
        assert client.kick_user("jano", GUID_JANO) == 0  # already gone
        assert client.kick_user("foo", "0" * 32) == 3  # an all-zero GUID is left out, like doveadm
        with pytest.raises(ValueError, match="GUID"):
            client.kick_user("foo", "xyz")
    assert sim2.kicks == [f"KICK-USER\tjano\t{GUID_JANO}".encode()] * 2 + [b"KICK-USER\tfoo"]


def test_kick_alt_user(sim2: AnvilSimulator) -> None:
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        assert client.kick_alt_user("user_alias", "nothing") == 0
        assert client.kick_alt_user("no_such_field", "something") == 0
        assert client.kick_alt_user("user_alias", "something", except_ip="127.0.0.7") == 1  # james
        assert client.kick_alt_user("user_alias", "something") == 1  # bar@example.org
    assert sim2.kicks[-1] == b"KICK-ALT-USER\tuser_alias\tsomething"
    assert sim2.kicks[-2] == b"KICK-ALT-USER\tuser_alias\tsomething\t127.0.0.7"


def test_kick_many_is_pipelined() -> None:
    sessions = [SimSession(1000 + i, f"user{i}") for i in range(200)]
    with (
        AnvilSimulator(2, sessions=sessions, kick_delay=0.05) as sim,
        AnvilClient(sim.path, greeting_grace=V2_GRACE) as client,
    ):
        requests = [KickRequest.user(f"user{i}") for i in range(200)] + [KickRequest.user("nobody")]
        start = time.monotonic()
        result = client.kick_many(requests)
        elapsed = time.monotonic() - start
    assert result.connections == 200 and result.errors == []
    assert elapsed < 2.0  # one at a time would take 201 * 0.05 = 10 s
    assert sim.kicks == [f"KICK-USER\tuser{i}".encode() for i in range(200)] + [b"KICK-USER\tnobody"]
    assert sim.accepted == 1  # all on one connection
    assert sim.sessions == []


def test_kick_many_empty_sends_nothing(sim2: AnvilSimulator) -> None:
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        assert client.kick_many([]) == (0, [])
    assert sim2.accepted == 0


def test_kick_escapes_usernames_on_the_wire(sim2: AnvilSimulator) -> None:
    evil = "evil\nKICK-USER\tjane\r\x01"
    sim2.sessions = [*sim2.sessions, SimSession(9999, evil)]
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        assert client.kick_user(evil) == 1
    assert sim2.kicks == [b"KICK-USER\tevil\x01nKICK-USER\x01tjane\x01r\x011"]
    assert "jane" in [s.username for s in sim2.sessions]  # no injected second kick
    assert sim2.errors == []


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(codec="utf-8") | st.sampled_from("\t\n\r\x01/"), max_size=60))
def test_any_username_round_trips_through_kick_and_dump(name: str) -> None:
    with (
        AnvilSimulator(2, sessions=[SimSession(7, name, "imap", "::1")]) as sim,
        AnvilClient(sim.path, greeting_grace=V2_GRACE) as client,
    ):
        assert [r.username for r in client.connect_dump()] == [name]
        assert client.kick_user(name) == 1
        assert len(sim.kicks) == 1 and sim.errors == []


def test_request_too_long_is_refused_before_sending(sim2: AnvilSimulator) -> None:
    limit_user = "u" * (1024 - len("KICK-USER\t") - 1)  # exactly 1024 bytes with the LF
    with AnvilClient(sim2.path, greeting_grace=V2_GRACE) as client:
        with pytest.raises(RequestTooLongError) as err:
            client.kick_many([KickRequest.user("ok"), KickRequest.user(limit_user + "u")])
        assert err.value.exit_code == EX_USAGE and "1025 bytes" in str(err.value)
        assert sim2.accepted == 0  # not even connected
        with pytest.raises(RequestTooLongError):
            client.kick_alt_user("user_alias", "\t" * 600)  # escaping doubles it
        assert client.kick_user(limit_user) == 0  # the longest allowed line works
    assert sim2.kicks == [f"KICK-USER\t{limit_user}".encode()]
    assert sim2.errors == []


def test_unexpected_kick_reply_is_reported(tmp_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"VERSION\tanvil-server\t2\t0\n")
        read_lines(conn, 5)
        conn.sendall(b"2\n+1\n4\n")

    with scripted_server(tmp_path, script) as path, AnvilClient(path, greeting_grace=1.0) as client:
        result = client.kick_many([KickRequest.user("a"), KickRequest.user("b"), KickRequest.alt("f", "v")])
    assert result.connections == 6
    assert result.errors == ["Unexpected reply from anvil: +1"]


def test_kick_reply_timeout_returns_partial_count(tmp_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"VERSION\tanvil-server\t2\t0\n")
        read_lines(conn, 4)
        conn.sendall(b"1\n")
        time.sleep(0.7)

    with (
        scripted_server(tmp_path, script) as path,
        AnvilClient(path, greeting_grace=1.0, kick_timeout=0.3) as client,
    ):
        start = time.monotonic()
        result = client.kick_many([KickRequest.user("a"), KickRequest.user("b")])
        assert time.monotonic() - start < 0.6
    assert result.connections == 1
    assert result.errors == [
        "Failed to send kick to anvil: Anvil queries timed out after 0.300 secs - aborting queries "
        "(1 of 2 unanswered)"
    ]


def test_kick_connection_lost_mid_way(tmp_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"VERSION\tanvil-server\t2\t0\n")
        read_lines(conn, 3)
        conn.sendall(b"5\n")

    client = AnvilClient(str(tmp_path / "anvil"), greeting_grace=1.0)
    with scripted_server(tmp_path, script):
        result = client.kick_many([KickRequest.user("a"), KickRequest.user("b"), KickRequest.user("c")])
    assert result.connections == 5
    assert len(result.errors) == 1 and "Unexpected EOF (2 of 3 unanswered)" in result.errors[0]
    with pytest.raises(AnvilError, match="failed: Connection refused") as err:
        client.kick_user("d")  # a failed kick connection raises (exit 75, no count)
    assert err.value.exit_code == EX_TEMPFAIL


def test_hung_server_on_kick_connection_raises(tmp_path: Path) -> None:
    with AnvilSimulator(2, sessions=v2_sessions()) as sim, AnvilClient(sim.path, timeout=0.3) as client:
        client.connect()
        list(client.connect_dump())
        sim.fault = "hang"  # the kick connection is a new one: it gets no greeting
        start = time.monotonic()
        with pytest.raises(AnvilError, match=r"timed out after 0\.3 s waiting for anvil's VERSION line"):
            client.kick_user("foo")
        assert time.monotonic() - start < 1.0


# -- hostile servers: bounded time, bounded memory, short messages, no protocol error counted ------------

MESSAGE_MAX = 400  # an error quoting server data stays this short, however much the server sent


@pytest.mark.parametrize("protocol", [1, 2])
def test_dump_that_never_ends_fails_at_the_deadline(protocol: int) -> None:
    """Each line arrives well within the read timeout, but the dump never ends: the deadline ends it."""
    sessions = [SimSession(7, "u", ip="10.0.0.1")]
    with (
        AnvilSimulator(protocol, sessions=sessions, fault="drip-forever", drip_interval=0.002) as sim,
        AnvilClient(sim.path, greeting_grace=1.0, timeout=10, deadline=1.0) as client,
    ):
        start = time.monotonic()
        with pytest.raises(AnvilError, match=r"CONNECT-DUMP reply did not end within the 1 s deadline"):
            for _ in client.connect_dump():
                assert time.monotonic() - start < 8, "the deadline did not stop the dump"
        assert 0.9 < time.monotonic() - start < 5


def test_penalty_dump_and_greeting_are_bounded_by_the_deadline() -> None:
    penalties = [PenaltyRecord("10.0.0.1", 3, 1700000000, 1700000001)]
    with (
        AnvilSimulator(2, penalties=penalties, fault="drip-forever", drip_interval=0.002) as sim,
        AnvilClient(sim.path, greeting_grace=1.0, timeout=10, deadline=0.5) as client,
    ):
        start = time.monotonic()
        with pytest.raises(AnvilError, match=r"PENALTY-DUMP reply did not end within the 0\.5 s deadline"):
            list(client.penalty_dump())
        assert time.monotonic() - start < 5


def test_kick_pipeline_is_bounded_by_the_deadline() -> None:
    with (
        AnvilSimulator(2, sessions=v2_sessions(), kick_delay=3.0) as sim,
        AnvilClient(sim.path, greeting_grace=1.0, kick_timeout=30, deadline=0.5) as client,
    ):
        start = time.monotonic()
        result = client.kick_many([KickRequest.user("foo")])
        assert time.monotonic() - start < 2.5
    assert result.connections == 0
    assert result.errors == [
        "Failed to send kick to anvil: Anvil queries not answered within the 0.5 s deadline "
        "(1 of 1 unanswered)"
    ]


def test_kick_reply_without_newline_is_bounded() -> None:
    with (
        AnvilSimulator(2, sessions=v2_sessions(), fault="kick-no-newline") as sim,
        AnvilClient(sim.path, greeting_grace=1.0, kick_timeout=5) as client,
    ):
        start = time.monotonic()
        result = client.kick_many([KickRequest.user("foo")])
        assert time.monotonic() - start < 3
    assert result.connections == 0 and len(result.errors) == 1
    pattern = r"kick reply longer than 256 bytes: [0-9]{120}… \(\d+ bytes\) \(1 of 1"
    assert re.search(pattern, result.errors[0])
    assert len(result.errors[0]) < MESSAGE_MAX


def test_huge_kick_reply_is_quoted_as_a_short_excerpt() -> None:
    with (
        AnvilSimulator(2, sessions=v2_sessions(), fault="kick-huge-reply") as sim,
        AnvilClient(sim.path, greeting_grace=1.0) as client,
    ):
        result = client.kick_many([KickRequest.user("foo")])
        with pytest.raises(AnvilError) as err:
            client.kick_user("jane")
    assert result.connections == 0 and len(result.errors) == 1
    assert "11111" in result.errors[0] and len(result.errors[0]) < MESSAGE_MAX
    assert len(str(err.value)) < MESSAGE_MAX


@pytest.mark.parametrize("protocol", [1, 2])
def test_long_lines_in_errors_are_short_escaped_excerpts(tmp_path: Path, protocol: int) -> None:
    """A bad VERSION line or dump line full of control characters: quoted short, terminal-safe."""
    evil = b"\x1b]0;owned\x07\x1b[2J" + b"\x9b" + b"A" * 5000

    def script(conn: socket.socket) -> None:
        if protocol == 2:
            conn.sendall(b"VERSION\t" + evil + b"\n")
        else:
            read_lines(conn, 2)
            conn.sendall(evil + b"\n\n")

    invalid: list[bytes] = []
    with scripted_server(tmp_path, script) as path, AnvilClient(path, greeting_grace=1.0) as client:
        try:
            assert list(client.connect_dump(on_invalid=invalid.append)) == []
            message = str(parse_error(invalid[0]))  # 2.3 skips a malformed line; who logs this
        except AnvilProtocolError as e:
            message = str(e)
    assert len(message) < MESSAGE_MAX and "\x1b" not in message and "\x07" not in message
    assert "\\x1b]0;owned\\x07" in message and re.search(r"… \(\d{4} bytes\)$", message)


def parse_error(line: bytes) -> AnvilProtocolError:
    try:
        parse_v1_line(line)
    except AnvilProtocolError as e:
        return e
    raise AssertionError("not an invalid line")


def test_extra_kick_reply_lines_are_a_protocol_error_not_counted() -> None:
    with (
        AnvilSimulator(2, sessions=v2_sessions(), fault="kick-extra-lines") as sim,
        AnvilClient(sim.path, greeting_grace=1.0) as client,
    ):
        result = client.kick_many([KickRequest.user("jano")])
    assert result.connections == 1  # the one requested reply; not 3
    assert result.errors == [
        "anvil sent more than the 1 reply line(s) requested (protocol error, not counted): 1\\x0a1\\x0a"
    ]


def test_unrequested_line_after_the_replies_is_seen(tmp_path: Path) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"VERSION\tanvil-server\t2\t0\n")
        read_lines(conn, 3)
        conn.sendall(b"2\n")
        time.sleep(0.1)
        conn.sendall(b"7\n")  # late, and nobody asked

    with scripted_server(tmp_path, script) as path, AnvilClient(path, greeting_grace=1.0) as client:
        result = client.kick_many([KickRequest.user("a")])
    assert result.connections == 2 and len(result.errors) == 1 and "not counted): 7" in result.errors[0]


@contextlib.contextmanager
def greeting_server(tmp_path: Path, greetings: list[bytes]) -> Iterator[tuple[str, list[list[bytes]]]]:
    """Connection i greets with ``greetings[i]`` and records every line it receives (no replies but
    an empty dump); yields the path and the lines received per connection."""
    path = str(tmp_path / "anvil")
    received: list[list[bytes]] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    server.settimeout(5)

    def run() -> None:
        with contextlib.suppress(OSError):
            for greeting in greetings:
                conn, _ = server.accept()
                lines: list[bytes] = []
                received.append(lines)
                with conn:
                    conn.settimeout(2)
                    conn.sendall(greeting)
                    buf = b""
                    while data := conn.recv(4096):
                        buf += data
                        while b"\n" in buf:
                            line, buf = buf.split(b"\n", 1)
                            lines.append(line)
                            if line == b"CONNECT-DUMP":
                                conn.sendall(b"\n\n")  # no alt fields, no sessions
                                break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield path, received
    finally:
        server.close()
        thread.join(5)


def test_kick_connection_checks_the_greeting_before_sending(tmp_path: Path) -> None:
    """The dump connection greeted as 2.4; the kick connection does not: nothing may be sent on it."""
    good = b"VERSION\tanvil-server\t2\t0\n"
    with (
        greeting_server(tmp_path, [good, b"VERSION\tanvil-server\t3\t0\n"]) as (path, received),
        AnvilClient(path, greeting_grace=1.0, timeout=1.0) as client,
    ):
        assert list(client.connect_dump()) == []
        with pytest.raises(AnvilProtocolError, match="Invalid VERSION line"):
            client.kick_many([KickRequest.user("a")])
    assert received[1] == []  # not even the handshake: the greeting was checked first


# -- the generation of a socket, remembered: never a protocol 1 line to a 2.4 ----------------------------

V1_LINE = b"VERSION\tanvil\t1\t0"


def test_unknown_socket_gets_time_to_greet() -> None:
    """A loaded 2.4 that greets 0.3 s late, met for the first time: no protocol 1 line reaches it."""
    with (
        AnvilSimulator(2, sessions=v2_sessions(), greeting_delay=0.3) as sim,
        AnvilClient(sim.path) as client,
    ):
        assert len(list(client.connect_dump())) == len(v2_sessions())
    assert V1_LINE not in sim.requests and sim.errors == []


def test_known_24_socket_is_waited_for_beyond_the_grace(tmp_path: Path) -> None:
    cache = Generations(str(tmp_path / "generations"))
    with AnvilSimulator(2, sessions=v2_sessions(), greeting_delay=0.4) as sim:
        with AnvilClient(sim.path, generations=cache) as client:  # first contact: learns 2
            assert client.protocol == 2
        assert cache.lookup(socket_identity(sim.path)) == 2
        with AnvilClient(sim.path, greeting_grace=0.05, generations=Generations(cache.file)) as client:
            assert len(list(client.connect_dump())) == len(v2_sessions())
        assert V1_LINE not in sim.requests and sim.errors == []
        # Without the memory, the same short grace speaks protocol 1 to it (which 2.4 logs).
        with AnvilClient(sim.path, greeting_grace=0.05, generations=Generations(None)) as client:
            assert len(list(client.connect_dump())) == len(v2_sessions())
        assert V1_LINE in sim.requests and "not compatible" in sim.errors[0]


def test_known_23_socket_is_spoken_to_at_once(tmp_path: Path) -> None:
    cache_file = str(tmp_path / "generations")
    with AnvilSimulator(1, sessions=V1_SESSIONS, remember=False) as sim:
        start = time.monotonic()
        with AnvilClient(sim.path, greeting_grace=0.5, generations=Generations(cache_file)) as client:
            assert len(list(client.connect_dump())) == len(V1_SESSIONS)
        assert time.monotonic() - start >= 0.5  # the first contact waits for a greeting
        for _ in range(3):
            start = time.monotonic()
            with AnvilClient(sim.path, greeting_grace=0.5, generations=Generations(cache_file)) as client:
                assert client.protocol == 1 and client.protocol_confirmed
                assert len(list(client.connect_dump())) == len(V1_SESSIONS)
            assert time.monotonic() - start < 0.4
    assert sim.errors == []


def test_recreated_socket_is_a_stranger(tmp_path: Path) -> None:
    """Dovecot restarted as 2.4 at the same path: what the 2.3 socket was is not trusted."""
    cache = str(tmp_path / "generations")
    directory = str(tmp_path / "run")
    os.mkdir(directory)
    with AnvilSimulator(1, sessions=V1_SESSIONS, directory=directory, remember=False) as sim:
        with AnvilClient(sim.path, generations=Generations(cache), greeting_grace=0.05) as client:
            list(client.connect_dump())
        assert Generations(cache).lookup(socket_identity(sim.path)) == 1
    with AnvilSimulator(2, sessions=v2_sessions(), directory=directory, greeting_delay=0.3) as sim:
        with AnvilClient(sim.path, generations=Generations(cache)) as client:
            assert len(list(client.connect_dump())) == len(v2_sessions())
        assert V1_LINE not in sim.requests and sim.errors == []
        assert Generations(cache).lookup(socket_identity(sim.path)) == 2


# -- resources: whatever the caller does with a reply, its socket is closed -------------------------------


def unraisable_and_resource_warnings(action: Callable[[], None]) -> list[str]:
    """What ``action`` leaves behind once collected: ResourceWarnings, and exceptions in ``__del__``."""
    import gc
    import sys
    import warnings

    seen: list[str] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(f"unraisable: {u.exc_value!r}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            action()
            gc.collect()
        seen += [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    finally:
        sys.unraisablehook = old_hook
    return seen


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("how", ["dump-dropped", "dump-half-read", "penalty-dropped", "penalty-half-read"])
def test_dropped_replies_close_their_sockets(protocol: int, how: str) -> None:
    penalties = [PenaltyRecord(f"10.0.0.{i}", 1, 1, 1) for i in range(3)]
    sessions = V1_SESSIONS if protocol == 1 else v2_sessions()
    with AnvilSimulator(protocol, sessions=sessions, penalties=penalties) as sim:

        def action() -> None:
            client = AnvilClient(sim.path)  # also dropped unclosed, with its idle connection
            reply = client.connect_dump() if how.startswith("dump") else client.penalty_dump()
            if how.endswith("half-read"):
                next(iter(reply))

        assert unraisable_and_resource_warnings(action) == []


def test_penalty_dump_is_a_context_manager(sim2: AnvilSimulator) -> None:
    sim2.penalties = [PenaltyRecord("10.0.0.1", 1, 1, 1)]
    with AnvilClient(sim2.path) as client:
        with client.penalty_dump() as records:
            assert next(records).ident == "10.0.0.1"
        with pytest.raises(StopIteration):
            next(records)  # closed: no more records, no socket
