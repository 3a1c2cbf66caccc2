"""``-S`` across real Dovecot 2.4.1 (trixie) and 2.4.5 (sid) servers, and a fleet mixing them with 2.3.

Each server's result must be exactly its local result (dvadm's local who and kick are tested
against each generation's own doveadm) with the server column; a fleet kick disconnects exactly
the matching sessions, checked from the IMAP clients' side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from doveadm_py.testing import cli
from doveadm_py.testing.dovecot import DovecotInstance, free_port
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.fleet import disconnected, http_api_conf, sessions_on, write_fleet

SERVERS = {"trixie": "2.4-trixie", "sid": "2.4-sid", "old": "2.3"}
SESSIONS = {
    "trixie": [("jane", "127.0.0.1"), ("foo", "127.0.0.5"), ("foo", "127.0.0.6")],
    "sid": [("foo", "127.0.1.9"), ("james", "127.0.0.3"), ("bar@example.org", "127.0.0.7")],
    "old": [("jano", "127.0.0.2"), ("foo", "127.0.0.8")],
}


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.servers: dict[str, DovecotInstance] = {}
        self.file = tmp / "fleet.toml"

    def start(self) -> None:
        entries = {}
        for name, server in SERVERS.items():
            require_dovecot(server)
            port = free_port()
            key = f"{name}-Key-24"
            self.servers[name] = DovecotInstance(
                extra_conf=http_api_conf(port, key, v24=server != "2.3"), server=server
            )
            self.servers[name].start()
            groups = ["v24"] if server != "2.3" else []
            entries[name] = {"url": f"http://127.0.0.1:{port}", "key": key, "groups": groups}
        self.file = write_fleet(self.tmp, entries)

    def run(self, *args: str) -> tuple[int, str, str]:
        proc = cli.run_dvadm(*args, env=dict(os.environ, DVADM_FLEET=str(self.file)), timeout=60)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    def local_tab(self, name: str, cmd: str, *args: str) -> list[str]:
        anvil = str(self.servers[name].anvil_path)
        proc = cli.run_dvadm("-f", "tab", cmd, "-a", anvil, *args, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.decode().splitlines()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path_factory.mktemp("fleet24"))
    try:
        fleet.start()
        yield fleet
    finally:
        for instance in fleet.servers.values():
            instance.stop()


@pytest.fixture
def logged_in(fleet: Fleet) -> Iterator[dict]:
    with sessions_on(fleet.servers, SESSIONS) as groups:
        yield groups


@pytest.mark.parametrize(
    "args",
    [(), ("-1",), ("f*",), ("-1", "foo", "127.0.0.0/24"), ("-1", "-f", "user_alias", "jane-alias")],
)
def test_who_on_24_servers_is_the_union_of_local_who(
    fleet: Fleet, logged_in: dict, args: tuple[str, ...]
) -> None:
    code, out, err = fleet.run("-f", "tab", "who", "-S", "v24", *args)
    assert (code, err) == (0, "")
    expected: list[str] = []
    for name in ("trixie", "sid"):
        title, *rows = fleet.local_tab(name, "who", *args)
        expected = expected or ["server\t" + title]
        expected += [f"{name}\t{row}" for row in rows]
    assert out.splitlines() == expected
    assert len(expected) > 1


def test_a_mixed_fleet_merges_columns_by_name(fleet: Fleet, logged_in: dict) -> None:
    code, out, err = fleet.run("-f", "json", "who", "-S", "all", "-1", "foo")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert [r["server"] for r in rows] == ["trixie", "trixie", "sid", "old"]  # fleet-file order
    assert sorted((r["server"], r["ip"], r["user_alias"]) for r in rows) == [
        ("old", "127.0.0.8", ""),  # 2.3 tracks no alternative usernames
        ("sid", "127.0.1.9", "foo-alias"),
        ("trixie", "127.0.0.5", "foo-alias"),
        ("trixie", "127.0.0.6", "foo-alias"),
    ]
    assert list(rows[0]) == ["server", "username", "service", "pid", "ip", "dest_ip", "user_alias"]
    code, out, err = fleet.run("-f", "tab", "who", "-S", "all", "-f", "user_alias", "foo-alias")
    assert code == 75
    assert err == (
        "Error: old: -f passdb_field needs alternative usernames, which only Dovecot 2.4's anvil tracks; "
        "it runs Dovecot 2.3\n"
    )
    assert out.splitlines()[0] == "server\tusername\t#\tservice\t(pids)\t(ips)"


def test_fleet_kick_on_24_and_23_servers(fleet: Fleet, logged_in: dict) -> None:
    code, out, err = fleet.run("-f", "tab", "kick", "-S", "all", "foo", "127.0.0.0/24")
    assert (code, err) == (0, "")
    assert out == "server\tconnections\tusers\ntrixie\t2\tfoo\nsid\t0\t\nold\t1\tfoo\ntotal\t3\t\n"
    expected = {
        "trixie": {("foo", "127.0.0.5"), ("foo", "127.0.0.6")},
        "sid": set(),
        "old": {("foo", "127.0.0.8")},
    }
    assert disconnected(logged_in, expected) == expected


@pytest.mark.parametrize("mask", ["something", "some*"])
def test_fleet_kick_by_alt_username_on_24(fleet: Fleet, logged_in: dict, mask: str) -> None:
    """james and bar@example.org share the alias "something". With a wildcard doveadm 2.4's slow path
    would send the primary username as the alt value (and kick 0 of 2); dvadm sends the value."""
    code, out, err = fleet.run("-f", "tab", "kick", "-S", "v24", "-f", "user_alias", mask)
    assert (code, err) == (0, "")
    assert out == "server\tconnections\tusers\ntrixie\t0\t\nsid\t2\tbar@example.org james\ntotal\t2\t\n"
    expected = {
        "trixie": set(),
        "sid": {("james", "127.0.0.3"), ("bar@example.org", "127.0.0.7")},
        "old": set(),
    }
    assert disconnected(logged_in, expected) == expected


def test_fleet_kick_never_sends_an_alt_value_shared_with_others(fleet: Fleet, logged_in: dict) -> None:
    code, out, err = fleet.run("-f", "tab", "kick", "-S", "v24", "-f", "user_alias", "some*", "127.0.0.3/32")
    assert (code, out) == (0, "server\tconnections\tusers\ntrixie\t0\t\nsid\t0\t\ntotal\t0\t\n")
    # james matches, but bar@example.org (127.0.0.7) shares the alias: kicking it by value would reach her
    assert err == (
        "Warning: sid: not kicking alt value 'something': "
        "it would also disconnect 1 session(s) that do not match\n"
    )
    assert disconnected(logged_in, {}) == {name: set() for name in SESSIONS}
