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
from doveadm_py.testing.imap import open_sessions

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


@pytest.mark.parametrize("command", ["who", "kick"])
def test_two_networks_in_each_servers_own_words(fleet: Fleet, logged_in: dict, command: str) -> None:
    """Masks wrong to both generations: each server's error as its own doveadm words it (2.4 on the
    command's event, as local dvadm on that server says it), exit 64, nothing read or kicked."""
    code, out, err = fleet.run(command, "-S", "all", "foo", "127.0.0.0/8", "127.0.0.5")
    assert (code, out) == (64, "")
    assert err.splitlines() == [
        f"Error: trixie: cmd {command}: Multiple network masks not supported",
        f"Error: sid: cmd {command}: Multiple network masks not supported",
        "Error: old: Multiple network masks not supported",
    ]
    for name in SERVERS:
        anvil = str(fleet.servers[name].anvil_path)
        local = cli.run_dvadm(command, "-a", anvil, "foo", "127.0.0.0/8", "127.0.0.5", timeout=60)
        assert (local.returncode, local.stderr.decode()) == (
            64,
            err.splitlines()[list(SERVERS).index(name)].replace(f"{name}: ", "") + "\n",
        )
    assert disconnected(logged_in, {}) == {name: set() for name in SESSIONS}


PROXIED = [("jane", "127.0.0.1"), ("foo", "127.0.0.5")]
DIRECT = [("james", "127.0.0.3"), ("foo", "127.0.0.6")]


@pytest.fixture(scope="module", params=["2.4-trixie", "2.4-sid"])
def proxy_fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DovecotInstance, Path]]:
    """A 2.4 server with proxied logins (dest_ip 127.0.0.1) and its doveadm HTTP API."""
    require_dovecot(request.param)
    port = free_port()
    conf = http_api_conf(port, "proxy-Key-24", v24=True)
    with DovecotInstance(extra_conf=conf, server=request.param, proxy=True) as instance:
        path = write_fleet(
            tmp_path_factory.mktemp("proxy-fleet"),
            {"proxy": {"url": f"http://127.0.0.1:{port}", "key": "proxy-Key-24"}},
        )
        yield instance, path


@pytest.mark.parametrize(
    "args",
    [("-h", "127.0.0.1"), ("-h", "127.0.0.1", "jane"), ("-h", "127.0.0.2"), ("-h", "127.0.0.1", "127.0.0.5")],
)
def test_fleet_kick_by_dest_host_is_the_local_kick(
    proxy_fleet: tuple[DovecotInstance, Path], args: tuple[str, ...]
) -> None:
    """``kick -S -h dest_host`` (the server's ``destHost``), alone or with masks, closes exactly the
    proxied sessions the local ``kick -h`` (tested against doveadm 2.4) closes, with its count.
    -h alone through the API kicked nothing before (no masks was read as no alt value to send)."""
    instance, fleet_file = proxy_fleet
    results = {}
    for how in ("fleet", "local"):
        where = ("-S", "proxy") if how == "fleet" else ("-a", str(instance.anvil_path))
        with (
            open_sessions(instance, PROXIED, port=instance.proxy_port) as proxied,
            open_sessions(instance, DIRECT) as direct,
        ):
            dry = cli.run_dvadm("-f", "tab", "kick", *where, "--dry-run", *args, timeout=60,
                                env=dict(os.environ, DVADM_FLEET=str(fleet_file)))  # fmt: skip
            expected = {
                (line.split("\t")[-6], line.split("\t")[-3]) for line in dry.stdout.decode().splitlines()[1:]
            }
            proc = cli.run_dvadm("-f", "tab", "kick", *where, *args, timeout=60,
                                 env=dict(os.environ, DVADM_FLEET=str(fleet_file)))  # fmt: skip
            gone = proxied.wait_for_disconnects(expected, timeout=10, settle=0.3)
            gone |= {s.spec for s in direct.disconnected()}
        assert (proc.returncode, proc.stderr) == (0, b""), (how, proc.stderr)
        results[how] = (expected, gone, proc.stdout.decode().splitlines())
        sessions_gone(instance)
    (fleet_dry, fleet_gone, fleet_out), (local_dry, local_gone, local_out) = (
        results["fleet"],
        results["local"],
    )
    assert fleet_dry == local_dry
    if instance.server.name == "2.4-trixie":
        # 2.4.1's anvil reports the proxies kicked but often closes none of them (observed with
        # doveadm's own kick -h, its API and dvadm's local kick alike). Nothing else is touched.
        assert fleet_gone <= fleet_dry and local_gone <= local_dry
    else:
        assert fleet_gone == fleet_dry == local_gone
    count = local_out[1]
    assert fleet_out == [
        "server\tconnections\tusers",
        f"proxy\t{count}\t" + " ".join(sorted({u for u, _ in fleet_dry})),
        f"total\t{count}\t",
    ]
    assert int(count) == len(fleet_dry) == {"127.0.0.2": 0, "jane": 1, "127.0.0.5": 1}.get(args[-1], 2)


def sessions_gone(instance: DovecotInstance, timeout: float = 10.0) -> None:
    """Wait (bounded) until anvil lists no session, so the next kick starts from the same state."""
    import time

    deadline = time.monotonic() + timeout
    while instance.connect_dump() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("foo",), ["trixie", "sid", "old"]),
        (("f*", "127.0.0.0/24"), ["trixie", "sid", "old"]),
        (("-f", "user_alias", "something"), ["trixie", "sid"]),
        (("*",), ["trixie", "sid", "old"]),
        (("nobody",), ["trixie", "sid", "old"]),
        (("nobody",), ["old"]),
        (("nobody",), ["sid"]),
    ],
    ids=lambda a: " ".join(a),
)
def test_fleet_dry_run_is_each_servers_local_dry_run(
    fleet: Fleet, logged_in: dict, args: tuple[str, ...], names: list[str]
) -> None:
    """``kick -S --dry-run`` lists, per server, exactly what dvadm's local dry run on that server
    lists (tested against what each generation's kick then kicks), with the server column; it
    exits 68 when it lists nothing and every server is a 2.3, as the local 2.3 dry run does."""
    targets = [arg for name in names for arg in ("-S", name)]
    code, out, err = fleet.run("-f", "tab", "kick", *targets, "--dry-run", *args)
    expected: list[str] = []
    codes = []
    for name in names:
        anvil = str(fleet.servers[name].anvil_path)
        local = cli.run_dvadm("-f", "tab", "kick", "-a", anvil, "--dry-run", *args, timeout=60)
        codes.append(local.returncode)
        assert local.returncode in (0, 68), local.stderr
        title, *rows = local.stdout.decode().splitlines()
        expected = expected or ["server\t" + (title.replace("proto", "service") if len(names) > 1 else title)]
        expected += [
            f"{name}\t{row}" + ("\t\t" if SERVERS[name] == "2.3" and "dest_ip" in expected[0] else "")
            for row in rows
        ]
    assert (code, err) == (68 if set(codes) == {68} else 0, "")
    assert out.splitlines() == expected
    assert disconnected(logged_in, {}) == {name: set() for name in SESSIONS}
