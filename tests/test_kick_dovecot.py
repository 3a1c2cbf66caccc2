"""``dvadm kick`` end to end on a real Dovecot 2.3, next to the real ``doveadm kick``; the forms of the
man page also on 2.4.1 and 2.4.5 (tests marked ``@dovecot_servers()``; 2.4-only ones are in
test_kick_dovecot24.py).

Every form of doveadm-kick(1) runs twice on identical, freshly logged-in IMAP sessions: once with
dvadm, once with doveadm. Each must disconnect exactly the matching sessions (which get Dovecot's
``* BYE``), leave every other one connected, report the same and exit with the same code. On 2.3
doveadm's stdout is a pipe here, so its list comes before its text (reference section 5, "Ordering
quirk"): the user sets are compared, and dvadm's own bytes are checked exactly (TTY order). On 2.4 the
report is ``N connections kicked`` (exit 0, also for 0).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kick_helpers import COUNT, KICKED, NONE, USE_FORCE, WARNING, report

from doveadm_py.testing import (
    REFERENCE_SESSIONS,
    DovecotInstance,
    SessionGroup,
    open_sessions,
    wait_registered,
)
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.dovecot import process_cmdline
from doveadm_py.testing.fixtures import dovecot_servers
from doveadm_py.testing.servers import DovecotServer
from doveadm_py.testing.tables import dash_blank_cells, prints_blank_cells

pytestmark = pytest.mark.dovecot

Spec = tuple[str, str]
SESSIONS: list[Spec] = list(REFERENCE_SESSIONS)
BYE = b"* BYE Server shutting down.\r\n"
# All IMAP sessions in one process, so kicking one user's process disconnects the others too (2.3).
SHARED_PROCESS = "service imap {\n  client_limit = 10\n  process_limit = 1\n  service_count = 0\n}\n"
SHARED_PROCESS_V2 = (
    "service imap {\n  client_limit = 10\n  process_limit = 1\n  restart_request_count = unlimited\n}\n"
)


@dataclass(frozen=True)
class Outcome:
    """What one kick did: exit code, the users and kind of report on stdout, who was disconnected."""

    code: int
    kind: str | None  # KICKED, WARNING, NONE, 2.4's "N connections kicked", or None when stdout is empty
    users: frozenset[str]
    gone: frozenset[Spec]


def dvadm_report(users: Collection[str], generation: int = 1, connections: int = 0) -> bytes:
    """dvadm's stdout for a kick of ``users`` (strcmp order, each followed by a space, TTY order).

    On 2.4: the number of ``connections`` kicked.
    """
    if generation == 2:
        return f"{connections} connections kicked\n".encode()
    if not users:
        return f"{NONE}\n".encode()
    return f"{KICKED}\n{''.join(u + ' ' for u in sorted(users))}\n".encode()


def wait_idle(instance: DovecotInstance) -> None:
    """Until anvil lists no session: the next scenario must start from exactly its own sessions."""
    wait_registered(instance, 0, timeout=10)


def kick_on_fresh_sessions(
    instance: DovecotInstance,
    run: Callable[[], subprocess.CompletedProcess[bytes]],
    expected: Collection[Spec],
    tool: str,
    specs: list[Spec] = SESSIONS,
) -> tuple[Outcome, subprocess.CompletedProcess[bytes]]:
    wait_idle(instance)
    with open_sessions(instance, specs) as group:
        done = run()
        gone = group.wait_for_disconnects(expected, timeout=10, settle=0.3)
        check_last_words(group, gone)
    kind, users = report(done.stdout, tool)
    return Outcome(done.returncode, kind, users, frozenset(gone)), done


def check_last_words(group: SessionGroup, gone: set[Spec]) -> None:
    for session in group:
        if session.spec in gone:
            assert session.received.endswith(BYE), session
        else:
            assert session.received == b"", session


def dvadm(instance: DovecotInstance, *args: str) -> Callable[[], subprocess.CompletedProcess[bytes]]:
    return lambda: run_dvadm(*instance.dvadm_args(), "kick", *args)


def doveadm(instance: DovecotInstance, *args: str) -> Callable[[], subprocess.CompletedProcess[bytes]]:
    return lambda: instance.doveadm("kick", *args)


def spec_users(specs: Collection[Spec]) -> frozenset[str]:
    return frozenset(user for user, _ in specs)


@pytest.fixture(scope="module")
def server(dovecot_module: DovecotInstance) -> Iterator[DovecotInstance]:
    yield dovecot_module
    wait_idle(dovecot_module)


def everyone_but(*spared: Spec) -> list[Spec]:
    return [spec for spec in SESSIONS if spec not in spared]


FORMS = [
    pytest.param(["jan?"], [("jane", "127.0.0.1"), ("jano", "127.0.0.2")], id="user_mask"),
    pytest.param(["127.0.0.2"], [("jano", "127.0.0.2")], id="ip"),
    pytest.param(["127.0.0.0/24"], everyone_but(("foo", "127.0.1.9")), id="ip/bits"),
    pytest.param(
        ["foo", "127.0.0.0/24"], [("foo", "127.0.0.5"), ("foo", "127.0.0.6")], id="user_mask+ip/bits"
    ),
    pytest.param(["*"], SESSIONS, id="everyone"),
    pytest.param(["nobody*"], [], id="no-match"),
]


def generation(instance: DovecotInstance) -> int:
    return instance.server.generation


@dovecot_servers()
@pytest.mark.parametrize(("masks", "expected"), FORMS)
def test_kick_form_matches_doveadm(server: DovecotInstance, masks: list[str], expected: list[Spec]) -> None:
    ours, done = kick_on_fresh_sessions(server, dvadm(server, *masks), expected, "dvadm")
    assert ours.gone == set(expected)
    v2 = generation(server) == 2
    assert (done.returncode, done.stdout, done.stderr) == (
        0 if expected or v2 else 68,
        dvadm_report(spec_users(expected), generation(server), len(expected)),
        b"",
    )
    theirs, _ = kick_on_fresh_sessions(server, doveadm(server, *masks), expected, "doveadm")
    assert theirs == ours


@dovecot_servers()
def test_socket_option(server: DovecotInstance) -> None:
    """``-a <anvil socket>`` instead of the configured base_dir."""
    expected = [("james", "127.0.0.3")]
    run = lambda: run_dvadm("kick", "-a", str(server.anvil_path), "james")  # noqa: E731
    ours, done = kick_on_fresh_sessions(server, run, expected, "dvadm")
    assert ours.gone == set(expected) and done.stdout == dvadm_report(["james"], generation(server), 1)


@dovecot_servers()
def test_no_arguments(server: DovecotInstance) -> None:
    ours, done = kick_on_fresh_sessions(server, dvadm(server), [], "dvadm")
    assert (ours.code, ours.kind, ours.gone) == (64, None, set())
    assert done.stderr == b"Error: user and/or ip[/bits] must be specified.\n"
    theirs, _ = kick_on_fresh_sessions(server, doveadm(server), [], "doveadm")
    assert theirs == ours


@pytest.mark.parametrize("args", [["-f", "user_alias", "jane"], ["-h", "127.0.0.1"]], ids=["-f", "-h"])
def test_2_4_options_are_refused_on_2_3(server: DovecotInstance, args: list[str]) -> None:
    """2.3 has no alt usernames or proxy destinations in anvil (and its own -f means force)."""
    ours, done = kick_on_fresh_sessions(server, dvadm(server, *args), [], "dvadm")
    assert (ours.code, ours.gone) == (64, set())
    assert b"Dovecot 2.3" in done.stderr
    theirs, _ = kick_on_fresh_sessions(server, doveadm(server, *args), [], "doveadm")
    assert (theirs.code, theirs.gone) == (64, set())


@dovecot_servers()
def test_dry_run_shows_who_and_kicks_nobody(server: DovecotInstance) -> None:
    masks = ["foo", "127.0.0.0/24"]
    wait_idle(server)
    with open_sessions(server, SESSIONS) as group:
        done = run_dvadm(*server.dvadm_args(), "kick", "--dry-run", *masks)
        who = server.doveadm("who", "-1", *masks)
        assert group.wait_for_disconnects([], settle=0.3) == set()
        check_last_words(group, set())
    assert (done.returncode, done.stderr) == (0, b"")
    assert who.returncode == 0 and who.stdout.count(b"\n") == 3  # header and foo from .5 and .6
    expected = dash_blank_cells(who.stdout) if prints_blank_cells(server.server) else who.stdout
    assert done.stdout == expected


@pytest.mark.dovecot(extra_conf=SHARED_PROCESS)
def test_force_on_a_shared_process(dovecot: DovecotInstance) -> None:
    specs = SESSIONS[:3]  # jane, jano, james
    others = ["james", "jano"]
    wait_idle(dovecot)
    with open_sessions(dovecot, specs):
        assert len({entry.pid for entry in dovecot.connect_dump()}) == 1

    # Without --force: a warning naming the other users of the process, and nobody is disconnected.
    ours, done = kick_on_fresh_sessions(dovecot, dvadm(dovecot, "jane"), [], "dvadm", specs)
    assert (ours.code, ours.kind, ours.users, ours.gone) == (0, WARNING, frozenset(others), set())
    assert done.stdout == f"{WARNING}\n{' '.join(others)} \n{USE_FORCE['dvadm']}\n".encode()
    theirs, _ = kick_on_fresh_sessions(dovecot, doveadm(dovecot, "jane"), [], "doveadm", specs)
    assert theirs == ours

    # With it: the process goes, and with it every session it served.
    ours, done = kick_on_fresh_sessions(dovecot, dvadm(dovecot, "--force", "jane"), specs, "dvadm", specs)
    assert (ours.code, ours.gone) == (0, set(specs))
    assert done.stdout == dvadm_report(spec_users(specs))
    theirs, _ = kick_on_fresh_sessions(dovecot, doveadm(dovecot, "-f", "jane"), specs, "doveadm", specs)
    assert theirs == ours


@dovecot_servers("2.4-trixie", "2.4-sid")
def test_a_shared_process_loses_only_the_kicked_connection(
    dovecot_server: DovecotServer, dovecot_factory: Any
) -> None:
    """2.4's anvil kicks the connection, not the process: only jane goes, no --force needed.

    Observed on 2.4.1 and 2.4.5: anvil then replies 0 (the mail process was told through its admin
    socket), so both tools say "0 connections kicked" although jane is gone: the count is anvil's.
    """
    dovecot = dovecot_factory(extra_conf=SHARED_PROCESS_V2)  # of the dovecot_server being tested
    specs = SESSIONS[:3]  # jane, jano, james
    with open_sessions(dovecot, specs):
        assert len({entry.pid for entry in dovecot.connect_dump()}) == 1
    jane = [("jane", "127.0.0.1")]
    ours, done = kick_on_fresh_sessions(dovecot, dvadm(dovecot, "jane"), jane, "dvadm", specs)
    assert (ours.code, ours.gone, done.stderr) == (0, set(jane), b"")
    assert COUNT.fullmatch(done.stdout.decode())
    theirs, _ = kick_on_fresh_sessions(dovecot, doveadm(dovecot, "jane"), jane, "doveadm", specs)
    assert theirs == ours


MACHINE_FORMATS = ["json", "tab", "flow"]


@pytest.mark.parametrize("formatter", MACHINE_FORMATS)
@pytest.mark.parametrize(("masks", "expected"), [(["jano"], [("jano", "127.0.0.2")]), (["nobody"], [])])
def test_machine_formats_print_only_the_format(
    server: DovecotInstance, formatter: str, masks: list[str], expected: list[Spec]
) -> None:
    """doveadm 2.3 appends its texts to the format (``[{"result":"jano"}]kicked connections from
    ...``: no longer JSON); dvadm prints the same rows without them, and "no users kicked" on stderr."""
    run = lambda: run_dvadm("-f", formatter, "-c", str(server.config_path), "kick", *masks)  # noqa: E731
    ours, done = kick_on_fresh_sessions(server, run, expected, "dvadm")
    theirs, reference = kick_on_fresh_sessions(
        server, lambda: server.doveadm("-f", formatter, "kick", *masks), expected, "doveadm"
    )
    assert (ours.code, ours.gone) == (theirs.code, theirs.gone) == (0 if expected else 68, set(expected))
    texts = reference.stdout.replace(f"{KICKED}\n\n".encode(), b"").replace(f"{NONE}\n".encode(), b"")
    assert texts != reference.stdout  # doveadm did mix its text in
    assert done.stdout == texts
    assert done.stderr == (b"" if expected else f"{NONE}\n".encode())
    if formatter == "json":
        assert json.loads(done.stdout) == [{"result": user} for user, _ in expected]


@pytest.mark.dovecot(extra_conf=SHARED_PROCESS)
def test_machine_format_warning_lists_no_results(dovecot: DovecotInstance) -> None:
    """Without --force on a shared process nothing is kicked: doveadm's JSON lists the *other* users as
    results; dvadm's lists none, and the warning with those users goes to stderr."""
    specs = SESSIONS[:3]
    run = lambda: run_dvadm("-f", "json", "-c", str(dovecot.config_path), "kick", "jane")  # noqa: E731
    ours, done = kick_on_fresh_sessions(dovecot, run, [], "dvadm", specs)
    assert (ours.code, ours.gone, done.stdout) == (0, set(), b"[]")
    assert done.stderr == f"{WARNING} james jano\n{USE_FORCE['dvadm']}\n".encode()


