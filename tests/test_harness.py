"""The real-Dovecot harness: instance life cycle, sessions from many loopback IPs, and the 2.3 server facts
(who, raw anvil dump, kick) that dvadm's differential tests stand on."""

from __future__ import annotations

import re
import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from doveadm_py.testing import dovecot as dovecot_module_
from doveadm_py.testing.dovecot import (
    DovecotInstance,
    anvil_exchange,
    child_processes,
    free_port,
    process_alive,
    process_cmdline,
)
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.imap import (
    ImapSession,
    LoginError,
    SessionGroup,
    failed_login,
    open_sessions,
    wait_registered,
)

SPECS = [("jane", "127.0.0.1"), ("jano", "127.0.0.2"), ("foo", "127.0.0.5"), ("foo", "127.0.1.9")]
DUMP_LINE = re.compile(rb"imap/(127\.\d+\.\d+\.\d+)/([^\t/]+)\t(\d+)\t(\d+)")


@pytest.fixture(scope="module")
def module_sessions(dovecot_module: DovecotInstance) -> Iterator[SessionGroup]:
    """SPECS logged in once on the shared instance, for tests that only look."""
    with open_sessions(dovecot_module, SPECS) as group:
        yield group


def who_rows(stdout: bytes) -> list[list[str]]:
    lines = stdout.decode().splitlines()
    assert lines[0].split() == ["username", "proto", "pid", "ip"]
    return [line.split() for line in lines[1:]]


@pytest.mark.dovecot
def test_real_who_lists_exactly_the_sessions(
    dovecot_module: DovecotInstance, module_sessions: SessionGroup
) -> None:
    done = dovecot_module.doveadm("who", "-1")
    assert done.returncode == 0, done.stderr
    rows = who_rows(done.stdout)
    assert Counter((row[0], row[3]) for row in rows) == Counter(SPECS)
    assert {row[1] for row in rows} == {"imap"}
    assert len({row[2] for row in rows}) == len(SPECS)  # client_limit = 1: one process per session


@pytest.mark.dovecot
def test_raw_connect_dump_names_live_imap_processes(
    dovecot_module: DovecotInstance, module_sessions: SessionGroup
) -> None:
    reply = anvil_exchange(dovecot_module.anvil_path, b"VERSION\tanvil\t1\t0\nCONNECT-DUMP\n")
    assert reply.endswith(b"\n\n")
    matches = [DUMP_LINE.fullmatch(line) for line in reply[:-2].split(b"\n")]
    assert all(matches), reply
    assert Counter((m[2].decode(), m[1].decode()) for m in matches if m) == Counter(SPECS)
    for match in matches:
        assert match is not None and match[4] == b"1"
        pid = int(match[3])
        assert process_alive(pid)
        assert process_cmdline(pid).split(b"\0")[0] == b"dovecot/imap"


@pytest.mark.dovecot
def test_failed_login_is_refused_and_penalised(dovecot_module: DovecotInstance) -> None:
    before = time.time()
    reply = failed_login(dovecot_module.host, dovecot_module.imap_port or 0, "jane", "wrong", "127.0.0.77")
    assert reply.startswith(b"a NO [AUTHENTICATIONFAILED]")
    rows = [
        line.split(b"\t") for line in dovecot_module.anvil_request(b"PENALTY-DUMP\n").splitlines() if line
    ]
    [row] = [row for row in rows if row[0] == b"127.0.0.77"]
    assert row[1] == b"1"
    assert int(before) - 1 <= int(row[2]) <= time.time() + 1


@pytest.mark.dovecot
def test_kick_disconnects_exactly_the_target(dovecot: DovecotInstance, imap_sessions) -> None:
    group = imap_sessions(SPECS)
    done = dovecot.doveadm("kick", "jano")
    assert (done.returncode, done.stdout) == (0, b"jano kicked connections from the following users:\n\n")
    assert group.wait_for_disconnects({("jano", "127.0.0.2")}) == {("jano", "127.0.0.2")}
    [kicked] = group.disconnected()
    assert kicked.received == b"* BYE Server shutting down.\r\n"
    assert [session.spec for session in group.connected()] == [spec for spec in SPECS if spec[0] != "jano"]
    assert {entry.ident for entry in wait_registered(dovecot, 3)} == {s.ident for s in group.connected()}


