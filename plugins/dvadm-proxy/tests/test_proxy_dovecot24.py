"""Against real Dovecot 2.4.1 and 2.4.5 (the harness's chroot servers) proxying to themselves:
``proxy list`` and ``proxy kick`` are doveadm 2.4's ``who`` and ``kick`` under another name, and
dvadm's give the server's own doveadm's output and disconnect the same IMAP clients."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from proxy_helpers import ALIASES, DIRECT, PROXIED, RunDvadm, Spec, both, kick_once, records

from doveadm_py.api import wildcard_match_icase
from doveadm_py.testing.fixtures import dovecot_servers
from doveadm_py.testing.proxy import SECOND_BACKEND, ProxyDovecot, open_proxied_sessions
from doveadm_py.testing.servers import DovecotServer

pytestmark = [pytest.mark.dovecot, dovecot_servers("2.4-trixie", "2.4-sid")]
HOSTS = {"foo": SECOND_BACKEND}
ANVIL_PANIC = "anvil: Panic: "
"""Dovecot 2.4's anvil, kicking a user's proxy and backend at once, may find one's admin socket
gone and die on an assertion (2.4.5: connection.c, 2.4.1: admin-client.c; seen with doveadm's own
``proxy kick`` too); the master restarts it."""


@pytest.fixture
def server(proxy_dovecot: Callable[..., ProxyDovecot], dovecot_server: DovecotServer) -> ProxyDovecot:
    return proxy_dovecot(
        server=dovecot_server,
        proxy_fields={user: {"user_alias": alias} for user, alias in ALIASES.items()},
        proxy_hosts=HOSTS,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("-f", "tab"),
        ("-f", "tab", "proxy", "list", "-1"),
        ("-f", "json", "proxy", "list", "-1"),
        ("-f", "tab", "proxy", "list", "-1", "j*"),
        ("-f", "tab", "proxy", "list", "-1", "-f", "user_alias", "shared"),
        ("-f", "tab", "proxy", "list", "127.0.3.0/24"),
    ],
)
def test_proxy_list_is_doveadm_24s(server: ProxyDovecot, dvadm: RunDvadm, args: tuple[str, ...]) -> None:
    argv = args if "proxy" in args else (*args, "proxy", "list")
    proxied, direct = open_proxied_sessions(server, PROXIED, DIRECT)
    with proxied, direct:
        ours, theirs = both(server, dvadm, *argv)
    assert (ours.returncode, ours.stderr) == (0, b""), ours.stderr
    assert theirs.returncode == 0, theirs.stderr
    if "-1" in argv:  # dump order: byte for byte
        assert ours.stdout == theirs.stdout
    else:  # doveadm aggregates in hash order
        assert records(argv[1], ours.stdout) == records(argv[1], theirs.stdout)
    assert b"imap-login" in ours.stdout or b"-f" in argv


def expected_closed(args: Sequence[str], specs: Sequence[Spec], direct: bool) -> set[Spec]:
    """2.4 = kick: masks match every session of the user (its proxy, its backend, its direct
    logins); ``-h`` only proxies to that destination."""
    if args[0] == "-h":
        return set() if direct else {(u, ip) for u, ip in specs if HOSTS.get(u, "127.0.0.1") == args[1]}
    if args[0] == "-f":
        return {(u, ip) for u, ip in specs if ALIASES[u] in args[2:]}
    return {(u, ip) for u, ip in specs if any(wildcard_match_icase(u, mask) for mask in args)}


@pytest.mark.parametrize(
    "args",
    [
        ("jane",),
        ("jan*",),
        ("-f", "user_alias", "shared"),
        ("-h", SECOND_BACKEND),
        ("-h", "127.0.0.1"),
        ("nobody",),
    ],
)
def test_proxy_kick_is_doveadm_24s(server: ProxyDovecot, dvadm: RunDvadm, args: tuple[str, ...]) -> None:
    expected = expected_closed(args, PROXIED, False) | expected_closed(args, DIRECT, True)
    config = server.dvadm_args()
    panics = server.log_text().count(ANVIL_PANIC)
    ours, closed, direct_closed = kick_once(server, lambda *a: dvadm(*config, *a), args, PROXIED, expected)
    our_panic = server.log_text().count(ANVIL_PANIC) > panics
    assert ours.returncode == 0, ours.stderr
    if our_panic:  # anvil died under the kick: the one line doveadm gives too
        assert ours.stderr.startswith(b"Error: Failed to send kick to anvil: "), ours.stderr
    else:
        assert ours.stderr == b""
    panics = server.log_text().count(ANVIL_PANIC)
    theirs, their_closed, their_direct_closed = kick_once(server, server.doveadm, args, PROXIED, expected)
    their_panic = server.log_text().count(ANVIL_PANIC) > panics
    assert theirs.returncode == 0
    if our_panic or their_panic:
        # A kick that anvil died under may stop short (doveadm sends one at a time): never more
        # than asked, and nothing else is comparable.
        assert closed | direct_closed <= expected and their_closed | their_direct_closed <= expected
        return
    assert (their_closed, their_direct_closed) == (closed, direct_closed)
    if args[0] == "-h":
        # anvil asks the login process: 2.4.1's one-client login processes keep the session (anvil
        # counts it kicked all the same, reference section 10), 2.4.5's end it. Either way as doveadm.
        keeps = (server.server.version() or "").startswith("2.4.1")
        assert (closed, direct_closed) == (set() if keeps else expected, set())
    else:
        assert closed | direct_closed == expected
    if args[0] == "-h" or not expected:
        assert theirs.stdout == ours.stdout
    else:
        # A proxied login and its backend kicked together: whichever anvil reaches second may be gone
        # already (ended with the other), so the sum depends on the order the kicks land in (dvadm
        # pipelines them; seen for a wildcard and, under load, for -f): the same sessions close.
        for out in (ours.stdout, theirs.stdout):
            count = int(out.removesuffix(b" connections kicked\n"))
            assert 1 <= count <= 2 * len(expected)


@pytest.mark.parametrize("command", ["kick", "list"])
def test_two_networks_in_doveadm_24s_words(server: ProxyDovecot, dvadm: RunDvadm, command: str) -> None:
    """doveadm 2.4.5: ``Error: cmd proxy kick: Multiple network masks not supported`` (the event is
    named after the command as typed), exit 64. doveadm 2.4.1's proxy kick crashes here (SIGSEGV,
    seen on trixie): dvadm gives 2.4.5's answer on both."""
    args = ("proxy", command, "jane", "10.0.0.0/8", "192.168.0.0/16")
    proxied, direct = open_proxied_sessions(server, PROXIED[:1], DIRECT[:1])
    with proxied, direct:
        ours = dvadm(*server.dvadm_args(), *args)
        theirs = server.doveadm(*args)
        assert proxied.connected() == list(proxied) and direct.connected() == list(direct)
    expected = (64, b"", f"Error: cmd proxy {command}: Multiple network masks not supported\n".encode())
    assert (ours.returncode, ours.stdout, ours.stderr) == expected
    if theirs.returncode >= 0:  # not killed by a signal
        assert (theirs.returncode, theirs.stdout, theirs.stderr) == expected
    else:
        assert command == "kick" and (server.server.version() or "").startswith("2.4.1"), theirs


