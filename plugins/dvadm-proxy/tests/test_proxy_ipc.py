"""Dovecot 2.3's ipc protocol against a scripted fake ipc socket: the exact bytes sent, doveadm's
printing quirks, and every fault a hostile or broken server can produce (bounded, one line, 75)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest
from fake_ipc import FakeIpc

RunDvadm = Callable[..., subprocess.CompletedProcess[bytes]]
# Short enough for the fault tests, long enough that a loaded machine still delivers real replies.
FAST = ("-o", "dvadm_ipc_timeout=2", "-o", "dvadm_ipc_deadline=5")

HEADER = b":username\tuser_alias\tservice\tsrc-ip\tdest-ip\tdest-port\n"
LIST_REPLY = (
    HEADER
    + b":jane\tjane-a\timap\t192.0.2.7\t10.0.0.1\t143\n"
    + HEADER
    + b":bob\t\timap\t2001:db8::5\t10.0.0.2\t143\n"
    + b"+\n"
)


def test_list_table_takes_the_first_header_and_shows_the_others_as_rows(dvadm: RunDvadm) -> None:
    with FakeIpc(LIST_REPLY) as ipc:
        proc = dvadm("proxy", "list", "-a", ipc.path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert ipc.received == [b"proxy\t*\tLIST-FULL\n"]
    # titles: service -> proto, src-ip -> src ip, ...; username (first EXPAND column) takes the spare width
    assert proc.stdout.decode().splitlines() == [
        "username            user_alias proto   src ip      dest ip  port     ",
        "jane                jane-a     imap    192.0.2.7   10.0.0.1 143      ",
        "username            user_alias service src-ip      dest-ip  dest-port",
        "bob                            imap    2001:db8::5 10.0.0.2 143      ",
    ]


@pytest.mark.parametrize(
    ("formatter", "expected"),
    [
        (
            "tab",
            b"username\tuser_alias\tproto\tsrc ip\tdest ip\tport\n"
            b"jane\tjane-a\timap\t192.0.2.7\t10.0.0.1\t143\n"
            b"username\tuser_alias\tservice\tsrc-ip\tdest-ip\tdest-port\n"
            b"bob\t\timap\t2001:db8::5\t10.0.0.2\t143\n",
        ),
        (
            "json",
            b'[{"username":"jane","user_alias":"jane-a","service":"imap","src-ip":"192.0.2.7",'
            b'"dest-ip":"10.0.0.1","dest-port":"143"},{"username":"username","user_alias":"user_alias",'
            b'"service":"service","src-ip":"src-ip","dest-ip":"dest-ip","dest-port":"dest-port"},'
            b'{"username":"bob","user_alias":"","service":"imap","src-ip":"2001:db8::5",'
            b'"dest-ip":"10.0.0.2","dest-port":"143"}]',
        ),
    ],
)
def test_list_other_formatters(dvadm: RunDvadm, formatter: str, expected: bytes) -> None:
    with FakeIpc(LIST_REPLY) as ipc:
        proc = dvadm("-f", formatter, "proxy", "list", "-a", ipc.path)
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, b"", expected)


def test_list_values_flow_across_rows_when_processes_know_other_fields(dvadm: RunDvadm) -> None:
    """As doveadm's printer takes one value after another, a longer line shifts the next cells;
    a short last row is padded (doveadm 2.3's table aborts there)."""
    reply = b":username\tservice\tsrc-ip\tdest-ip\tdest-port\n:a\timap\t1\t2\t3\n:b\tb-a\timap\t4\t5\t6\n+\n"
    with FakeIpc(reply) as ipc:
        proc = dvadm("-f", "tab", "-h", "proxy", "list", "-a", ipc.path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout == b"a\timap\t1\t2\t3\nb\tb-a\timap\t4\t5\n6\t\t\t\t\n"


def test_list_unescapes_fields(dvadm: RunDvadm) -> None:
    reply = b":username\tservice\tsrc-ip\tdest-ip\tdest-port\n:we\x01tird\x01n\timap\t1\t2\t3\n+\n"
    with FakeIpc(reply) as ipc:
        proc = dvadm("-f", "json", "proxy", "list", "-a", ipc.path)
    assert proc.returncode == 0, proc.stderr
    assert b'"username":"we\\tird\\n"' in proc.stdout


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((), b""),
        (("-f", "tab"), b"\n"),
        (("-h", "-f", "tab"), b""),
        (("-f", "json"), b"[]"),
        (("-f", "flow"), b""),
    ],
)
def test_list_with_no_proxy_group(dvadm: RunDvadm, flags: tuple[str, ...], expected: bytes) -> None:
    """ipc answers ``+`` when no login process ever proxied: no header; doveadm's printers then
    flush as they do without headers (a lone LF for tab, ``[]`` for json, else nothing)."""
    with FakeIpc(b"+\n") as ipc:
        proc = dvadm(*flags, "proxy", "list", "-a", ipc.path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected, b"")


