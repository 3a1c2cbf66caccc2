"""``-S``: who and kick across several real Dovecot 2.3 servers through their doveadm HTTP API.

Three throwaway instances, each with its own API key and HTTP listener, IMAP sessions on
each. The fleet's result must be exactly the union of each server's local result with the
server column, and a server that is down, hung or asked with a wrong key must leave the
others' results intact (exit 75, its name and the reason on stderr).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from doveadm_py.testing import cli
from doveadm_py.testing.dovecot import DovecotInstance, free_port
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.fleet import disconnected, http_api_conf, sessions_on, write_fleet
from doveadm_py.testing.imap import open_sessions

KEYS = {"alpha": "alpha-Key-8c1f", "beta": "beta-Key-77d2", "gamma": "gamma-Key-1b9e"}
SESSIONS = {
    "alpha": [("jane", "127.0.0.1"), ("foo", "127.0.0.5"), ("foo", "127.0.0.6")],
    "beta": [("foo", "127.0.1.9"), ("james", "127.0.0.3")],
    "gamma": [("jano", "127.0.0.2"), ("bar@example.org", "127.0.0.7"), ("jane", "127.0.2.1")],
}


class Fleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.servers: dict[str, DovecotInstance] = {}
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        for name, key in KEYS.items():
            port = free_port()
            instance = DovecotInstance(extra_conf=http_api_conf(port, key))
            instance.start()
            self.servers[name] = instance
            self.ports[name] = port
        groups = {"alpha": ["backends"], "beta": ["backends"], "gamma": ["proxies"]}
        self.file = write_fleet(
            self.tmp,
            {
                name: {
                    "url": f"http://127.0.0.1:{self.ports[name]}",
                    "key": KEYS[name],
                    "groups": groups[name],
                }
                for name in KEYS
            },
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop(self) -> None:
        for instance in self.servers.values():
            instance.stop()

    def env(self, fleet_file: Path | None = None) -> dict[str, str]:
        return dict(os.environ, DVADM_FLEET=str(fleet_file or self.file))

    def run(self, *args: str, fleet_file: Path | None = None) -> tuple[int, str, str]:
        proc = cli.run_dvadm(*args, env=self.env(fleet_file), timeout=60)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    def local(self, name: str, *args: str) -> tuple[int, str, str]:
        """The same command on that server's own anvil (dvadm local mode, tested against doveadm)."""
        instance = self.servers[name]
        global_args = [a for a in args if a.startswith("-f") or a in ("json", "tab", "flow")]
        rest = list(args[len(global_args) :])
        cmd, *cmd_args = rest
        proc = cli.run_dvadm(*global_args, cmd, "-a", str(instance.anvil_path), *cmd_args, timeout=60)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_dovecot()
    fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def logged_in(fleet: Fleet) -> Iterator[dict]:
    with sessions_on(fleet.servers, SESSIONS) as groups:
        yield groups


def expected_union(fleet: Fleet, names: list[str], *args: str) -> str:
    """Each server's local ``-f tab`` output with a leading server column, titles once."""
    lines: list[str] = []
    for name in names:
        code, out, err = fleet.local(name, "-f", "tab", *args)
        assert code == 0, err
        title, *rows = out.splitlines()
        if not lines:
            lines.append("server\t" + title)
        lines += [f"{name}\t{row}" for row in rows]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "args",
    [
        ("who",),
        ("who", "-1"),
        ("who", "f*"),
        ("who", "-1", "foo", "127.0.0.0/24"),
        ("who", "foo", "127.0.0.0/24"),
        ("who", "ja*", "nobody"),
        ("who", "-1", "127.0.0.0/30"),
    ],
)
def test_merged_who_is_the_union_of_local_who(fleet: Fleet, logged_in: object, args: tuple[str, ...]) -> None:
    code, out, err = fleet.run("-f", "tab", args[0], "-S", "all", *args[1:])
    assert (code, err) == (0, "")
    assert out == expected_union(fleet, list(KEYS), *args)


def test_groups_and_names_select_in_fleet_file_order(fleet: Fleet, logged_in: object) -> None:
    code, out, err = fleet.run("-f", "tab", "who", "-S", "gamma", "-S", "backends", "-1")
    assert (code, err) == (0, "")
    assert out == expected_union(fleet, ["alpha", "beta", "gamma"], "who", "-1")
    code, out, err = fleet.run("-f", "tab", "who", "-S", f"http://127.0.0.1:{fleet.ports['beta']}")
    assert (code, err) == (0, "")
    assert out == expected_union(fleet, ["beta"], "who")