def table_cells(out: bytes, dash_is_blank: bool) -> list[list[bytes]]:
    """A table's lines as their cells (the widths may differ: dvadm measures 100 rows, doveadm
    2.4's aggregated table the first); ``-`` cells dropped where doveadm 2.4.1 prints blanks."""
    lines = [line.split() for line in out.splitlines()]
    return [[cell for cell in line if not (dash_is_blank and cell == b"-")] for line in lines]


@pytest.mark.parametrize("separate", [True, False], ids=["-1", "aggregated"])
@pytest.mark.parametrize("formatter", ["table", "flow", "pager", "-h"])
def test_proxy_list_in_every_formatter_as_doveadm_24(
    server: ProxyDovecot, dvadm: RunDvadm, formatter: str, separate: bool
) -> None:
    """The formatters ``test_proxy_list_is_doveadm_24s`` leaves out (tab and json are there)."""
    flags = ("-h",) if formatter == "-h" else ("-f", formatter)
    argv = (*flags, "proxy", "list", *(("-1",) if separate else ()))
    proxied, direct = open_proxied_sessions(server, PROXIED, DIRECT)
    with proxied, direct:
        ours, theirs = both(server, dvadm, *argv)
    assert (ours.returncode, ours.stderr) == (0, b""), ours.stderr
    assert (theirs.returncode, theirs.stderr) == (0, b""), theirs.stderr
    assert b"imap-login" in ours.stdout
    if formatter in ("table", "-h"):
        # doveadm 2.4.1 alone prints an empty cell blank, 2.4.5 and dvadm "-" (docs/compatibility.rst)
        blank = (server.server.version() or "").startswith("2.4.1")
        if separate and not blank:  # dump order, the same widths: byte for byte
            assert ours.stdout == theirs.stdout
        ours_cells, their_cells = table_cells(ours.stdout, blank), table_cells(theirs.stdout, blank)
        if formatter == "table":  # the header first, then the rows in any order (hash order)
            assert ours_cells[0] == their_cells[0]
            ours_cells, their_cells = ours_cells[1:], their_cells[1:]
        assert sorted(ours_cells) == sorted(their_cells)
    elif separate:
        assert ours.stdout == theirs.stdout
    else:
        assert records(formatter, ours.stdout) == records(formatter, theirs.stdout)