def test_list_error_reply_keeps_the_rows_read_and_exits_75(dvadm: RunDvadm) -> None:
    reply = HEADER + b":jane\tjane-a\timap\t192.0.2.7\t10.0.0.1\t143\n-Unknown command\n"
    with FakeIpc(reply) as ipc:
        proc = dvadm("-f", "tab", "proxy", "list", "-a", ipc.path)
    assert proc.returncode == 75
    assert proc.stdout.endswith(b"jane\tjane-a\timap\t192.0.2.7\t10.0.0.1\t143\n")
    assert proc.stderr == b"Error: LIST-FULL failed: Unknown command\n"


@pytest.mark.parametrize(
    ("argv", "wire"),
    [
        (("jane",), b"proxy\t*\tKICK\tjane\n"),
        (("jane", "bob@example.org"), b"proxy\t*\tKICK\tjane\tbob@example.org\n"),
        (("a\tb", "jan*"), b"proxy\t*\tKICK\ta\x01tb\tjan*\n"),  # escaped; names are exact on 2.3
        (("-f", "user_alias", "x", "y"), b"proxy\t*\tKICK-ALT\tuser_alias\tx\ty\n"),
        (("-h", "10.0.0.1"), b"proxy\t*\tKICK-HOST\t10.0.0.1\n"),
        (("-h", "10.0.0.1", "backend.example.org"), b"proxy\t*\tKICK-HOST\t10.0.0.1\tbackend.example.org\n"),
    ],
)
def test_kick_wire_bytes(dvadm: RunDvadm, argv: tuple[str, ...], wire: bytes) -> None:
    with FakeIpc(b"+3\n") as ipc:
        proc = dvadm("proxy", "kick", "-a", ipc.path, *argv)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"3 connections kicked\n", b"")
    assert ipc.received == [wire]


@pytest.mark.parametrize(
    ("reply", "shown"),
    [
        (b"+\n", b"0"),  # no proxy group at all
        (b"+(null)\n", b"(null)"),  # a group whose processes are all gone (glibc printing NULL)
        (b":ignored\n+7\n", b"7"),
    ],
)
def test_kick_count_as_doveadm_prints_it(dvadm: RunDvadm, reply: bytes, shown: bytes) -> None:
    with FakeIpc(reply) as ipc:
        proc = dvadm("proxy", "kick", "-a", ipc.path, "jane")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, shown + b" connections kicked\n", b"")


