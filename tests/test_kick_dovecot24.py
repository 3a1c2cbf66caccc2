"""``dvadm kick`` on real Dovecot 2.4 servers (Debian's 2.4.1 and 2.4.5 chroots), next to their own
``doveadm kick``: machine formats byte for byte, a dry run listing exactly what the kick then kicks,
alternative usernames (``-f``) and proxy destinations (``-h``), with direct and proxied logins (an
``imap-login`` session plus the backend session it opened).

2.4's lmtp (the one unkickable service) is in tests/test_kick_lmtp.py, with real LMTP deliveries."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Collection, Iterator

import pytest

from doveadm_py.testing import DovecotInstance, open_sessions, wait_registered
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.fixtures import dovecot_servers
from doveadm_py.testing.servers import DovecotServer

pytestmark = [pytest.mark.dovecot, dovecot_servers("2.4-trixie", "2.4-sid")]

DIRECT = [("jane", "127.0.0.1"), ("foo", "127.0.0.5")]
PROXIED = [("jano", "127.0.0.2")]


@pytest.fixture(scope="module")
def server(dovecot_server: DovecotServer) -> Iterator[DovecotInstance]:
    with DovecotInstance(server=dovecot_server, proxy=True) as instance:
        yield instance


def dvadm_kick(
    instance: DovecotInstance, *args: str, formatter: str | None = None
) -> tuple[int, bytes, bytes]:
    pre = ("-f", formatter) if formatter else ()
    done = run_dvadm(*pre, "kick", "-a", str(instance.anvil_path), *args, timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("formatter", ["json", "tab", "flow"])
def test_machine_formats_match_doveadm(server: DovecotInstance, formatter: str) -> None:
    outputs = []
    for tool in ("dvadm", "doveadm"):
        wait_registered(server, 0, timeout=10)
        with open_sessions(server, DIRECT) as group:
            if tool == "dvadm":
                code, out, err = dvadm_kick(server, "jane", formatter=formatter)
            else:
                done = server.doveadm("-f", formatter, "kick", "jane")
                code, out, err = done.returncode, done.stdout, done.stderr
            assert group.wait_for_disconnects([DIRECT[0]], timeout=10, settle=0.3) == {DIRECT[0]}
        outputs.append((code, out, err))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == 0 and b"1" in outputs[0][1]


def test_dry_run_lists_what_the_kick_kicks(dovecot_server: DovecotServer) -> None:
    """Logins proxied to another instance, as on a real proxy: anvil's count is then exact (one kick of a
    proxy and its own backend in one anvil may miss the backend, or panic 2.4's anvil: see FORMS)."""
    trusting_the_proxy = "login_trusted_networks = 127.0.0.1/32\n"  # the backend sees the clients' IPs
    with (
        DovecotInstance(extra_conf=trusting_the_proxy, server=dovecot_server) as backend,
        DovecotInstance(server=dovecot_server, proxy=True, backend_port=backend.imap_port) as front,
        open_sessions(front, DIRECT) as direct,
        open_sessions(backend, PROXIED, port=front.proxy_port) as proxied,  # waits on the backend's anvil
    ):
        wait_registered(front, {f"imap-login/{ip}/{user}": 1 for user, ip in PROXIED}, timeout=10)
        code, out, err = dvadm_kick(front, "--dry-run", "*")
        assert (code, err) == (0, b"")
        rows = out.decode().splitlines()[1:]
        assert sorted(row.split()[1] for row in rows) == ["imap", "imap", "imap-login"]
        assert direct.wait_for_disconnects([], timeout=1, settle=0.3) == set()
        code, out, err = dvadm_kick(front, "*")
        assert (code, out, err) == (0, b"%d connections kicked\n" % len(rows), b"")
        assert direct.wait_for_disconnects(DIRECT, timeout=10) == set(DIRECT)
        # anvil asks the login process to kick: 2.4.1's one-client login processes keep the proxied
        # session while anvil counts it kicked (doveadm's own kick alike), 2.4.5's end it
        keeps = (dovecot_server.version() or "").startswith("2.4.1")
        gone = proxied.wait_for_disconnects(PROXIED, timeout=3 if keeps else 10, settle=0.3)
        assert gone == (set() if keeps else set(PROXIED))