def test_json_rows_carry_the_server(fleet: Fleet, logged_in: object) -> None:
    import json

    code, out, err = fleet.run("-f", "json", "who", "-S", "all", "-1", "jane")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert [(r["server"], r["username"], r["ip"]) for r in rows] == [
        ("alpha", "jane", "127.0.0.1"),
        ("gamma", "jane", "127.0.2.1"),
    ]
    assert list(rows[0]) == ["server", "username", "service", "pid", "ip"]


def test_a_down_hung_or_wrong_key_server_leaves_the_others_intact(
    fleet: Fleet, logged_in: object, tmp_path: Path
) -> None:
    down = free_port()
    hung = socket.create_server(("127.0.0.1", 0))  # listens, never accepts: the request gets no answer
    try:
        servers = {
            name: {"url": f"http://127.0.0.1:{fleet.ports[name]}", "key": KEYS[name]}
            for name in ("alpha", "beta")
        }
        servers["down"] = {"url": f"http://127.0.0.1:{down}", "key": "k"}
        servers["hung"] = {"url": f"http://127.0.0.1:{hung.getsockname()[1]}", "key": "k"}
        servers["wrongkey"] = {"url": f"http://127.0.0.1:{fleet.ports['gamma']}", "key": "not-gammas-key"}
        fleet_file = write_fleet(tmp_path, servers)
        code, out, err = fleet.run(
            "-o", "dvadm_http_timeout=2", "-f", "tab", "who", "-S", "all", fleet_file=fleet_file
        )
    finally:
        hung.close()
    assert code == 75
    assert out == expected_union(fleet, ["alpha", "beta"], "who")
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith(f"Error: down: cannot connect to http://127.0.0.1:{down}: Connection refused")
    assert lines[1].startswith("Error: hung: no answer from") and "within 2 s" in lines[1]
    assert "wrong credentials are a likely cause" in lines[1]
    # 2.3.19 answers 401, unless the request says "Connection: close": then never. dvadm never says it.
    assert lines[2] == "Error: wrongkey: authentication failed (HTTP 401): check the API key or password"
    assert "not-gammas-key" not in out + err


def test_secrets_never_appear_even_with_debug(fleet: Fleet, logged_in: object) -> None:
    code, out, err = fleet.run("-D", "-f", "json", "who", "-S", "all", "-1")
    assert code == 0, err
    assert "Debug: http alpha> POST" in err
    text = out + err
    for key in KEYS.values():
        assert key not in text
        import base64

        assert base64.b64encode(key.encode()).decode() not in text


def test_a_and_s_together_is_a_usage_error(fleet: Fleet) -> None:
    code, out, err = fleet.run("who", "-S", "alpha", "-a", str(fleet.servers["alpha"].anvil_path))
    assert (code, out) == (64, "")
    assert err == "Error: -a (a local anvil socket) and -S (remote servers) cannot be used together\n"


def test_unknown_target_is_a_usage_error(fleet: Fleet) -> None:
    code, out, err = fleet.run("who", "-S", "nosuch")
    assert (code, out) == (64, "")
    assert err == f"Error: -S nosuch: no such server or group in {fleet.file}\n"


def test_fleet_kick_disconnects_exactly_the_matching_sessions(fleet: Fleet, logged_in: dict) -> None:
    code, out, err = fleet.run("kick", "-S", "all", "foo", "127.0.0.0/24")
    assert (code, err) == (0, "")
    assert out.split() == [
        "server",
        "connections",
        "users",
        "alpha",
        "2",
        "foo",
        "beta",
        "0",
        "gamma",
        "0",
        "total",
        "2",
    ]
    expected = {"alpha": {("foo", "127.0.0.5"), ("foo", "127.0.0.6")}, "beta": set(), "gamma": set()}
    assert disconnected(logged_in, expected) == expected
    kicked = [s for s in logged_in["alpha"] if s.user == "foo"]
    assert all(s.received.endswith(b"* BYE Server shutting down.\r\n") for s in kicked)


def test_fleet_kick_by_wildcard_on_a_group(fleet: Fleet, logged_in: dict) -> None:
    code, out, err = fleet.run("-f", "tab", "kick", "-S", "backends", "ja*")
    assert (code, err) == (0, "")
    assert out == "server\tconnections\tusers\nalpha\t1\tjane\nbeta\t1\tjames\ntotal\t2\t\n"
    expected = {"alpha": {("jane", "127.0.0.1")}, "beta": {("james", "127.0.0.3")}, "gamma": set()}
    assert disconnected(logged_in, expected) == expected