def test_kick_other_formatter(dvadm: RunDvadm) -> None:
    with FakeIpc(b"+2\n") as ipc:
        proc = dvadm("-f", "tab", "proxy", "kick", "-a", ipc.path, "jane")
    assert (proc.returncode, proc.stdout) == (0, b"count\n2\n")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"-Missing parameter\n", b"Error: KICK failed: Missing parameter\n"),
        (b"+12x\n", b"Error: KICK failed: Invalid count in reply: 12x\n"),
        (b"*what\n", b"Error: KICK failed: Invalid input: *what\n"),
        (b"\n", b"Error: KICK failed: Invalid input: \n"),
        (b":partial", b"Error: KICK failed: read(%s) timed out after 2 s\n"),
        (b"+1\x1b[2J\n", b"Error: KICK failed: Invalid count in reply: 1\\x1b[2J\n"),
    ],
)
def test_kick_bad_replies(dvadm: RunDvadm, reply: bytes, message: bytes) -> None:
    with FakeIpc(reply) as ipc:
        proc = dvadm(*FAST, "proxy", "kick", "-a", ipc.path, "jane")
    assert (proc.returncode, proc.stdout, proc.stderr) == (75, b"", message.replace(b"%s", ipc.path.encode()))


@pytest.mark.parametrize(
    ("fault", "reply", "message"),
    [
        ("hang", b"", b"Error: LIST-FULL failed: read(%s) timed out after 2 s\n"),
        ("close", b"", b"Error: LIST-FULL failed: Disconnected\n"),
        ("drip", HEADER + b"+\n", b"Error: LIST-FULL failed: read(%s) timed out after 2 s\n"),
        ("flood", b"", b"Error: LIST-FULL failed: no complete reply from %s within 5 s\n"),
    ],
)
def test_list_faults_are_bounded(dvadm: RunDvadm, fault: str, reply: bytes, message: bytes) -> None:
    with FakeIpc(reply, fault=fault, drip_interval=0.5) as ipc:
        start = time.monotonic()
        proc = dvadm(*FAST, "-f", "tab", "proxy", "list", "-a", ipc.path)
        elapsed = time.monotonic() - start
    assert proc.returncode == 75
    assert proc.stderr == message.replace(b"%s", ipc.path.encode())
    assert elapsed < 20


@pytest.mark.parametrize(
    ("fault", "reply", "message"),
    [
        ("hang", b"", b"Error: KICK failed: read(%s) timed out after 2 s\n"),
        ("close", b"", b"Error: KICK failed: Disconnected\n"),
        ("drip", b"+1234567\n", b"Error: KICK failed: read(%s) timed out after 2 s\n"),
        ("flood", b"", b"Error: KICK failed: no complete reply from %s within 5 s\n"),
    ],
)
def test_kick_faults_are_bounded(dvadm: RunDvadm, fault: str, reply: bytes, message: bytes) -> None:
    """The kick is sent (it may have acted): a reply that never comes right is one line, exit 75."""
    with FakeIpc(reply, fault=fault, drip_interval=0.5) as ipc:
        start = time.monotonic()
        proc = dvadm(*FAST, "proxy", "kick", "-a", ipc.path, "jane")
        elapsed = time.monotonic() - start
    assert (proc.returncode, proc.stdout) == (75, b"")
    assert proc.stderr == message.replace(b"%s", ipc.path.encode())
    assert ipc.received == ([] if fault == "close" else [b"proxy\t*\tKICK\tjane\n"])
    assert elapsed < 20


def test_an_over_long_line_is_refused(dvadm: RunDvadm) -> None:
    with FakeIpc(b":" + b"x" * (2 * 1024 * 1024) + b"\n+\n") as ipc:
        proc = dvadm(*FAST, "proxy", "list", "-a", ipc.path)
    assert proc.returncode == 75
    assert proc.stderr == b"Error: LIST-FULL failed: ipc sent a line longer than 1048576 bytes\n"


