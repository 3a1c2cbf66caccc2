"""``dvadm kick`` against the anvil simulator: the exact 2.4 exchanges and counts of reference sections 5
and 10, dvadm's deliberate differences (the alt value that matched, pipelining, all-or-nothing dumps), and
the 2.3 path's refusals. Every run is the installed ``dvadm`` in its own process, as a user runs it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from kick_helpers import ended, nonexistent_pid, real_imap, still_running

from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

V2 = b"VERSION\tanvil-client\t2\t0\n\n"
G1, G2, G3, G4 = (c * 32 for c in "1234")
GUID_JAMES = "7c05080d589e056bf50d000083ecc375"
GUID_JANO = "1e36430d589e056bf60d000083ecc375"


def section5() -> list[SimSession]:
    """The 2.4 sessions of the worked example in reference section 5."""
    return [
        SimSession(1001, "alice", ip="192.0.2.10", guid=G1, alt={"user_account": "acct-1"}),
        SimSession(1005, "alice", ip="192.0.2.10", guid=G2, alt={"user_account": "acct-1"}),
        SimSession(2001, "bob@example.com", "imap-login", "2001:db8::5", G3, "10.0.0.7", kick_type="A"),
        SimSession(1004, "carol", "lmtp", guid=G4, kick_type="N"),
    ]


def section10() -> list[SimSession]:
    """Section 10's 2.4 instance: backends with aliases (james and bar share one), and jane and foo
    also logged in through the proxy (an imap-login session plus the backend session it opened)."""
    foo = {"user_alias": "foo-alias"}
    jane = {"user_alias": "jane-alias"}
    return [
        SimSession(6427, "foo", ip="127.0.0.5", alt=foo),
        SimSession(6425, "foo", ip="127.0.0.5", alt=foo),
        SimSession(6420, "foo", ip="127.0.3.8", alt=foo),
        SimSession(6429, "foo", ip="127.0.1.5", alt=foo),
        SimSession(6416, "foo", "imap-login", "127.0.3.8", dest_ip="127.0.0.1", alt=foo, kick_type="A"),
        SimSession(6413, "jane", ip="127.0.0.2", alt=jane),
        SimSession(6415, "jane", ip="127.0.3.7", alt=jane),
        SimSession(6410, "jane", "imap-login", "127.0.3.7", dest_ip="127.0.0.1", alt=jane, kick_type="A"),
        SimSession(6412, "jano", ip="127.0.0.3", guid=GUID_JANO),
        SimSession(6414, "james", ip="127.0.0.4", guid=GUID_JAMES, alt={"user_alias": "something"}),
        SimSession(6418, "bar@example.org", ip="127.0.0.7", alt={"user_alias": "something"}),
    ]


@pytest.fixture
def sim5() -> Iterator[AnvilSimulator]:
    with AnvilSimulator(2, sessions=section5(), alt_fields=["user_account"]) as sim:
        yield sim


@pytest.fixture
def sim10() -> Iterator[AnvilSimulator]:
    with AnvilSimulator(2, sessions=section10(), alt_fields=["user_alias"]) as sim:
        yield sim


def kick(sim: AnvilSimulator, *args: str, formatter: str | None = None) -> tuple[int, bytes, bytes]:
    pre = ("-f", formatter) if formatter else ()
    done = run_dvadm(*pre, "kick", "-a", sim.path, *args, timeout=30)
    return done.returncode, done.stdout, done.stderr


def remaining(sim: AnvilSimulator) -> list[tuple[str, str]]:
    return sorted((s.username, s.ip) for s in sim.sessions)


def counted(n: int) -> tuple[int, bytes, bytes]:
    return 0, b"%d connections kicked\n" % n, b""


# -- Dovecot 2.4 (anvil protocol 2) ----------------------------------------------------------------------


def test_fast_path_sends_exactly_doveadms_bytes(sim5: AnvilSimulator) -> None:
    assert kick(sim5, "alice") == counted(2)
    assert sim5.raw_received == [V2 + b"KICK-USER\talice\n"]
    assert sim5.requests == [b"VERSION\tanvil-client\t2\t0", b"", b"KICK-USER\talice"]
    assert remaining(sim5) == [("bob@example.com", "2001:db8::5"), ("carol", "")]


def test_fast_path_is_exact_and_case_sensitive(sim5: AnvilSimulator) -> None:
    assert kick(sim5, "ALICE") == counted(0)
    assert sim5.kicks == [b"KICK-USER\tALICE"]
    assert len(sim5.sessions) == 4


def test_slow_path_dumps_then_kicks_each_session_by_guid(sim5: AnvilSimulator) -> None:
    assert kick(sim5, "192.0.2.0/24") == counted(2)
    assert sim5.raw_received == [
        V2 + b"CONNECT-DUMP\n",
        V2 + f"KICK-USER\talice\t{G1}\nKICK-USER\talice\t{G2}\n".encode(),
    ]
    assert remaining(sim5) == [("bob@example.com", "2001:db8::5"), ("carol", "")]


def test_wildcard_takes_the_slow_path_case_insensitively(sim5: AnvilSimulator) -> None:
    assert kick(sim5, "ALIC?") == counted(2)
    assert sim5.kicks == [f"KICK-USER\talice\t{g}".encode() for g in (G1, G2)]


def test_table_formatter(sim5: AnvilSimulator) -> None:
    assert kick(sim5, "alice", formatter="table") == (
        0,
        b"count" + b" " * 37 + b"\n2" + b" " * 41 + b"\n",
        b"",
    )


@pytest.mark.parametrize(
    ("args", "count", "kicked"),
    [
        (
            ["jan?"],
            4,
            [
                "jane imap 127.0.0.2",
                "jane imap 127.0.3.7",
                "jane imap-login 127.0.3.7",
                "jano imap 127.0.0.3",
            ],
        ),
        (["foo", "127.0.0.0/24"], 2, ["foo imap 127.0.0.5", "foo imap 127.0.0.5"]),
        (["-f", "user_alias", "something"], 2, ["james imap 127.0.0.4", "bar@example.org imap 127.0.0.7"]),
        (["nosuchuser"], 0, []),
        (["-h", "127.0.0.1"], 2, ["foo imap-login 127.0.3.8", "jane imap-login 127.0.3.7"]),
    ],
    ids=["jan?", "foo+net", "-f", "nosuchuser", "-h"],
)
def test_section_10_counts(sim10: AnvilSimulator, args: list[str], count: int, kicked: list[str]) -> None:
    def table() -> Counter[str]:
        return Counter(f"{s.username} {s.service} {s.ip}" for s in sim10.sessions)

    before = table()
    assert kick(sim10, *args) == counted(count)
    assert before - table() == Counter(kicked)
    if args == ["jan?"]:
        assert f"KICK-USER\tjano\t{GUID_JANO}".encode() in sim10.kicks


def test_passdb_field_fast_path_sends_kick_alt_user(sim10: AnvilSimulator) -> None:
    assert kick(sim10, "-f", "user_alias", "something") == counted(2)
    assert sim10.raw_received == [V2 + b"KICK-ALT-USER\tuser_alias\tsomething\n"]
    assert ("james", "127.0.0.4") not in remaining(sim10)
    assert ("bar@example.org", "127.0.0.7") not in remaining(sim10)
    assert len(sim10.sessions) == len(section10()) - 2


@pytest.mark.parametrize("mask", ["some*", "SOMETHIN?", "*thing"])
def test_passdb_field_wildcard_sends_the_alt_value_not_the_username(sim10: AnvilSimulator, mask: str) -> None:
    """doveadm 2.4.2 sends the session's primary username as the alt value (so kicks nothing)."""
    assert kick(sim10, "-f", "user_alias", mask) == counted(2)
    assert sim10.raw_received[1] == V2 + b"KICK-ALT-USER\tuser_alias\tsomething\n"  # once, not per session
    assert not any(b"james" in k or b"bar@example.org" in k for k in sim10.kicks)
    assert {u for u, _ in remaining(sim10)} == {"foo", "jane", "jano"}


