"""``dvadm who`` against the anvil simulator, for both generations (reference sections 2, 4, 5, 7, 10).

The worked examples of section 5 are reproduced row for row. ``who -1`` must match byte for byte, since
doveadm measures up to 100 rows there as well. For aggregated ``who``, doveadm sizes the table from its
first row only, so the rows are compared field by field. As a separate check, dvadm's rows, fed to the
table printer with ``buffer_rows=1``, must give doveadm's exact bytes. Most tests run the app in-process,
which is fast; the tests that are about the real CLI (the spec examples, streaming memory) run the
installed ``dvadm`` script.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

from doveadm_py.app import DvadmApp
from doveadm_py.output.table import TableFormatter
from doveadm_py.sessionview import AGGREGATED_V1, AGGREGATED_V2
from doveadm_py.testing.cli import dvadm_executable, run_dvadm
from doveadm_py.testing.simulator import AnvilSimulator, SimSession


class Result(NamedTuple):
    code: int
    out: str
    err: str


def dvadm(sim: AnvilSimulator | str, *argv: str) -> Result:
    """``dvadm ARGV -a <sim>`` in-process (the ``-a`` goes last: options may follow masks)."""
    out, err = io.StringIO(), io.StringIO()
    path = sim if isinstance(sim, str) else sim.path
    code = DvadmApp(stdout=out, stderr=err).run([*argv, "-a", path])
    return Result(code, out.getvalue(), err.getvalue())


def tab_rows(text: str) -> list[list[str]]:
    """``-f tab`` output without its title line."""
    return [line.split("\t") for line in text.splitlines()[1:]]


def fields(text: str) -> list[list[str]]:
    """A table's lines split on whitespace (for comparing tables whose widths differ by design)."""
    return [line.split() for line in text.splitlines()]


# -- section 5 worked examples -----------------------------------------------------------------------------

SEC5_V2 = [
    SimSession(1001, "alice", "imap", "192.0.2.10", alt={"user_account": "acct-1"}),
    SimSession(1005, "alice", "imap", "192.0.2.10", alt={"user_account": "acct-1"}),
    SimSession(2001, "bob@example.com", "imap-login", "2001:db8::5", dest_ip="10.0.0.7"),
    SimSession(1004, "carol", "lmtp", ""),
]
SEC5_V2_WHO = (
    "username # service (pids)      (ips)                         \n"
    "alice    2 imap    (1001 1005) (192.0.2.10)                  \n"
    "bob@example.com 1 imap-login (2001)      (2001:db8::5)                 \n"
    "carol    1 lmtp    (1004)      ()                            \n"
)
SEC5_V2_WHO_1 = (
    "username               service    pid  ip          dest_ip  user_account\n"
    "alice                  imap       1001 192.0.2.10  -        acct-1      \n"
    "alice                  imap       1005 192.0.2.10  -        acct-1      \n"
    "bob@example.com        imap-login 2001 2001:db8::5 10.0.0.7 -           \n"
    "carol                  lmtp       1004 -           -        -           \n"
)
SEC5_V2_FLOW_FIRST = "username=alice service=imap pid=1001 ip=192.0.2.10 dest_ip= user_account=acct-1\n"

SEC5_V1 = [
    SimSession(1001, "alice", "imap", "192.0.2.10", refcount=2),
    SimSession(1002, "bob@example.com", "imap", "2001:db8::5"),
    SimSession(1003, "alice", "pop3", "192.0.2.10"),
    SimSession(1004, "carol", "lmtp", ""),
]
SEC5_V1_WHO = (
    "username # proto (pids) (ips)                             \n"
    "alice    2 imap  (1001) (192.0.2.10)                      \n"
    "bob@example.com 1 imap  (1002) (2001:db8::5)                     \n"
    "alice    1 pop3  (1003) (192.0.2.10)                      \n"
    "carol    1 lmtp  (1004) ()                                \n"
)
SEC5_V1_WHO_1 = (
    "username                             proto pid  ip         \n"
    "alice                                imap  1001 192.0.2.10 \n"
    "alice                                imap  1001 192.0.2.10 \n"
    "bob@example.com                      imap  1002 2001:db8::5\n"
    "alice                                pop3  1003 192.0.2.10 \n"
    "carol                                lmtp  1004            \n"
)