def test_unreachable_socket(dvadm: RunDvadm, tmp_path: object) -> None:
    path = f"{tmp_path}/ipc"
    for command, what in ((("list",), b"LIST-FULL"), (("kick", "jane"), b"KICK")):
        proc = dvadm("proxy", *command, "-a", path)
        assert proc.returncode == 75
        assert (
            proc.stderr
            == b"Error: "
            + what
            + b" failed: connect("
            + path.encode()
            + b") failed: No such file or directory\n"
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), b"Error: user or -h <host> must be specified.\n"),
        (("-f", "user_alias"), b"Error: Username must be given with passdb-field parameter\n"),
        (("-f", "user_alias", "-h", "10.0.0.1"), b"Error: -f and -h cannot be combined on Dovecot 2.3"),
        (("",), b"Error: proxy kick: an empty user matches no session\n"),
        (("-h", ""), b"Error: proxy kick: an empty host matches no session\n"),
        (("-h", "10.0.0.1\tjane"), b"Error: proxy kick -h: invalid host '10.0.0.1\\tjane'\n"),
        (("-f", "", "x"), b"Error: -f passdb_field must not be empty\n"),
        (("--force", "jane"), b"Error: --force is for 'kick' on Dovecot 2.3"),
        (("--dry-run", "jane"), b"Error: proxy kick --dry-run needs Dovecot 2.4: "),
        (("--bogus", "jane"), b"Error: dvadm proxy kick: unrecognized arguments: --bogus"),
        (("-S", "http://127.0.0.1:1", "jane"), b"Error: "),
    ],
)
def test_kick_bad_input_sends_nothing(dvadm: RunDvadm, argv: tuple[str, ...], message: bytes) -> None:
    with FakeIpc(b"+1\n") as ipc:
        proc = dvadm("proxy", "kick", "-a", ipc.path, *argv)
    assert proc.returncode == 64, proc.stderr
    assert proc.stdout == b""
    assert proc.stderr.startswith(message)
    assert proc.stderr.count(b"\n") == 1
    assert ipc.received == []


@pytest.mark.parametrize("argv", [("-1",), ("-f", "user_alias", "x"), ("jane",), ("10.0.0.0/8",)])
def test_list_options_of_24_refused_on_23(dvadm: RunDvadm, argv: tuple[str, ...]) -> None:
    with FakeIpc(LIST_REPLY) as ipc:
        proc = dvadm("proxy", "list", "-a", ipc.path, *argv)
    assert (proc.returncode, proc.stdout) == (64, b"")
    assert proc.stderr.startswith(b"Error: proxy list on Dovecot 2.3 takes only -a <ipc socket path>: ")
    assert ipc.received == []


def test_list_dash_f_formatter_on_23_points_to_the_global_option(dvadm: RunDvadm) -> None:
    """After the command word -f is 2.4's passdb field; a formatter's name there gets a hint."""
    with FakeIpc(LIST_REPLY) as ipc:
        proc = dvadm("proxy", "list", "-a", ipc.path, "-f", "json")
    assert (proc.returncode, proc.stdout) == (64, b"")
    assert proc.stderr == (
        b"Error: proxy list on Dovecot 2.3 takes only -a <ipc socket path>: -f needs Dovecot 2.4\n"
        b"Hint: for json output put -f before the command: dvadm -f json proxy list\n"
    )
    assert ipc.received == []


def test_default_socket_is_base_dir_ipc(dvadm: RunDvadm) -> None:
    with FakeIpc(b"+5\n") as ipc:
        proc = dvadm("-o", f"base_dir={ipc.dir}", "proxy", "kick", "jane")
    assert (proc.returncode, proc.stdout) == (0, b"5 connections kicked\n")
    assert ipc.received == [b"proxy\t*\tKICK\tjane\n"]


def test_debug_shows_the_ipc_lines(dvadm: RunDvadm) -> None:
    with FakeIpc(b"+1\n") as ipc:
        proc = dvadm("-D", "proxy", "kick", "-a", ipc.path, "jane")
    assert proc.returncode == 0
    assert proc.stderr == b"Debug: ipc> proxy\\t*\\tKICK\\tjane\nDebug: ipc< +1\n"