def test_passdb_field_value_shared_with_a_non_matching_session_goes_by_guid(sim10: AnvilSimulator) -> None:
    """KICK-ALT-USER something would also kick bar@example.org, who is outside the network."""
    assert kick(sim10, "-f", "user_alias", "some*", "127.0.0.4/32") == counted(1)
    assert sim10.kicks == [f"KICK-USER\tjames\t{GUID_JAMES}".encode()]
    assert ("bar@example.org", "127.0.0.7") in remaining(sim10)


def test_passdb_field_never_sends_an_empty_alt_value() -> None:
    """A session with an empty slot for the field has no alt username there: kick it by GUID."""
    sessions = [
        SimSession(7001, "dora", ip="192.0.2.1", guid=G1, alt={"user_other": "x"}),  # user_alias is ''
        SimSession(7002, "ed", ip="192.0.2.2", guid=G2, alt={"user_alias": "ed-alias"}),
    ]
    with AnvilSimulator(2, sessions=sessions, alt_fields=["user_alias", "user_other"]) as sim:
        assert kick(sim, "-f", "user_alias", "*") == counted(2)
        assert sorted(sim.kicks) == [
            b"KICK-ALT-USER\tuser_alias\ted-alias",
            f"KICK-USER\tdora\t{G1}".encode(),
        ]