def test_dry_run_matching_nothing_exits_as_the_kick(server: DovecotInstance) -> None:
    ours, done = kick_on_fresh_sessions(server, dvadm(server, "--dry-run", "nobody*"), [], "dvadm")
    assert (ours.code, ours.gone, done.stderr) == (68, set(), b"")
    theirs, _ = kick_on_fresh_sessions(server, doveadm(server, "nobody*"), [], "doveadm")
    assert theirs.code == 68


@pytest.mark.parametrize(
    "extra_conf",
    ["verbose_proctitle = yes\n", "instance_name = dvadm-test\n"],
    ids=["verbose_proctitle", "instance_name"],
)
def test_real_process_titles_are_recognised(dovecot_factory: Any, extra_conf: str) -> None:
    """Titles as Dovecot 2.3 sets them: ``dovecot/imap [jane 127.0.0.1]`` with verbose_proctitle,
    ``dovecot-dvadm-test/imap`` with an instance name. Both are still kicked."""
    instance = dovecot_factory(extra_conf=extra_conf)
    expected = [("jane", "127.0.0.1")]
    ours, done = kick_on_fresh_sessions(instance, dvadm(instance, "jane"), expected, "dvadm", SESSIONS[:2])
    assert (ours.code, ours.gone, done.stderr) == (0, set(expected), b""), done.stderr