@pytest.mark.dovecot
def test_stop_leaves_no_process_and_no_files(dovecot_factory, imap_sessions) -> None:
    instance = dovecot_factory()
    group = imap_sessions(SPECS[:2], instance=instance)
    master, work_dir = instance.master_pid or 0, instance.work_dir
    children = child_processes(master)
    imap_pids = {entry.pid for entry in instance.connect_dump()}
    assert imap_pids and imap_pids <= set(children)
    started = time.monotonic()
    instance.stop()
    assert time.monotonic() - started < instance.stop_timeout
    assert not process_alive(master)
    assert [pid for pid in children if process_alive(pid)] == []
    assert work_dir is not None and not work_dir.exists()
    # shutdown_clients = yes: the server says goodbye to every session.
    assert group.wait_for_disconnects(set(SPECS[:2])) == set(SPECS[:2])
    assert {session.received for session in group} == {b"* BYE Server shutting down.\r\n"}


@pytest.mark.dovecot(users={"alice": 'pa ss"word\\'}, extra_conf="mail_max_userip_connections = 7\n")
def test_marker_configures_users_and_extra_conf(dovecot: DovecotInstance, imap_sessions) -> None:
    assert dovecot.doveconf("-h", "mail_max_userip_connections").stdout == b"7\n"
    [alice] = imap_sessions([("alice", "127.0.0.9")])
    assert alice.login_reply.startswith(b"a OK") and alice.is_connected()
    with pytest.raises(LoginError) as refused:
        ImapSession(dovecot.host, dovecot.imap_port or 0, "jane", "secret", "127.0.0.10")
    assert refused.value.reply.startswith(b"a NO")


@pytest.mark.dovecot
def test_start_retries_on_a_port_clash(dovecot_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(dovecot_module_, "free_port", lambda host: next(ports, None) or free_port(host))
        instance = dovecot_factory()
    assert instance.imap_port != taken and instance.running
    assert f"listen(127.0.0.1, {taken}) failed: Address already in use" in instance.log_text()
    with ImapSession(instance.host, instance.imap_port or 0, "jane", "secret") as session:
        assert session.is_connected()


INNER_TEST = """
def test_needs_dovecot(dovecot):
    pass
"""


@pytest.mark.parametrize(
    ("require", "outcome", "message"),
    [
        ("", {"skipped": 1}, "*no dovecot binary found*"),
        ("1", {"errors": 1}, "*DVADM_REQUIRE_DOVECOT=1 requires*"),
    ],
)
def test_without_dovecot_tests_skip_or_fail_on_request(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    require: str,
    outcome: dict[str, int],
    message: str,
) -> None:
    monkeypatch.setenv("DVADM_DOVECOT", str(pytester.path / "no-such-dovecot"))
    monkeypatch.setenv("DVADM_REQUIRE_DOVECOT", require)
    pytester.makeconftest('pytest_plugins = ["doveadm_py.testing.fixtures"]')
    pytester.makepyfile(INNER_TEST)
    result = pytester.runpytest_inprocess("-rsE")
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines([message])


@pytest.mark.dovecot
def test_failed_test_report_carries_the_dovecot_log(pytester: pytest.Pytester) -> None:
    require_dovecot()
    pytester.makeconftest('pytest_plugins = ["doveadm_py.testing.fixtures"]')
    pytester.makepyfile(
        "def test_fails(dovecot):\n    assert dovecot.doveadm('kick', 'nobody').returncode == 0\n"
    )
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*- dovecot log (/tmp/dvadm-dovecot-*) -*", "*master: Info: Dovecot v2.3*starting up*"]
    )