# (masks, the (user, ip) of the sessions that must go; None: compare the tools only). No form kicks a
# proxied session's imap-login and its backend together: anvil 2.4.5 (seen on 2.4.1 too) may then panic
# ("connection.c: line 1018 (connection_disconnect_reason): assertion failed"): kicking the proxy ends its
# backend, whose admin socket anvil connects to next. That needs a proxy and its backend in one anvil,
# which only a proxy into its own instance has, and it takes the instance's anvil down.
FORMS = [
    pytest.param(["-f", "user_alias", "foo-alias"], [("foo", "127.0.0.5"), ("foo", "127.0.0.6")], id="alt"),
    pytest.param(["-f", "user_alias", "jane-alias"], [("jane", "127.0.0.1")], id="alt-one"),
    pytest.param(["-f", "user_alias", "nothing"], [], id="alt-no-match"),
    pytest.param(["-h", "127.0.0.1"], None, id="dest-host"),
    pytest.param(["-h", "127.0.0.1", "jano"], None, id="dest-host-user"),
    pytest.param(["-h", "127.0.0.2"], [], id="dest-host-no-match"),
]
ALT_DIRECT = [("jane", "127.0.0.1"), ("foo", "127.0.0.5"), ("foo", "127.0.0.6")]


@pytest.fixture(scope="module")
def proxy_server(dovecot_server: DovecotServer) -> Iterator[DovecotInstance]:
    """An instance of its own: a Dovecot panic elsewhere (see above) cannot take these tests along."""
    with DovecotInstance(server=dovecot_server, proxy=True) as instance:
        yield instance


def kick_with_proxied_sessions(
    instance: DovecotInstance, run: Callable[[], subprocess.CompletedProcess[bytes]], expected: Collection
) -> tuple[subprocess.CompletedProcess[bytes], frozenset[tuple[str, str]]]:
    """Fresh direct and proxied sessions, one kick; (its result, the (user, ip) of the sessions gone)."""
    wait_registered(instance, 0, timeout=10)
    with (
        open_sessions(instance, ALT_DIRECT) as direct,
        open_sessions(instance, PROXIED, port=instance.proxy_port) as proxied,
    ):
        done = run()
        gone = direct.wait_for_disconnects(expected, timeout=10, settle=0)
        gone |= proxied.wait_for_disconnects(expected, timeout=10, settle=0.3)
        gone |= {session.spec for session in direct.disconnected()}
    return done, frozenset(gone)


@pytest.mark.parametrize(("masks", "expected"), FORMS)
def test_alt_username_and_proxy_destination(
    proxy_server: DovecotInstance, masks: list[str], expected: list[tuple[str, str]] | None
) -> None:
    ours, ours_gone = kick_with_proxied_sessions(
        proxy_server, lambda: run_dvadm("kick", "-a", str(proxy_server.anvil_path), *masks), expected or []
    )
    theirs, theirs_gone = kick_with_proxied_sessions(
        proxy_server, lambda: proxy_server.doveadm("kick", *masks), expected or []
    )
    assert ours_gone == theirs_gone
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    assert (ours.returncode, ours.stderr) == (0, b"")
    if expected is not None:
        assert ours_gone == set(expected)
        assert ours.stdout == f"{len(expected)} connections kicked\n".encode()


def test_two_networks_in_doveadm_24s_words(server: DovecotInstance) -> None:
    """2.4 logs it on the command's event: "Error: cmd kick: Multiple network masks not supported".

    doveadm 2.4.1 crashes here instead (SIGSEGV, seen on trixie's 2.4.1): dvadm gives 2.4.5's answer.
    """
    args = ("jane", "10.0.0.0/8", "10.0.0.0/16")
    ours = dvadm_kick(server, *args)
    assert ours == (64, b"", b"Error: cmd kick: Multiple network masks not supported\n")
    theirs = server.doveadm("kick", *args)
    if theirs.returncode >= 0:  # not killed by a signal
        assert (theirs.returncode, theirs.stdout, theirs.stderr) == ours