@pytest.fixture(scope="module")
def sec5_v2() -> Iterator[AnvilSimulator]:
    with AnvilSimulator(2, sessions=SEC5_V2, alt_fields=["user_account"]) as sim:
        yield sim


@pytest.fixture(scope="module")
def sec5_v1() -> Iterator[AnvilSimulator]:
    with AnvilSimulator(1, sessions=SEC5_V1) as sim:
        yield sim


def test_sec5_v2_who_1_is_byte_exact_through_the_cli(sec5_v2: AnvilSimulator) -> None:
    proc = run_dvadm("who", "-1", "-a", sec5_v2.path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode() == SEC5_V2_WHO_1


def test_sec5_v2_who_rows_match_field_by_field(sec5_v2: AnvilSimulator) -> None:
    proc = run_dvadm("who", "-a", sec5_v2.path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    ours = proc.stdout.decode()
    assert fields(ours) == fields(SEC5_V2_WHO)
    # dvadm measures every buffered row, so its columns line up where doveadm's overflow.
    assert ours.splitlines()[2] == "bob@example.com 1 imap-login (2001)      (2001:db8::5)             "


def test_sec5_v2_who_rows_give_doveadms_bytes_when_measured_like_doveadm(sec5_v2: AnvilSimulator) -> None:
    rows = tab_rows(dvadm(sec5_v2, "-f", "tab", "who").out)
    out = io.StringIO()
    TableFormatter(out, generation=2, buffer_rows=1, width=80).write(AGGREGATED_V2, rows)
    assert out.getvalue() == SEC5_V2_WHO


def test_sec5_v2_flow_first_row(sec5_v2: AnvilSimulator) -> None:
    result = dvadm(sec5_v2, "-f", "flow", "who", "-1")
    assert result.code == 0
    assert result.out.splitlines(keepends=True)[0] == SEC5_V2_FLOW_FIRST
    assert len(result.out.splitlines()) == len(SEC5_V2)


def test_sec5_v2_json_keeps_empty_values_and_alt_keys(sec5_v2: AnvilSimulator) -> None:
    rows = json.loads(dvadm(sec5_v2, "-f", "json", "who", "-1").out)
    assert rows[3] == {
        "username": "carol",
        "service": "lmtp",
        "pid": "1004",
        "ip": "",
        "dest_ip": "",
        "user_account": "",
    }
    assert [row["user_account"] for row in rows] == ["acct-1", "acct-1", "", ""]


def test_sec5_v1_who_1_is_byte_exact_and_repeats_refcount(sec5_v1: AnvilSimulator) -> None:
    proc = run_dvadm("who", "-1", "-a", sec5_v1.path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode() == SEC5_V1_WHO_1


def test_sec5_v1_who_sums_refcounts(sec5_v1: AnvilSimulator) -> None:
    result = dvadm(sec5_v1, "who")
    assert result.code == 0
    assert fields(result.out) == fields(SEC5_V1_WHO)
    rows = tab_rows(dvadm(sec5_v1, "-f", "tab", "who").out)
    out = io.StringIO()
    TableFormatter(out, generation=1, buffer_rows=1, width=80).write(AGGREGATED_V1, rows)
    assert out.getvalue() == SEC5_V1_WHO


def test_sec5_v1_other_printers(sec5_v1: AnvilSimulator) -> None:
    tab = dvadm(sec5_v1, "-f", "tab", "who").out
    assert tab.startswith("username\t#\tproto\t(pids)\t(ips)\nalice\t2\timap\t(1001)\t(192.0.2.10)\n")
    flow = dvadm(sec5_v1, "-f", "flow", "who").out
    assert flow.startswith("username=alice #=2 proto=imap (pids)=(1001) (ips)=(192.0.2.10)\n")
    objects = json.loads(dvadm(sec5_v1, "-f", "json", "who").out)  # valid, unlike doveadm 2.3's
    assert objects[0] == {
        "username": "alice",
        "connections": "2",
        "service": "imap",
        "pids": "(1001)",
        "ips": "(192.0.2.10)",
    }
    assert len(objects) == 4


# -- 2.4 -f passdb_field (section 4; section 10 observations) ----------------------------------------------

SEC10_V2 = [
    SimSession(6427, "foo", "imap", "127.0.0.5", alt={"user_alias": "foo-alias"}),
    SimSession(
        6410, "jane", "imap-login", "127.0.3.7", dest_ip="127.0.0.1", alt={"user_alias": "jane-alias"}
    ),
    SimSession(6416, "foo", "imap-login", "127.0.3.8", dest_ip="127.0.0.1", alt={"user_alias": "foo-alias"}),
    SimSession(6413, "jane", "imap", "127.0.0.2", alt={"user_alias": "jane-alias"}),
    SimSession(6415, "jane", "imap", "127.0.3.7", alt={"user_alias": "jane-alias"}),
    SimSession(6420, "foo", "imap", "127.0.3.8", alt={"user_alias": "foo-alias"}),
    SimSession(6425, "foo", "imap", "127.0.1.5", alt={"user_alias": "foo-alias"}),
    SimSession(6429, "foo", "imap", "127.0.0.5", alt={"user_alias": "foo-alias"}),
    SimSession(6431, "james", "imap", "127.0.0.3", alt={"user_alias": "something"}),
    SimSession(6433, "bar@example.org", "imap", "127.0.0.7", alt={"user_alias": "something"}),
    SimSession(6435, "jano", "imap", "127.0.0.2"),  # no alias: its line has no alt value at all
]


@pytest.fixture(scope="module")
def sec10_v2() -> Iterator[AnvilSimulator]:
    with AnvilSimulator(2, sessions=SEC10_V2, alt_fields=["user_alias"]) as sim:
        yield sim


def test_sec10_v2_aggregated_rows(sec10_v2: AnvilSimulator) -> None:
    rows = fields(dvadm(sec10_v2, "who").out)
    assert rows[0] == ["username", "#", "service", "(pids)", "(ips)"]
    # The three rows section 10 shows (its dump excerpt is partial, so only these are checked).
    assert ["foo", "1", "imap-login", "(6416)", "(127.0.3.8)"] in rows
    assert ["jane", "2", "imap", "(6413", "6415)", "(127.0.0.2", "127.0.3.7)"] in rows
    assert [
        "foo",
        "4",
        "imap",
        "(6427",
        "6420",
        "6425",
        "6429)",
        "(127.0.0.5",
        "127.0.3.8",
        "127.0.1.5)",
    ] in rows


def test_alt_field_selects_sessions_for_who_1(sec10_v2: AnvilSimulator) -> None:
    result = dvadm(sec10_v2, "-f", "tab", "who", "-1", "-f", "user_alias", "something")
    assert result.code == 0
    assert [row[0] for row in tab_rows(result.out)] == ["james", "bar@example.org"]
    wild = dvadm(sec10_v2, "-f", "tab", "who", "-1", "-f", "user_alias", "SOME*")
    assert tab_rows(wild.out) == tab_rows(result.out)


def test_alt_field_and_network_are_anded(sec10_v2: AnvilSimulator) -> None:
    result = dvadm(sec10_v2, "-f", "tab", "who", "-1", "-f", "user_alias", "foo-*", "127.0.0.0/24")
    assert [(row[0], row[2]) for row in tab_rows(result.out)] == [("foo", "6427"), ("foo", "6429")]


def test_aggregated_who_matches_masks_against_the_username_not_the_alt(sec10_v2: AnvilSimulator) -> None:
    by_alias = dvadm(sec10_v2, "who", "-f", "user_alias", "something")
    assert by_alias.code == 0
    assert by_alias.out == dvadm(sec10_v2, "who", "nobody-at-all").out  # only the header
    assert fields(by_alias.out) == [["username", "#", "service", "(pids)", "(ips)"]]
    by_name = dvadm(sec10_v2, "-f", "tab", "who", "-f", "user_alias", "james")
    assert [row[0] for row in tab_rows(by_name.out)] == ["james"]


def test_alt_field_without_mask_is_ignored(sec10_v2: AnvilSimulator) -> None:
    for extra in ((), ("-1",)):
        plain = dvadm(sec10_v2, "who", *extra)
        ignored = dvadm(sec10_v2, "who", *extra, "-f", "user_alias")
        assert ignored == plain and ignored.code == 0
        assert len(ignored.out.splitlines()) > 1


def test_alt_field_not_in_header_gives_header_only(sec10_v2: AnvilSimulator) -> None:
    result = dvadm(sec10_v2, "who", "-1", "-f", "user_nosuch", "*")
    assert result.code == 0 and result.err == ""
    assert fields(result.out) == [["username", "service", "pid", "ip", "dest_ip", "user_alias"]]


def test_alt_field_needs_the_index_on_the_line() -> None:
    """A line without that header index fails; an empty value at an existing index is a value (section 4)."""
    sessions = [
        SimSession(1, "a", ip="192.0.2.1", alt={"user_alias": "x"}),
        SimSession(2, "b", ip="192.0.2.2", alt={"user_account": "y"}),  # user_alias sent as ""
        SimSession(3, "c", ip="192.0.2.3"),  # no alt values on the line
    ]
    with AnvilSimulator(2, sessions=sessions, alt_fields=["user_alias", "user_account"]) as sim:
        star = dvadm(sim, "-f", "tab", "who", "-1", "-f", "user_alias", "*")
        assert [row[0] for row in tab_rows(star.out)] == ["a", "b"]
        account = dvadm(sim, "-f", "tab", "who", "-1", "-f", "user_account", "*")
        assert [row[0] for row in tab_rows(account.out)] == ["b"]
        padded = tab_rows(dvadm(sim, "-f", "tab", "who", "-1").out)
        assert padded == [
            ["a", "imap", "1", "192.0.2.1", "", "x", ""],
            ["b", "imap", "2", "192.0.2.2", "", "", "y"],
            ["c", "imap", "3", "192.0.2.3", "", "", ""],
        ]


def test_alt_field_on_a_23_server_needs_24(sec5_v1: AnvilSimulator) -> None:
    for extra in ((), ("-1",)):
        result = dvadm(sec5_v1, "who", *extra, "-f", "user_alias", "alice")
        assert (result.code, result.out) == (64, "")
        assert result.err.startswith("Error: ") and "2.4" in result.err and "-f" in result.err


def test_alt_field_works_when_the_24_greeting_is_late() -> None:
    """A slow 2.4 greeting must not look like 2.3: a first contact waits for it."""
    with AnvilSimulator(2, sessions=SEC10_V2, alt_fields=["user_alias"], greeting_delay=0.2) as sim:
        result = dvadm(sim, "-f", "tab", "who", "-1", "-f", "user_alias", "something")
        assert (result.code, result.err) == (0, "")
        assert [row[0] for row in tab_rows(result.out)] == ["james", "bar@example.org"]
        assert b"VERSION\tanvil\t1\t0" not in sim.requests and sim.errors == []


# -- broken dumps (section 2, section 7) -------------------------------------------------------------------

SIX = [SimSession(1000 + i, f"u{i}", "imap", f"192.0.2.{i}") for i in range(6)]


@pytest.mark.parametrize("extra", [(), ("-1",)], ids=["aggregated", "separate"])
def test_v2_malformed_line_prints_rows_read_then_exits_75(extra: tuple[str, ...]) -> None:
    with AnvilSimulator(2, sessions=SIX, fault="garbage") as sim:  # garbage after the first line
        result = dvadm(sim, "-f", "tab", "who", *extra)
    assert result.code == 75
    assert [row[0] for row in tab_rows(result.out)] == ["u0"]
    assert result.err.startswith("Fatal: ") and "Invalid input: not-a-pid\tgarbage" in result.err


@pytest.mark.parametrize("extra", [(), ("-1",)], ids=["aggregated", "separate"])
def test_v2_eof_mid_line_exits_75_after_the_rows_read(extra: tuple[str, ...]) -> None:
    with AnvilSimulator(2, sessions=SIX, fault="close-mid-dump") as sim:
        result = dvadm(sim, "-f", "tab", "who", *extra)
    assert result.code == 75
    users = [row[0] for row in tab_rows(result.out)]
    assert 0 < len(users) < len(SIX) and users == [f"u{i}" for i in range(len(users))]
    assert "Unexpected EOF" in result.err


def test_v1_malformed_line_is_skipped_with_invalid_input() -> None:
    with AnvilSimulator(1, sessions=SIX, fault="garbage") as sim:
        for extra in ((), ("-1",)):
            result = dvadm(sim, "-f", "tab", "who", *extra)
            assert result.code == 0
            assert [row[0] for row in tab_rows(result.out)] == [s.username for s in SIX]
            assert result.err == "Error: Invalid input: garbage-line-without-a-slash\tnot-a-pid\n"


class OneShotAnvil:
    """A UNIX socket that answers one connection with fixed bytes, then closes it (no terminator needed)."""

    def __init__(self, path: str, reply: bytes, greeting: bytes = b"") -> None:
        self.path, self.reply, self.greeting = path, reply, greeting
        self.received = b""
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(path)
        self._server.listen(1)
        self._server.settimeout(5)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            conn.sendall(self.greeting)
            while b"CONNECT-DUMP\n" not in self.received:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                self.received += chunk
            conn.sendall(self.reply)

    def close(self) -> None:
        self._thread.join(6)
        self._server.close()


@pytest.mark.parametrize(
    ("greeting", "reply", "code", "users"),
    [
        (b"", b"imap/192.0.2.1/ann\t10\t1\nimap/192.0.2.2/ben\t11\t1\n", 0, ["ann", "ben"]),
        (
            b"VERSION\tanvil-server\t2\t0\n",
            b"\n10\tann\timap\t192.0.2.1\t"
            + b"a" * 32
            + b"\t\n11\tben\timap\t192.0.2.2\t"
            + b"b" * 32
            + b"\t\n",
            75,
            ["ann", "ben"],
        ),
    ],
    ids=["v1-eof-is-the-end", "v2-eof-is-an-error"],
)
def test_eof_before_the_terminator(
    tmp_path: Path, greeting: bytes, reply: bytes, code: int, users: list[str]
) -> None:
    server = OneShotAnvil(f"{tmp_path}/anvil", reply, greeting)
    try:
        result = dvadm(server.path, "-f", "tab", "who", "-1")
    finally:
        server.close()
    assert result.code == code, result.err
    assert [row[0] for row in tab_rows(result.out)] == users
    if code:
        assert "Unexpected EOF" in result.err
    else:
        assert result.err == ""


# -- masks (section 4) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("masks", [("10.0.0.0/33",), ("::1/129",)])
def test_bad_network_masks_exit_64_before_connecting(masks: tuple[str, ...]) -> None:
    with AnvilSimulator(2, sessions=SIX) as sim:
        result = dvadm(sim, "who", *masks)
        assert (result.code, result.out) == (64, "")
        assert result.err.startswith("Error: ")
        assert sim.accepted == 0


@pytest.mark.parametrize("command", [("who",), ("kick", "jane")])
@pytest.mark.parametrize("protocol", [1, 2])
def test_two_networks_in_the_servers_words_without_a_dump(protocol: int, command: tuple[str, ...]) -> None:
    """doveadm 2.4 words it on its command's event ("cmd kick: ..."); nothing is dumped or kicked."""
    words = f"cmd {command[0]}: " if protocol == 2 else ""
    with AnvilSimulator(protocol, sessions=SIX) as sim:
        result = dvadm(sim, *command, "10.0.0.0/8", "192.0.2.0/24")
        assert (result.code, result.out) == (64, "")
        assert result.err == f"Error: {words}Multiple network masks not supported\n"
        assert b"CONNECT-DUMP" not in sim.requests and sim.kicks == []


IP_SESSIONS = [
    SimSession(1, "mapped", "imap", "::ffff:192.0.2.1"),
    SimSession(2, "six", "imap", "2001:db8::1"),
    SimSession(3, "four", "imap", "192.0.2.9"),
    SimSession(4, "mixed", "imap", "10.0.0.1"),
    SimSession(5, "mixed", "imap", "192.0.2.200"),
    SimSession(6, "mixed", "pop3", "10.0.0.2"),
    SimSession(7, "nobody-ip", "lmtp", ""),
]


@pytest.fixture(scope="module", params=[1, 2], ids=["v1", "v2"])
def ip_sim(request: pytest.FixtureRequest) -> Iterator[AnvilSimulator]:
    with AnvilSimulator(request.param, sessions=IP_SESSIONS) as sim:
        yield sim


@pytest.mark.parametrize(
    ("mask", "users"),
    [
        ("192.0.2.0/24", ["mapped", "four", "mixed"]),  # IPv4-mapped client IPs match IPv4 networks
        ("::ffff:192.0.2.0/120", []),  # ...but the network itself is not converted
        ("2001:db8::/32", ["six"]),
        ("[2001:db8::1]", ["six"]),
        ("0.0.0.0/0", [s.username for s in IP_SESSIONS]),  # /0 means no network filter
    ],
)
def test_ipv6_and_mapped_client_ips(ip_sim: AnvilSimulator, mask: str, users: list[str]) -> None:
    result = dvadm(ip_sim, "-f", "tab", "who", "-1", mask)
    assert result.code == 0, result.err
    assert [row[0] for row in tab_rows(result.out)] == users


def test_aggregated_keeps_a_user_with_any_ip_in_the_network_and_shows_all(ip_sim: AnvilSimulator) -> None:
    rows = tab_rows(dvadm(ip_sim, "-f", "tab", "who", "192.0.2.0/24").out)
    assert [row[0] for row in rows] == ["mapped", "four", "mixed"]
    assert rows[2][1:] == ["2", "imap", "(4 5)", "(10.0.0.1 192.0.2.200)"]  # (mixed, pop3) has no match
    per_session = tab_rows(dvadm(ip_sim, "-f", "tab", "who", "-1", "mixed", "192.0.2.0/24").out)
    assert [row[2] for row in per_session] == ["5"]


def test_sessions_without_ip_show_empty_parentheses(ip_sim: AnvilSimulator) -> None:
    rows = tab_rows(dvadm(ip_sim, "-f", "tab", "who", "nobody-ip").out)
    assert rows == [["nobody-ip", "1", "lmtp", "(7)", "()"]]


def test_empty_usernames_aggregate_per_service_and_ip() -> None:
    """Upstream's key for an empty username is undefined; dvadm groups by (service, IP), never with users."""
    sessions = [
        SimSession(1, "", "imap", "192.0.2.1"),
        SimSession(2, "", "imap", "192.0.2.1"),
        SimSession(3, "", "imap", "192.0.2.2"),
        SimSession(4, "", "lmtp", ""),
        SimSession(5, "", "lmtp", ""),
        SimSession(6, "x", "imap", "192.0.2.1"),
    ]
    with AnvilSimulator(2, sessions=sessions) as sim:
        rows = tab_rows(dvadm(sim, "-f", "tab", "who").out)
        assert rows == [
            ["", "2", "imap", "(1 2)", "(192.0.2.1)"],
            ["", "1", "imap", "(3)", "(192.0.2.2)"],
            ["", "2", "lmtp", "(4 5)", "()"],
            ["x", "1", "imap", "(6)", "(192.0.2.1)"],
        ]
        assert tab_rows(dvadm(sim, "-f", "tab", "who", "*").out) == rows  # '*' matches the empty name
        assert [r[0] for r in tab_rows(dvadm(sim, "-f", "tab", "who", "?*").out)] == ["x"]
        table = dvadm(sim, "who", "-1").out.splitlines()
        assert table[1].startswith("- ") and len(table) == len(sessions) + 1  # 2.4 prints "" as "-"


# -- order and streaming -----------------------------------------------------------------------------------


def shuffled_sessions() -> list[SimSession]:
    names = ["zed", "amy", "mia", "amy", "zed", "bob", "amy"]
    return [SimSession(100 + i, name, "imap", f"192.0.2.{i}") for i, name in enumerate(names)]


@pytest.mark.parametrize("protocol", [1, 2])
def test_order_is_dump_order_and_first_seen(protocol: int) -> None:
    sessions = shuffled_sessions()
    with AnvilSimulator(protocol, sessions=sessions) as sim:
        separate = dvadm(sim, "-f", "tab", "who", "-1")
        assert [int(row[2]) for row in tab_rows(separate.out)] == [s.pid for s in sessions]
        aggregated = dvadm(sim, "-f", "tab", "who")
        assert [row[0] for row in tab_rows(aggregated.out)] == ["zed", "amy", "mia", "bob"]
        assert tab_rows(aggregated.out)[1][3:] == ["(101 103 106)", "(192.0.2.1 192.0.2.3 192.0.2.6)"]
        assert dvadm(sim, "-f", "tab", "who") == aggregated  # deterministic run to run


PEAK_RSS = """\
import resource, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
rows = shaped = 0
header = proc.stdout.readline()
for line in proc.stdout:
    rows += 1
    shaped += line.count(b"\\t") == 5
code = proc.wait()
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest waited-for child
print(header.decode().rstrip("\\n"), rows, shaped, code, peak, sep="|")
"""


@pytest.mark.slow
def test_who_1_streams_200k_sessions_in_bounded_memory() -> None:
    """The child's peak RSS, measured in a fresh interpreter, stays under 64 MiB for 200k rows."""
    n = 200_000
    with AnvilSimulator(2) as sim:
        sim.generate(n)
        argv = [dvadm_executable(), "-f", "tab", "who", "-1", "-a", sim.path]
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *argv], capture_output=True, timeout=120, check=True
        )
    header, rows, shaped, code, peak_kib = done.stdout.decode().strip().split("|")
    assert header == "username\tservice\tpid\tip\tdest_ip\tuser_alias"
    assert (int(rows), int(shaped), int(code)) == (n, n, 0)
    assert int(peak_kib) < 64 * 1024, f"peak RSS {int(peak_kib) / 1024:.1f} MiB"


def test_filters_apply_per_line_on_a_generated_dump() -> None:
    """A bigger dump through filters: counts agree with the simulator's own table."""
    with AnvilSimulator(2) as sim:
        sim.generate(3000)
        table: Sequence[SimSession] = sim.sessions
        result = dvadm(sim, "-f", "tab", "who", "-1", "user1*@example.org", "10.0.0.0/8")
        want = [
            s.pid
            for s in table
            if s.username.startswith("user1")
            and s.username.endswith("@example.org")
            and s.ip.startswith("10.")
        ]
        assert want and [int(row[2]) for row in tab_rows(result.out)] == want
