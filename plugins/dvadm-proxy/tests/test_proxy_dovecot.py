"""Against a real Dovecot 2.3 whose imap-login proxies a second port to its own backend: ``proxy
list`` compared with the server's own ``doveadm proxy list``, and ``proxy kick`` by user, by
``-f`` alt field and by ``-h`` host disconnecting exactly the proxied sessions asked for,
seen from the IMAP clients' side, with doveadm's own output and effect on the same set-up.

Login processes answer ipc in the order they get to it, so rows are compared as multisets
(the first line, the header, exactly), and the count a 2.3 kick prints is the *last*
process's: exact with one proxying process, else one of the per-process counts.
"""

from __future__ import annotations

import shlex
import signal
from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from proxy_helpers import ALIASES, DIRECT, PROXIED, RunDvadm, Spec, both, kick_once, records

from doveadm_py.testing.proxy import SECOND_BACKEND, ProxyDovecot, open_proxied_sessions, wait_no_proxies

pytestmark = pytest.mark.dovecot


@pytest.fixture
def server(proxy_dovecot: Callable[..., ProxyDovecot]) -> ProxyDovecot:
    """foo's proxy goes to the backend's second address; every proxied login has a user_alias."""
    return proxy_dovecot(
        proxy_fields={user: {"user_alias": alias} for user, alias in ALIASES.items()},
        proxy_hosts={"foo": SECOND_BACKEND},
    )


@pytest.mark.parametrize("formatter", ["table", "tab", "flow", "pager", "json", "-h"])
def test_proxy_list_as_doveadm(server: ProxyDovecot, dvadm: RunDvadm, formatter: str) -> None:
    flags = ("-h",) if formatter == "-h" else ("-f", formatter)
    ours, theirs = both(server, dvadm, *flags, "proxy", "list")
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, b"")
    assert theirs.returncode == 0
    proxied, direct = open_proxied_sessions(server, PROXIED, DIRECT)
    with proxied, direct:
        ours, theirs = both(server, dvadm, *flags, "proxy", "list")
        assert (ours.returncode, ours.stderr) == (0, b""), ours.stderr
        assert theirs.returncode == 0, theirs.stderr
        assert records(formatter, ours.stdout) == records(formatter, theirs.stdout)
        # every process's header: once as the header (unless hidden), the others as data rows
        text = ours.stdout.decode()
        assert text.count('"dest-port":"dest-port"' if formatter == "json" else "dest-port") == 2
        for user, ip in PROXIED:
            assert user in text and ip in text
        for _, ip in DIRECT:
            assert ip not in text


def test_proxy_list_table_bytes_with_one_proxy(server: ProxyDovecot, dvadm: RunDvadm) -> None:
    """One proxying process: no ordering freedom, the table must be byte for byte doveadm's."""
    proxied, direct = open_proxied_sessions(server, [("jane", "127.0.3.7")], [("jane", "127.0.0.12")])
    with proxied, direct:
        ours, theirs = both(server, dvadm, "proxy", "list")
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, theirs.stdout, b"")
    assert theirs.returncode == 0
    port = str(server.imap_port).encode()
    assert ours.stdout.split(b"\n")[1].split() == [
        b"jane",
        b"jane-a",
        b"imap",
        b"127.0.3.7",
        b"127.0.0.1",
        port,
    ]


def expected_closed(args: Sequence[str], specs: Sequence[Spec]) -> set[Spec]:
    """2.3: exact names, alt values or passdb hosts, and only proxied sessions."""
    if args[0] == "-h":
        hosts = set(args[1:])
        return {(u, ip) for u, ip in specs if (SECOND_BACKEND if u == "foo" else "127.0.0.1") in hosts}
    if args[0] == "-f":
        return {(u, ip) for u, ip in specs if ALIASES[u] in args[2:]}
    return {(u, ip) for u, ip in specs if u in args}


