"""Every form of a fleet file's secret against real Dovecot 2.3, 2.4.1 and 2.4.5 servers.

One server per generation with both ``doveadm_api_key`` and ``doveadm_password``; the fleet file
names it four times, once per secret form (``api_key_file``, ``api_key_env``, ``password_file``,
``password_env``). Each entry's rows are the server's own; no secret, raw or base64, appears in
the output or the ``-D`` log; a wrong secret in any form is that entry's one-line error.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from doveadm_py.testing import cli
from doveadm_py.testing.dovecot import DovecotInstance, free_port
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.fleet import http_api_conf
from doveadm_py.testing.imap import open_sessions
from doveadm_py.testing.servers import ALL_SERVERS

KEY = "secret-Forms-Key-41f2"
PASSWORD = "secret-Forms-Pw-0b7e"
FORMS = {
    "keyfile": ("api_key_file", KEY),
    "keyenv": ("api_key_env", KEY),
    "pwfile": ("password_file", PASSWORD),
    "pwenv": ("password_env", PASSWORD),
}


def fleet_text(tmp: Path, url: str, secrets: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A fleet file naming the server once per secret form; the environment the *_env forms read."""
    env = {}
    parts = []
    for name, (kind, _) in FORMS.items():
        value = secrets[name]
        if kind.endswith("_file"):
            path = tmp / f"{name}.secret"
            path.write_text(value + "\n")
            path.chmod(0o600)
            where = str(path)
        else:
            where = f"FLEET_SECRET_{name.upper()}"
            env[where] = value
        parts.append(f'[servers.{name}]\nurl = "{url}"\n{kind} = "{where}"\n')
    fleet = tmp / "fleet.toml"
    fleet.write_text("\n".join(parts))
    return fleet, env


@pytest.fixture(scope="module", params=ALL_SERVERS)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[DovecotInstance, str]]:
    require_dovecot(request.param)
    port = free_port()
    conf = http_api_conf(port, KEY, PASSWORD, v24=request.param != "2.3")
    with DovecotInstance(extra_conf=conf, server=request.param) as instance:
        yield instance, f"http://127.0.0.1:{port}"


def test_every_secret_form_reaches_the_server_and_never_shows(
    server: tuple[DovecotInstance, str], tmp_path: Path
) -> None:
    instance, url = server
    fleet, env = fleet_text(tmp_path, url, {name: value for name, (_, value) in FORMS.items()})
    with open_sessions(instance, [("jane", "127.0.0.1"), ("foo", "127.0.0.5")]):
        proc = cli.run_dvadm(
            "-D", "-f", "tab", "who", "-S", "all", "-1",
            env=dict(os.environ, DVADM_FLEET=str(fleet), **env), timeout=60,
        )  # fmt: skip
        local = cli.run_dvadm("-f", "tab", "who", "-a", str(instance.anvil_path), "-1", timeout=60)
    assert proc.returncode == 0, proc.stderr
    title, *rows = local.stdout.decode().splitlines()
    assert len(rows) == 2
    assert proc.stdout.decode().splitlines() == [
        "server\t" + title,
        *(f"{name}\t{row}" for name in FORMS for row in rows),
    ]
    text = proc.stdout + proc.stderr
    assert b"Debug: http pwfile> POST" in text
    for secret in (KEY, PASSWORD, f"doveadm:{PASSWORD}"):
        assert secret.encode() not in text
        assert base64.b64encode(secret.encode()) not in text


def test_a_wrong_secret_in_any_form_is_that_entrys_error(
    server: tuple[DovecotInstance, str], tmp_path: Path
) -> None:
    _, url = server
    wrong = {name: f"wrong-{name}-9c" for name in FORMS}
    fleet, env = fleet_text(tmp_path, url, wrong)
    proc = cli.run_dvadm("who", "-S", "all", env=dict(os.environ, DVADM_FLEET=str(fleet), **env), timeout=60)
    assert (proc.returncode, proc.stdout) == (75, b"")
    assert proc.stderr.decode().splitlines() == [
        f"Error: {name}: authentication failed (HTTP 401): check the API key or password" for name in FORMS
    ]
    assert not any(value.encode() in proc.stderr for value in wrong.values())


def test_a_wrong_key_goes_unanswered_only_with_connection_close(server: tuple[DovecotInstance, str]) -> None:
    """What the timeout hint rests on (observed on 2.3.19, 2.4.1, 2.4.5): a wrong key gets 401 on a
    kept-alive request (dvadm's), no answer at all on one that says ``Connection: close``."""
    import socket

    _, url = server
    port = int(url.rsplit(":", 1)[1])
    body = b'[["who",{},"t"]]'
    wrong = base64.b64encode(b"wrong-key").decode()
    answers = {}
    for close in (False, True):
        head = (
            f"POST /doveadm/v1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: X-Dovecot-API {wrong}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.settimeout(2)
            conn.sendall(head.encode() + body)
            try:
                answers[close] = conn.recv(64)
            except TimeoutError:
                answers[close] = b"(no answer within 2 s)"
    assert answers[False].startswith(b"HTTP/1.1 401 ")
    assert answers[True] == b"(no answer within 2 s)"