HIBERNATE = """imap_hibernate_timeout = 1s
service imap-hibernate {
  unix_listener imap-hibernate {
    mode = 0660
    group = $default_internal_group
  }
}
service imap {
  unix_listener imap-master {
    user = $default_internal_user
  }
  extra_groups = $default_internal_group
}
"""


@pytest.mark.dovecot(extra_conf=HIBERNATE)
def test_hibernated_sessions_live_in_imap_hibernate(dovecot: DovecotInstance) -> None:
    """anvil lists a hibernated session as ``imap/...`` with the pid of ``dovecot/imap-hibernate``,
    which all hibernated clients share: a warning without --force, both kicked with it."""
    specs = SESSIONS[:2]  # jane, jano
    wait_idle(dovecot)
    with open_sessions(dovecot, specs) as group:
        for session in group:
            session._sock.sendall(b"h IDLE\r\n")  # an idling client is hibernated after 1 s
        deadline = time.monotonic() + 15
        while True:
            pids = {entry.pid for entry in dovecot.connect_dump()}
            titles = {process_cmdline(pid).split(b"\0")[0] for pid in pids}
            if len(pids) == 1 and titles == {b"dovecot/imap-hibernate"}:
                break
            assert time.monotonic() < deadline, titles
            time.sleep(0.1)
        done = dvadm(dovecot, "jane")()
        assert (done.returncode, done.stdout) == (0, f"{WARNING}\njano \n{USE_FORCE['dvadm']}\n".encode())
        assert group.wait_for_disconnects([], timeout=1, settle=0.3) == set()
        done = dvadm(dovecot, "--force", "jane")()
        assert (done.returncode, done.stdout, done.stderr) == (0, dvadm_report(["jane", "jano"]), b"")
        assert group.wait_for_disconnects(specs, timeout=10) == set(specs)