@pytest.mark.parametrize(
    "args",
    [
        ("jane",),
        ("jane", "james"),
        ("Jane",),  # exact names on 2.3: nobody
        ("jan*",),  # no wildcards on 2.3: nobody
        ("-f", "user_alias", "shared"),
        ("-h", SECOND_BACKEND),
        ("-h", "127.0.0.1", SECOND_BACKEND),
        ("nobody",),
    ],
)
def test_proxy_kick_disconnects_exactly_the_proxied_sessions(
    server: ProxyDovecot, dvadm: RunDvadm, args: tuple[str, ...]
) -> None:
    config = server.dvadm_args()
    expected = expected_closed(args, PROXIED)
    ours, closed, direct_closed = kick_once(server, lambda *a: dvadm(*config, *a), args, PROXIED, expected)
    assert (ours.returncode, ours.stderr) == (0, b""), ours.stderr
    assert closed == expected
    assert direct_closed == set()  # the same users' direct sessions are no proxies: untouched
    # the count is the last login process's: 1 if that one kicked, else 0
    assert ours.stdout in {b"%d connections kicked\n" % n for n in ({0, 1} if expected else {0})}
    theirs, their_closed, their_direct_closed = kick_once(server, server.doveadm, args, PROXIED, expected)
    assert (theirs.returncode, their_closed, their_direct_closed) == (0, closed, direct_closed)
    assert theirs.stdout in {b"%d connections kicked\n" % n for n in ({0, 1} if expected else {0})}


def test_kick_counts_as_doveadm_through_the_group_life(server: ProxyDovecot, dvadm: RunDvadm) -> None:
    """No process ever proxied: 0; one proxying process: its count; every one gone: (null)."""
    config = server.dvadm_args()
    for run in (lambda *a: dvadm(*config, *a), server.doveadm):
        assert run("proxy", "kick", "jane").stdout == b"0 connections kicked\n"
    outputs = []
    for run in (lambda *a: dvadm(*config, *a), server.doveadm):
        result, closed, direct_closed = kick_once(
            server, run, ("jane",), [("jane", "127.0.3.7")], {("jane", "127.0.3.7")}
        )
        outputs.append((result.returncode, result.stdout, closed, direct_closed))
    assert outputs[0] == outputs[1] == (0, b"1 connections kicked\n", {("jane", "127.0.3.7")}, set())
    assert wait_no_proxies(server) == b"+(null)\n"
    for run in (lambda *a: dvadm(*config, *a), server.doveadm):
        assert run("proxy", "kick", "jane").stdout == b"(null) connections kicked\n"
        listing = run("proxy", "list")
        assert (listing.returncode, listing.stdout) == (0, b"")


def test_bad_input_kicks_nothing(server: ProxyDovecot, dvadm: RunDvadm) -> None:
    config = server.dvadm_args()
    proxied, direct = open_proxied_sessions(server, PROXIED, DIRECT)
    with proxied, direct:
        for args in (
            ("-f", "user_alias", "-h", "127.0.0.1"),
            ("",),
            ("--force", "jane"),
            ("-h", "127.0.0.1\tx"),
        ):
            proc = dvadm(*config, "proxy", "kick", *args)
            assert (proc.returncode, proc.stdout) == (64, b""), proc.stderr
        assert proxied.connected() == list(proxied) and direct.connected() == list(direct)


DRY_RUN_REFUSED = (
    b"Error: proxy kick --dry-run needs Dovecot 2.4: Dovecot 2.3 cannot list what its proxy kick "
    b"would match (LIST-FULL shows the resolved backend IP, KICK-HOST matches the passdb host text); "
    b"nothing was kicked\n"
)


@pytest.mark.parametrize(
    "args", [("jane",), ("-f", "user_alias", "shared"), ("-h", "127.0.0.1"), ("-h", SECOND_BACKEND)]
)
def test_dry_run_is_refused_before_anything_is_sent(
    server: ProxyDovecot, dvadm: RunDvadm, args: tuple[str, ...]
) -> None:
    """A 2.3 kick cannot be previewed truthfully: one line, exit 64, every session stays."""
    proxied, direct = open_proxied_sessions(server, PROXIED, DIRECT)
    with proxied, direct:
        proc = dvadm(*server.dvadm_args(), "proxy", "kick", "--dry-run", *args)
        assert (proc.returncode, proc.stdout, proc.stderr) == (64, b"", DRY_RUN_REFUSED)
        assert proxied.connected() == list(proxied) and direct.connected() == list(direct)


