"""``dvadm penalty -S``: penalties of a real Dovecot 2.3 and a 2.4.5 through their doveadm HTTP API.

The merged result must be each server's local ``dvadm penalty`` (itself tested byte for byte
against ``doveadm penalty``) with a leading server column, in fleet-file order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from doveadm_py.api import run_dvadm
from doveadm_py.testing import DovecotInstance, failed_login
from doveadm_py.testing.dovecot import free_port
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.fleet import http_api_conf, write_fleet

# A failure delay: 2.4 records no penalty when it answers a failure at once.
ATTEMPTS = [
    ("one", "127.0.0.77", "wrong-1"),
    ("two", "127.0.0.78", "wrong-1"),
    ("two", "127.0.0.79", "wrong-2"),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, DovecotInstance], Path]]:
    require_dovecot()
    instances: dict[str, DovecotInstance] = {}
    entries = {}
    try:
        for name, server in (("one", "2.3"), ("two", "2.4-sid")):
            require_dovecot(server)
            port = free_port()
            conf = http_api_conf(port, f"{name}-penalty-key", v24=server != "2.3")
            instances[name] = DovecotInstance(extra_conf=conf, server=server, auth_failure_delay=1).start()
            entries[name] = {"url": f"http://127.0.0.1:{port}", "key": f"{name}-penalty-key"}
        fleet_file = write_fleet(tmp_path_factory.mktemp("penalty-fleet"), entries)
        with ThreadPoolExecutor(len(ATTEMPTS)) as pool:
            replies = pool.map(
                lambda a: failed_login(
                    instances[a[0]].host, instances[a[0]].imap_port or 0, "jane", a[2], a[1]
                ),
                ATTEMPTS,
            )
            assert all(reply.startswith(b"a NO [AUTHENTICATIONFAILED]") for reply in replies)
        yield instances, fleet_file
    finally:
        for instance in instances.values():
            instance.stop()


@pytest.mark.usefixtures("penalty_plugin")
@pytest.mark.parametrize("args", [(), ("127.0.0.78/31",), ("10.0.0.0/8",)])
def test_fleet_penalty_is_each_servers_penalty_with_the_server_column(
    servers: tuple[dict[str, DovecotInstance], Path], args: tuple[str, ...]
) -> None:
    instances, fleet_file = servers
    proc = run_dvadm(
        "-f", "tab", "penalty", "-S", "all", *args, env=dict(os.environ, DVADM_FLEET=str(fleet_file))
    )
    assert (proc.returncode, proc.stderr) == (0, b"")
    expected = [b"server\tIP\tpenalty\tlast_penalty\tlast_update"]
    for name, instance in instances.items():
        local = run_dvadm("-f", "tab", "penalty", "-a", str(instance.anvil_path), *args)
        assert local.returncode == 0
        expected += [name.encode() + b"\t" + row for row in local.stdout.splitlines()[1:]]
    assert proc.stdout.splitlines() == expected
    assert len(expected) == {(): 4, ("127.0.0.78/31",): 3, ("10.0.0.0/8",): 1}[args]


@pytest.mark.usefixtures("penalty_plugin")
def test_fleet_penalty_with_a_server_down(
    servers: tuple[dict[str, DovecotInstance], Path], tmp_path: Path
) -> None:
    _, fleet_file = servers
    down = free_port()
    text = (
        fleet_file.read_text() + f'\n[servers.down]\nurl = "http://127.0.0.1:{down}"\napi_key_env = "HOME"\n'
    )
    (tmp_path / "fleet.toml").write_text(text)
    env = dict(os.environ, DVADM_FLEET=str(tmp_path / "fleet.toml"))
    proc = run_dvadm("-f", "tab", "penalty", "-S", "all", env=env)
    assert proc.returncode == 75
    assert proc.stderr.decode().startswith(f"Error: down: cannot connect to http://127.0.0.1:{down}: ")
    assert len(proc.stdout.splitlines()) == 4


@pytest.mark.usefixtures("penalty_plugin")
def test_fleet_penalty_reads_the_mask_as_each_server_does(
    servers: tuple[dict[str, DovecotInstance], Path],
) -> None:
    """A scoped link-local network is a network to 2.4 only: the 2.3 server fails as its local
    penalty does (named, exit 75), the 2.4 server's rows are filtered by it (was: by 2.4's reading
    on both)."""
    instances, fleet_file = servers
    mask = "fe80::1%lo/64"
    proc = run_dvadm(
        "-f", "tab", "penalty", "-S", "all", mask, env=dict(os.environ, DVADM_FLEET=str(fleet_file))
    )
    one = run_dvadm("penalty", "-a", str(instances["one"].anvil_path), mask)
    two = run_dvadm("-f", "tab", "penalty", "-a", str(instances["two"].anvil_path), mask)
    assert (one.returncode, two.returncode) == (64, 0)
    assert proc.returncode == 75
    assert proc.stderr == b"Error: one: " + one.stderr.removeprefix(b"Error: ")
    assert proc.stdout.splitlines() == [
        b"server\tIP\tpenalty\tlast_penalty\tlast_update",
        *(b"two\t" + row for row in two.stdout.splitlines()[1:]),
    ]


@pytest.mark.usefixtures("penalty_plugin")
def test_fleet_penalty_for_a_url_not_in_the_fleet_file(
    servers: tuple[dict[str, DovecotInstance], Path], tmp_path: Path
) -> None:
    """docs/fleet.rst's ``dvadm -f json penalty -S URL``: the key from $DVADM_API_KEY, the URL
    as the server."""
    import json
    import re

    instances, fleet_file = servers
    found = re.search(r'\[servers\.two\]\nurl = "([^"]+)"', fleet_file.read_text())
    assert found is not None
    url = found.group(1)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    env = dict(os.environ, DVADM_FLEET=str(empty), DVADM_API_KEY="two-penalty-key")
    proc = run_dvadm("-f", "json", "penalty", "-S", url, env=env)
    assert (proc.returncode, proc.stderr) == (0, b"")
    local = run_dvadm("-f", "json", "penalty", "-a", str(instances["two"].anvil_path))
    assert json.loads(proc.stdout) == [{"server": url, **row} for row in json.loads(local.stdout)]
    assert len(json.loads(proc.stdout)) == 2
