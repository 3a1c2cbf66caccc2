"""``-S`` over https: Dovecot 2.3's own TLS on the doveadm HTTP listener, a CA and certificate made here.

Verification is on by default: with the fleet file's ``ca_file`` the server is trusted, with
the system CAs it is not (exit 75, the TLS reason named).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from doveadm_py.testing import cli
from doveadm_py.testing.dovecot import DovecotInstance, free_port
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.fleet import http_api_conf, make_certificates, write_fleet
from doveadm_py.testing.imap import open_sessions

KEY = "tls-fleet-Key-3e51"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DovecotInstance, int, Path]]:
    require_dovecot()
    directory = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_certificates(directory)
    port = free_port()
    conf = http_api_conf(port, KEY, extra="    ssl = yes\n")
    conf += f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n"
    with DovecotInstance(extra_conf=conf) as instance:
        yield instance, port, ca


def test_https_with_the_fleet_files_ca(tls_server: tuple[DovecotInstance, int, Path], tmp_path: Path) -> None:
    instance, port, ca = tls_server
    fleet_file = write_fleet(
        tmp_path, {"secure": {"url": f"https://127.0.0.1:{port}", "key": KEY, "ca_file": str(ca)}}
    )
    env = dict(os.environ, DVADM_FLEET=str(fleet_file))
    with open_sessions(instance, [("jane", "127.0.0.1"), ("foo", "127.0.0.5")]):
        proc = cli.run_dvadm("-D", "-f", "tab", "who", "-S", "secure", "-1", env=env, timeout=60)
        local = cli.run_dvadm("-f", "tab", "who", "-a", str(instance.anvil_path), "-1", timeout=60)
    assert proc.returncode == 0, proc.stderr
    title, *rows = local.stdout.decode().splitlines()
    assert proc.stdout.decode().splitlines() == ["server\t" + title, *(f"secure\t{r}" for r in rows)]
    assert len(rows) == 2
    assert KEY not in (proc.stdout + proc.stderr).decode()


def failing_who(tmp_path: Path, url: str) -> str:
    """``who -S`` on a server entry without a CA file: nothing on stdout, exit 75; its stderr."""
    fleet_file = write_fleet(tmp_path, {"secure": {"url": url, "key": KEY}})
    proc = cli.run_dvadm("who", "-S", "secure", env=dict(os.environ, DVADM_FLEET=str(fleet_file)), timeout=60)
    assert (proc.returncode, proc.stdout) == (75, b"")
    return proc.stderr.decode()


def test_https_is_verified_against_the_system_cas_by_default(
    tls_server: tuple[DovecotInstance, int, Path], tmp_path: Path
) -> None:
    _, port, _ = tls_server
    err = failing_who(tmp_path, f"https://127.0.0.1:{port}")
    assert err.startswith(f"Error: secure: TLS error with https://127.0.0.1:{port}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in err and err.count("\n") == 1


def test_plain_http_to_a_tls_listener_is_a_clear_error(
    tls_server: tuple[DovecotInstance, int, Path], tmp_path: Path
) -> None:
    _, port, _ = tls_server
    assert failing_who(tmp_path, f"http://127.0.0.1:{port}") == (
        f"Error: secure: http://127.0.0.1:{port} closed the connection without an answer "
        "(the server's doveadm failed; see its log)\n"
    )