@pytest.mark.parametrize("users", [(), ("jane",)], ids=["host", "host-and-user"])
def test_kick_dash_h_on_23_names_proxy_kick_which_does_it(
    server: ProxyDovecot, dvadm: RunDvadm, users: tuple[str, ...]
) -> None:
    """``dvadm kick -h`` on 2.3 (anvil has no destinations) kicks nothing and names the command
    that can: run as named, it disconnects exactly the proxies to that host. With users too, the
    error says the named command is wider (2.3 cannot match host and user together)."""
    config = server.dvadm_args()
    proxied, direct = open_proxied_sessions(server, PROXIED, DIRECT)
    with proxied, direct:
        refused = dvadm(*config, "kick", "-h", "127.0.0.1", *users)
        assert (refused.returncode, refused.stdout) == (64, b"")
        lines = refused.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "Error: this server speaks anvil protocol 1 (Dovecot 2.3)"
        )
        assert ("cannot also match users" in lines[0]) == bool(users), lines[0]
        named = lines[0].split("use: ", 1)[1].split(" (plugin ", 1)[0]
        assert named == "dvadm proxy kick -h 127.0.0.1"
        assert proxied.connected() == list(proxied) and direct.connected() == list(direct)
        done = dvadm(*config, *shlex.split(named)[1:])
        expected = {(u, ip) for u, ip in PROXIED if u != "foo"}  # foo's proxy goes to SECOND_BACKEND
        assert (done.returncode, done.stderr) == (0, b""), done.stderr
        assert proxied.wait_for_disconnects(expected, timeout=10, settle=0.5) == expected
        assert direct.wait_for_disconnects(set(), timeout=1, settle=0) == set()


HEADER_CELLS = {b"username", b"user_alias", b"service", b"src-ip", b"dest-ip", b"dest-port"}


def tab_cells(out: bytes) -> Counter[bytes]:
    """The session values of a ``-f tab`` output: without the header cells (which process's
    header is hidden depends on the order the processes answer in) and without empty cells
    (dvadm pads a short last row, doveadm does not)."""
    cells = (cell for line in out.split(b"\n") for cell in line.split(b"\t"))
    return Counter(cell for cell in cells if cell and cell not in HEADER_CELLS)


def test_processes_knowing_other_alt_fields_shift_the_cells_as_doveadm(
    proxy_dovecot: Callable[..., ProxyDovecot], dvadm: RunDvadm
) -> None:
    """jane's login process knows user_alias, foo's none: their LIST-FULL lines differ in length
    and doveadm's printer takes the cells as they come, so rows shift. dvadm prints the same
    cells (the processes answer in either order) with a short last row padded; doveadm 2.3's
    table aborts there (reference-vs-server note in docs/compatibility.rst)."""
    server = proxy_dovecot(proxy_fields={"jane": {"user_alias": "jane-a"}, "foo": {}, "james": {}})
    proxied, direct = open_proxied_sessions(server, [("jane", "127.0.3.7"), ("foo", "127.0.3.8")], [])
    with proxied, direct:
        ours, theirs = both(server, dvadm, "-h", "-f", "tab", "proxy", "list")
        table, their_table = both(server, dvadm, "proxy", "list")
    assert (ours.returncode, ours.stderr, theirs.returncode) == (0, b"", 0), ours.stderr
    assert tab_cells(ours.stdout) == tab_cells(theirs.stdout)
    assert ours.stdout.count(b"dest-port") == 1  # the other process's header, as a row
    widths = {line.count(b"\t") for line in ours.stdout.splitlines()}
    assert len(widths) == 1 and ours.stdout.endswith(b"\n")  # whole rows, padded
    assert (table.returncode, table.stderr) == (0, b"")
    assert (their_table.returncode, their_table.stdout) == (-signal.SIGABRT, b""), (
        their_table
    )  # doveadm 2.3.19.1
    assert b"Panic: " in their_table.stderr


def test_a_socket_that_is_no_ipc_fails_in_doveadms_words(server: ProxyDovecot, dvadm: RunDvadm) -> None:
    """``-a`` naming the 2.3 anvil: it hangs up on the ipc line. doveadm 2.3 logs ``Error: KICK
    failed: Disconnected`` (exit 75) and ``Error: LIST-FULL failed: Disconnected`` (exit 0, where
    dvadm exits 75): the same line, byte for byte."""
    anvil = str(server.anvil_path)
    kick, their_kick = both(server, dvadm, "proxy", "kick", "-a", anvil, "nobody")
    assert (kick.returncode, kick.stdout, kick.stderr) == (75, b"", b"Error: KICK failed: Disconnected\n")
    assert (their_kick.returncode, their_kick.stdout, their_kick.stderr) == (75, b"", kick.stderr)
    listing, their_listing = both(server, dvadm, "proxy", "list", "-a", anvil)
    assert (listing.returncode, listing.stdout, listing.stderr) == (
        75,
        b"",
        b"Error: LIST-FULL failed: Disconnected\n",
    )
    assert (their_listing.returncode, their_listing.stdout, their_listing.stderr) == (0, b"", listing.stderr)