def test_passdb_field_not_in_the_header_kicks_nothing(sim5: AnvilSimulator) -> None:
    assert kick(sim5, "-f", "user_nope", "a*") == counted(0)
    assert sim5.raw_received == [V2 + b"CONNECT-DUMP\n"]
    assert kick(sim5, "-f", "user_nope", "alice") == counted(0)  # fast path: anvil answers 0
    assert sim5.kicks == [b"KICK-ALT-USER\tuser_nope\talice"]
    assert len(sim5.sessions) == 4


@pytest.mark.parametrize("dest", ["10.0.0.7", "10.0.7"])  # the second is an inet_aton form, as 2.4 takes it
def test_dest_host_kicks_only_proxies_to_that_backend(dest: str) -> None:
    sessions = [
        *section5(),
        SimSession(2002, "bob@example.com", "imap-login", "2001:db8::6", dest_ip="10.0.0.8", kick_type="A"),
        SimSession(1009, "bob@example.com", ip="10.0.0.99"),
    ]
    with AnvilSimulator(2, sessions=sessions, alt_fields=["user_account"]) as sim:
        assert kick(sim, "-h", dest) == counted(1)
        assert sim.kicks == [f"KICK-USER\tbob@example.com\t{G3}".encode()]
        assert len(sim.sessions) == 5


def test_dest_host_must_be_an_ip(sim5: AnvilSimulator) -> None:
    code, out, err = kick(sim5, "-h", "backend.example.com")
    assert (code, out) == (75, b"")
    assert err == b"Fatal: dest-host isn't a valid IP address: 'backend.example.com'\n"
    assert sim5.accepted == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), b"user and/or ip[/bits] must be specified."),
        (("-f", "user_account"), b"Username must be given with passdb-field parameter"),
        (("-f", "user_account", "192.0.2.0/24"), b"Username must be given with passdb-field parameter"),
    ],
)
def test_usage_errors_connect_to_nothing(sim5: AnvilSimulator, args: tuple[str, ...], message: bytes) -> None:
    code, out, err = kick(sim5, *args)
    assert (code, out) == (64, b"")
    assert message in err
    assert sim5.accepted == 0


def test_kicks_are_pipelined() -> None:
    n, delay = 300, 0.01
    sessions = [SimSession(3000 + i, f"bulk{i}", ip=f"192.0.2.{i % 250}") for i in range(n)]
    with AnvilSimulator(2, sessions=sessions, kick_delay=delay) as sim:
        start = time.monotonic()
        result = kick(sim, "bulk*")
        elapsed = time.monotonic() - start
        assert result == counted(n)
        assert len(sim.kicks) == n and sim.sessions == []
    assert elapsed < n * delay * 2 / 3, f"{n} kicks took {elapsed:.2f} s: one round trip each?"


@pytest.mark.parametrize("fault", ["close-mid-dump", "garbage"])
def test_a_dump_that_fails_midway_kicks_nothing(fault: str) -> None:
    sessions = [SimSession(4000 + i, f"a{i}", ip="192.0.2.1") for i in range(50)]
    with AnvilSimulator(2, sessions=sessions, fault=fault) as sim:
        code, out, err = kick(sim, "a*")
        assert (code, out) == (75, b"")
        assert err.startswith(b"Fatal: ")
        assert sim.kicks == [] and not any(r.startswith(b"KICK") for r in sim.requests)


def test_dry_run_lists_and_kicks_nothing(sim5: AnvilSimulator) -> None:
    header = b"username              service pid  ip         dest_ip user_account\n"
    rows = b"".join(
        b"alice                 imap    %d 192.0.2.10 -       acct-1      \n" % pid for pid in (1001, 1005)
    )
    assert kick(sim5, "--dry-run", "192.0.2.0/24") == (0, header + rows, b"")
    assert kick(sim5, "--dry-run", "alice") == (0, header + rows, b"")
    assert kick(sim5, "--dry-run", "-f", "user_account", "acct-1") == (0, header + rows, b"")
    assert sim5.kicks == [] and len(sim5.sessions) == 4


