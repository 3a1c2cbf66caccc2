"""The harness's servers: 2.3 on the host, 2.4.1 and 2.4.5 in chroots, each with users' alternative
usernames and an in-instance IMAP proxy, started and stopped without leaving processes, mounts or files."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from doveadm_py.testing import DovecotInstance, anvil_exchange_v2, servers
from doveadm_py.testing.dovecot import child_processes, process_alive, process_cmdline
from doveadm_py.testing.fixtures import dovecot_servers
from doveadm_py.testing.lmtp import held_delivery, wait_lmtp_registered
from doveadm_py.testing.servers import CHROOTS_ENV, SERVERS, DovecotServer

pytestmark = pytest.mark.dovecot

DIRECT = [("jane", "127.0.0.2"), ("james", "127.0.0.3")]
PROXIED = [("foo", "127.0.3.7")]


@dovecot_servers()
def test_runs_the_requested_version(dovecot_server: DovecotServer, dovecot: DovecotInstance) -> None:
    version = dovecot_server.version() or ""
    assert version.startswith(dovecot_server.version_prefix)
    assert f"Dovecot v{version.split()[0]}" in dovecot.log_text()
    assert dovecot.doveadm("who").returncode == 0
    expected_root = dovecot_server.root
    assert expected_root is None or dovecot.anvil_path.is_relative_to(expected_root)


@dovecot_servers()
@pytest.mark.dovecot(proxy=True)
def test_direct_and_proxied_logins_with_alt_usernames(
    dovecot_server: DovecotServer, dovecot: DovecotInstance, imap_sessions
) -> None:
    imap_sessions(DIRECT)
    imap_sessions(PROXIED, port=dovecot.proxy_port)
    idents = Counter(entry.ident for entry in dovecot.connect_dump())
    backend = Counter(f"imap/{ip}/{user}" for user, ip in DIRECT + PROXIED)
    if dovecot_server.generation == 1:
        assert idents == backend  # 2.3 anvil does not track login processes
        return
    assert idents == backend + Counter({"imap-login/127.0.3.7/foo": 1})
    header, body = anvil_exchange_v2(dovecot.anvil_path, b"CONNECT-DUMP\n")
    assert header == "user_alias"
    rows = {(row[1], row[2]): row for row in (line.split("\t") for line in body.decode().splitlines())}
    # pid, user, service, ip, guid, dest_ip, user_alias
    assert rows["jane", "imap"][5:] == ["", "jane-alias"]
    assert rows["james", "imap"][5:] == ["", "something"]
    assert rows["foo", "imap"][3] == "127.0.3.7"  # the backend got the client's IP from the proxy
    assert rows["foo", "imap"][5:] == ["", "foo-alias"]
    assert rows["foo", "imap-login"][3] == "127.0.3.7"
    assert rows["foo", "imap-login"][5:] == ["127.0.0.1", "foo-alias"]


@dovecot_servers()
def test_stop_leaves_no_process_mount_or_file(
    dovecot_server: DovecotServer, dovecot_factory, imap_sessions
) -> None:
    instance = dovecot_factory(proxy=True, lmtp=True)
    imap_sessions(DIRECT, instance=instance)
    with held_delivery(instance, ["jane"]):  # an LMTP process too, stopped with the rest
        wait_lmtp_registered(instance, 1)
        master, work_dir = instance.master_pid or 0, instance.work_dir
        children = child_processes(master)
        assert any(process_cmdline(pid).startswith(b"dovecot/lmtp") for pid in children)
        root = dovecot_server.root
        if root is not None:
            # /dev and /proc are mounted in the master's own mount namespace, never in ours.
            assert os.readlink(f"/proc/{master}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            theirs = [line.split()[4] for line in Path(f"/proc/{master}/mountinfo").read_text().splitlines()]
            assert {"/dev", "/proc"} <= set(theirs)  # mount points as the chrooted master sees them
            assert str(root) not in Path("/proc/self/mountinfo").read_text()
        instance.stop()
    assert not process_alive(master)
    assert [pid for pid in children if process_alive(pid)] == []
    assert work_dir is not None and not work_dir.exists()
    if root is not None:
        assert str(root) not in Path("/proc/self/mountinfo").read_text()


INNER_TEST = """
import pytest

@pytest.mark.dovecot(server="2.4-sid")
def test_needs_sid(dovecot):
    pass
"""


@pytest.mark.parametrize(
    ("require", "outcome"), [("", {"skipped": 1}), ("1", {"errors": 1})], ids=["skip", "required"]
)
def test_a_missing_chroot_skips_or_fails_on_request(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    require: str,
    outcome: dict[str, int],
) -> None:
    monkeypatch.setenv(CHROOTS_ENV, str(pytester.path / "no-chroots"))
    monkeypatch.setenv("DVADM_REQUIRE_DOVECOT", require)
    pytester.makeconftest('pytest_plugins = ["doveadm_py.testing.fixtures"]')
    pytester.makepyfile(INNER_TEST)
    result = pytester.runpytest_inprocess("-rsE")
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines(["*no Debian sid chroot at */no-chroots/dovecot-sid*build-dovecot-chroots*"])


def test_a_chroot_server_without_unshare_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Named, not a crash at start-up: the chroot's master runs under unshare, its tools under chroot."""
    (tmp_path / "dovecot-sid").mkdir()
    monkeypatch.setenv(CHROOTS_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(servers, "_SYSTEM_DIRS", ())
    reason = SERVERS["2.4-sid"].unavailable_reason()
    assert reason == "Dovecot 2.4-sid runs in a chroot, which needs unshare and mount and chroot (util-linux)"