def test_fleet_kick_in_the_formatted_formatter(fleet: Fleet, logged_in: dict) -> None:
    """``-f formatted``, the local kick's default, has a format for the fleet's rows (it failed with
    exit 75 after kicking)."""
    code, out, err = fleet.run("-f", "formatted", "kick", "-S", "backends", "ja*")
    assert (code, err) == (0, "")
    assert out == "alpha: 1 connections kicked\nbeta: 1 connections kicked\ntotal: 2 connections kicked\n"
    expected = {"alpha": {("jane", "127.0.0.1")}, "beta": {("james", "127.0.0.3")}, "gamma": set()}
    assert disconnected(logged_in, expected) == expected


def test_fleet_kick_dry_run_kicks_nothing(fleet: Fleet, logged_in: dict) -> None:
    code, out, err = fleet.run("-f", "tab", "kick", "-S", "all", "--dry-run", "j*")
    assert (code, err) == (0, "")
    assert out == expected_union(fleet, list(KEYS), "who", "-1", "j*")
    code, out, err = fleet.run("-f", "tab", "kick", "-S", "all", "nobody")
    assert (code, err) == (68, "")
    assert out == "server\tconnections\tusers\nalpha\t0\t\nbeta\t0\t\ngamma\t0\t\ntotal\t0\t\n"
    assert disconnected(logged_in, {}) == {name: set() for name in KEYS}


SHARED = "service imap {\n  client_limit = 10\n  process_limit = 1\n  service_count = 0\n}\n"


def test_fleet_kick_refuses_a_process_shared_with_other_users(
    tmp_path: Path, dovecot_factory: object
) -> None:
    port = free_port()
    shared = dovecot_factory(extra_conf=http_api_conf(port, "shared-key") + SHARED)  # type: ignore[operator]
    fleet_file = write_fleet(tmp_path, {"shared": {"url": f"http://127.0.0.1:{port}", "key": "shared-key"}})
    env = dict(os.environ, DVADM_FLEET=str(fleet_file))
    with open_sessions(shared, [("jane", "127.0.0.1"), ("foo", "127.0.0.5")]) as group:
        assert len({e.pid for e in shared.connect_dump()}) == 1  # both in one imap process
        proc = cli.run_dvadm("kick", "-S", "shared", "jane", env=env, timeout=60)
        assert proc.returncode == 0  # a refusal exits 0, as the local 2.3 kick's and doveadm's
        assert proc.stderr.decode() == (
            "Warning: shared: nothing kicked: other connections would also be kicked from following users: "
            "foo; use the '--force' option to enforce it\n"
        )
        assert proc.stdout.decode().split() == ["server", "connections", "users", "shared", "0", "total", "0"]
        assert group.wait_for_disconnects(set(), timeout=1) == set()
        proc = cli.run_dvadm("kick", "-S", "shared", "--force", "jane", env=env, timeout=60)
        assert (proc.returncode, proc.stderr) == (0, b"")
        assert proc.stdout.decode().split() == [
            "server",
            "connections",
            "users",
            "shared",
            "2",
            "foo",
            "jane",
            "total",
            "2",
        ]
        both = {("jane", "127.0.0.1"), ("foo", "127.0.0.5")}
        assert group.wait_for_disconnects(both, timeout=10) == both


def test_password_auth_and_a_url_not_in_the_fleet_file(tmp_path: Path, dovecot_factory: object) -> None:
    port = free_port()
    server = dovecot_factory(extra_conf=http_api_conf(port, password="pw-Secret-51"))  # type: ignore[operator]
    url = f"http://127.0.0.1:{port}"
    fleet_file = write_fleet(tmp_path, {"pw": {"url": url, "password_env": "FLEET_PW"}})
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with open_sessions(server, [("jane", "127.0.0.1")]):
        for env, target, name in (
            ({"DVADM_FLEET": str(fleet_file), "FLEET_PW": "pw-Secret-51"}, "pw", "pw"),
            ({"DVADM_FLEET": str(empty), "DVADM_PASSWORD": "pw-Secret-51"}, url, url),
        ):
            proc = cli.run_dvadm(
                "-D", "-f", "tab", "who", "-S", target, env=dict(os.environ, **env), timeout=60
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.decode().splitlines()[1].startswith(f"{name}\tjane\t1\timap\t(")
            assert b"pw-Secret-51" not in proc.stdout + proc.stderr
        env = {"DVADM_FLEET": str(fleet_file), "FLEET_PW": "wrong"}
        proc = cli.run_dvadm("who", "-S", "pw", env=dict(os.environ, **env), timeout=60)
        assert (proc.returncode, proc.stdout) == (75, b"")
        assert proc.stderr == b"Error: pw: authentication failed (HTTP 401): check the API key or password\n"