def test_session_without_guid_is_not_kicked_by_name_if_that_hits_others() -> None:
    """doveadm leaves an all-zero GUID out, so its KICK-USER would kick every session of the user."""
    zero = "0" * 32
    sessions = [
        SimSession(5001, "alice", ip="192.0.2.10", guid=zero),
        SimSession(5002, "alice", ip="198.51.100.1", guid=G1),
        SimSession(5003, "dan", ip="192.0.2.11", guid=zero),
        SimSession(5004, "dan", ip="192.0.2.12", guid=G2),
    ]
    with AnvilSimulator(2, sessions=sessions) as sim:
        code, out, err = kick(sim, "192.0.2.0/24")
        assert (code, out) == (0, b"2 connections kicked\n")  # dan's two processes
        assert sim.kicks == [b"KICK-USER\tdan"]  # every dan session matched: by name, once
        assert b"not kicking alice" in err and b"1 session(s) that do not match" in err
        assert remaining(sim) == [("alice", "192.0.2.10"), ("alice", "198.51.100.1")]


def dry_run_users(out: bytes) -> list[tuple[str, str]]:
    """(username, service) of each row of a dry run's table."""
    return [tuple(line.split()[:2]) for line in out.decode().splitlines()[1:]]  # type: ignore[misc]


def test_dry_run_lists_exactly_what_the_kick_touches(sim5: AnvilSimulator) -> None:
    """The hole: ``--dry-run '*'`` listed carol's lmtp session, which anvil never kicks (type N)."""
    code, out, err = kick(sim5, "--dry-run", "*")
    assert (code, err) == (0, b"")
    assert dry_run_users(out) == [("alice", "imap"), ("alice", "imap"), ("bob@example.com", "imap-login")]
    code, out, _ = kick(sim5, "--dry-run", "carol")
    assert (code, out.split()) == (0, b"username service pid ip dest_ip user_account".split())
    assert sim5.kicks == [] and len(sim5.sessions) == 4
    # The real kick then touches the same three sessions, and never names carol.
    assert kick(sim5, "*") == counted(3)
    assert [s.username for s in sim5.sessions] == ["carol"]
    assert not any(b"carol" in k for k in sim5.kicks)


def test_dry_run_leaves_out_what_the_plan_refuses() -> None:
    """A guidless session the kick would not touch (by name it would reach a non-matching one)."""
    sessions = [
        SimSession(5001, "dave", ip="192.0.2.11", guid="0" * 32),
        SimSession(5002, "dave", ip="198.51.100.1", guid=G1),
        SimSession(5003, "erin", ip="192.0.2.12", guid=G2),
    ]
    with AnvilSimulator(2, sessions=sessions) as sim:
        code, out, err = kick(sim, "--dry-run", "192.0.2.0/24")
        assert code == 0 and dry_run_users(out) == [("erin", "imap")]
        assert b"Warning: not kicking dave" in err
        assert kick(sim, "192.0.2.0/24")[:2] == (0, b"1 connections kicked\n")
        assert [s.pid for s in sim.sessions] == [5001, 5002]


@pytest.mark.parametrize("formatter", ["json", "tab", "flow"])
def test_2_3_machine_formats_carry_only_the_format(formatter: str) -> None:
    """Nothing kicked on 2.3: stdout is the (empty) result in that format, the text goes to stderr."""
    empty = {"json": b"[]", "tab": b"result\n", "flow": b""}[formatter]
    with AnvilSimulator(1, sessions=[SimSession(nonexistent_pid(), "alice", ip="192.0.2.10")]) as sim:
        assert kick(sim, "nobody", formatter=formatter) == (68, empty, b"no users kicked\n")
        assert kick(sim, "--dry-run", "nobody", formatter=formatter)[0] == 68


def test_2_3_dry_run_exits_as_the_kick() -> None:
    """The hole: a 2.3 dry run matching nothing exited 0 where the kick exits 68."""
    with real_imap() as imap:
        sessions = [SimSession(imap.pid, "alice", ip="192.0.2.10"), SimSession(1, "init", ip="192.0.2.11")]
        with AnvilSimulator(1, sessions=sessions) as sim:
            assert kick(sim, "--dry-run", "nobody") == (
                68,
                b"username                              proto pid ip\n",
                b"",
            )
            # pid 1 would be refused: the dry run says so and does not list it.
            code, out, err = kick(sim, "--dry-run", "init")
            assert (code, out.count(b"\n")) == (68, 1)
            assert b"Warning: not signalling pid 1 (users: init)" in err
            code, out, err = kick(sim, "--dry-run", "*")
            assert (code, dry_run_users(out)) == (0, [("alice", "imap")])
        assert still_running(imap)


def test_2_3_kick_with_dest_host_points_to_proxy_kick() -> None:
    with AnvilSimulator(1, sessions=[SimSession(nonexistent_pid(), "alice", ip="192.0.2.10")]) as sim:
        code, out, err = kick(sim, "-h", "10.0.0.7")
    assert (code, out) == (64, b"")
    assert b"dvadm proxy kick -h 10.0.0.7" in err


def test_late_greeting_is_still_2_4() -> None:
    """A 2.4 anvil that greets after dvadm's grace period must not get 2.3's local signals."""
    with real_imap() as fake:
        sessions = [SimSession(fake.pid, "alice", ip="192.0.2.10", guid=G1)]
        for args in (["alice"], ["192.0.2.0/24"]):
            with AnvilSimulator(2, sessions=sessions, greeting_delay=0.1) as sim:
                assert kick(sim, *args) == counted(1)
                assert len(sim.kicks) == 1 and sim.sessions == []
        assert still_running(fake)


# -- Dovecot 2.3 (anvil protocol 1): dvadm signals, so it refuses what it cannot do safely -----------------


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("-f", "user_alias", "alice"), b"alternative usernames"),
        (("-h", "10.0.0.7"), b"proxy destinations"),
        (("-h", "10.0.0.7", "alice"), b"proxy destinations"),
    ],
)
def test_v1_refuses_2_4_options(args: tuple[str, ...], what: bytes) -> None:
    with real_imap() as fake:
        with AnvilSimulator(1, sessions=[SimSession(fake.pid, "alice", ip="192.0.2.10")]) as sim:
            code, out, err = kick(sim, *args)
            assert (code, out) == (64, b"")
            assert b"anvil protocol 1 (Dovecot 2.3)" in err and what in err
            assert set(sim.requests) <= {b"VERSION\tanvil\t1\t0", b"CONNECT-DUMP"}  # read-only
        assert still_running(fake)


def test_v1_refuses_a_tcp_anvil() -> None:
    with real_imap() as fake:
        with AnvilSimulator(1, sessions=[SimSession(fake.pid, "alice", ip="192.0.2.10")], tcp=True) as sim:
            assert sim.path.startswith("127.0.0.1:")
            code, out, err = kick(sim, "alice")
            assert (code, out) == (64, b"")
            assert f"refusing to kick through TCP anvil {sim.path}".encode() in err
            assert set(sim.requests) <= {b"VERSION\tanvil\t1\t0", b"CONNECT-DUMP"}  # read-only
        assert still_running(fake)


def test_v1_refuses_a_dump_with_a_malformed_line() -> None:
    """doveadm 2.3 skips the line and kills the rest; with a broken dump dvadm signals nothing."""
    with real_imap() as fake:
        sessions = [SimSession(fake.pid, "alice", ip="192.0.2.10"), SimSession(2**31, "bob", ip="192.0.2.11")]
        with AnvilSimulator(1, sessions=sessions) as sim:
            code, out, err = kick(sim, "*")
        assert (code, out) == (75, b"")
        assert b"1 malformed dump line(s), refusing to kick: imap/192.0.2.11/bob\t2147483648\t1" in err
        assert still_running(fake)


def test_v1_refuses_a_dump_cut_short() -> None:
    """EOF inside a line (the line-boundary case is tests/test_hostile_anvil.py's)."""
    with real_imap() as fake:
        sessions = [SimSession(fake.pid, f"u{i}", ip="192.0.2.10") for i in range(50)]
        with AnvilSimulator(1, sessions=sessions, fault="close-mid-dump") as sim:
            code, out, err = kick(sim, "--force", "u*")
        assert (code, out) == (75, b"")
        assert b"Unexpected EOF" in err
        assert still_running(fake)


def test_v1_kicks_by_signal() -> None:
    """The positive control for the refusals above: the same set-up does kick."""
    with real_imap() as fake:
        with AnvilSimulator(1, sessions=[SimSession(fake.pid, "alice", ip="192.0.2.10")]) as sim:
            assert kick(sim, "alice") == (0, b"kicked connections from the following users:\nalice \n", b"")
        assert ended(fake)


@pytest.mark.parametrize(
    ("formatter", "expected"),
    [("json", b'[{"count":"2"}]'), ("tab", b"count\n2\n"), ("flow", b"count=2\n")],
)
def test_2_4_machine_formats_carry_only_the_format(
    sim5: AnvilSimulator, formatter: str, expected: bytes
) -> None:
    assert kick(sim5, "alice", formatter=formatter) == (0, expected, b"")
