"""The fleet file: where it is found, what it accepts, target selection and secret files."""

from __future__ import annotations

from pathlib import Path

import pytest

from doveadm_py.errors import TempFailError, UsageError
from doveadm_py.transport import fleet as fl
from doveadm_py.transport.http import Credentials


def load(tmp_path: Path, text: str) -> fl.Fleet:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return fl.load_fleet(str(path))


FLEET = """
[defaults]
timeout = 7

[servers.b1]
url = "https://mail1.example.net:8080"
api_key_file = "/etc/dvadm/b1.key"
groups = ["backends"]

[servers.p1]
url = "http://10.0.0.1:8080"
password_env = "P1_PASSWORD"
groups = ["proxies"]
connect_timeout = 2

[servers.b2]
url = "http://10.0.0.2:8080/"
api_key_env = "B2_KEY"
groups = ["backends"]
"""


def test_selection_keeps_fleet_file_order(tmp_path: Path) -> None:
    fleet = load(tmp_path, FLEET)
    assert [s.name for s in fl.select(fleet, ["all"])] == ["b1", "p1", "b2"]
    assert [s.name for s in fl.select(fleet, ["b2", "backends", "b1"])] == ["b1", "b2"]
    assert [s.name for s in fl.select(fleet, ["proxies", "http://10.0.0.2:8080"])] == ["p1", "b2"]
    assert fleet.defaults == {"timeout": 7.0}
    assert fleet.servers["p1"].timeouts == {"connect_timeout": 2.0}


def test_unknown_target_and_url_without_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = load(tmp_path, FLEET)
    with pytest.raises(UsageError, match="-S nope: no such server or group in"):
        fl.select(fleet, ["nope"])
    monkeypatch.delenv(fl.URL_KEY_ENV, raising=False)
    monkeypatch.delenv(fl.URL_PASSWORD_ENV, raising=False)
    with pytest.raises(UsageError, match=r"set \$DVADM_API_KEY or \$DVADM_PASSWORD"):
        fl.select(fleet, ["http://192.0.2.1:8080"])
    monkeypatch.setenv(fl.URL_KEY_ENV, "k")
    (server,) = fl.select(fleet, ["http://192.0.2.1:8080"])
    assert (server.name, server.secret) == ("http://192.0.2.1:8080", ("api_key_env", fl.URL_KEY_ENV))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[servers.a]\napi_key_env = 'X'\n", "url is missing"),
        ("[servers.a]\nurl = 'ftp://x:1'\napi_key_env = 'X'\n", "must be http://HOST:PORT"),
        ("[servers.a]\nurl = 'http://u:pw@x:1'\napi_key_env = 'X'\n", "credentials do not belong in the url"),
        (
            "[servers.a]\nurl = 'htp://u:inline@x:1'\napi_key_env = 'X'\n",
            "credentials do not belong in the url",
        ),
        ("[servers.a]\nurl = 'u:inline@x:1'\napi_key_env = 'X'\n", "credentials do not belong in the url"),
        ("[servers.a]\nurl = 'http://x:1'\n", "give exactly one of"),
        ("[servers.a]\nurl = 'http://x:1'\napi_key_env = 'X'\npassword_env = 'Y'\n", "give exactly one of"),
        ("[servers.a]\nurl = 'http://x:1'\napi_key = 'inline'\n", "unknown key 'api_key'"),
        ("[servers.a]\nurl = 'http://x:1'\napi_key_env = 'X'\ngroups = ['a']\n", "has the name of a server"),
        ("[servers.a]\nurl = 'http://x:1'\napi_key_env = 'X'\ntimeout = 0\n", "greater than 0"),
        ("[servers.all]\nurl = 'http://x:1'\napi_key_env = 'X'\n", "cannot be a server name"),
        ("[server.a]\n", "unknown table or key 'server'"),
        ("[servers.a\n", "invalid TOML"),
    ],
)
def test_bad_fleet_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TempFailError, match=message) as info:
        load(tmp_path, text)
    assert "\n" not in info.value.message
    assert "inline" not in info.value.message


def test_fleet_file_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fl.FLEET_ENV, str(tmp_path / "mine.toml"))
    assert fl.fleet_path() == str(tmp_path / "mine.toml")
    monkeypatch.delenv(fl.FLEET_ENV)
    monkeypatch.setattr(fl, "SYSTEM_FLEET", str(tmp_path / "none.toml"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fl.fleet_path() is None
    user = tmp_path / ".config" / "dvadm" / "fleet.toml"
    user.parent.mkdir(parents=True)
    user.write_text("")
    assert fl.fleet_path() == str(user)
    system = tmp_path / "system.toml"
    system.write_text("")
    monkeypatch.setattr(fl, "SYSTEM_FLEET", str(system))
    assert fl.fleet_path() == str(system)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_secret_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "k.key"
    key.write_text("very-secret\n")
    key.chmod(mode)
    server = fl.Server("b1", "http://x:1", ("api_key_file", str(key)))
    with pytest.raises(TempFailError) as info:
        fl.read_secret(server)
    assert info.value.message == (
        f"b1: secret file {key} is accessible by group or others (mode {mode:04o}); chmod 600 it"
    )


def test_secret_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "k.key"
    key.write_text("very-secret\n")
    key.chmod(0o600)
    creds = fl.read_secret(fl.Server("b1", "http://x:1", ("api_key_file", str(key))))
    assert creds.header() == "X-Dovecot-API dmVyeS1zZWNyZXQ="
    assert "secret" not in repr(creds)
    monkeypatch.setenv("PW", "pw")
    creds = fl.read_secret(fl.Server("b1", "http://x:1", ("password_env", "PW")))
    assert creds.header() == "Basic ZG92ZWFkbTpwdw=="  # doveadm:pw
    monkeypatch.delenv("PW")
    with pytest.raises(TempFailError, match="environment variable PW"):
        fl.read_secret(fl.Server("b1", "http://x:1", ("password_env", "PW")))
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(TempFailError, match="is empty"):
        fl.read_secret(fl.Server("b1", "http://x:1", ("api_key_file", str(empty))))


def test_timeouts_option_wins_then_server_then_defaults(tmp_path: Path) -> None:
    fleet = load(tmp_path, FLEET)
    p1, b2 = fleet.servers["p1"], fleet.servers["b2"]
    assert fl.timeout_for(p1, fleet, {}, "connect_timeout", 5.0) == 2.0
    assert fl.timeout_for(b2, fleet, {}, "connect_timeout", 5.0) == 5.0
    assert fl.timeout_for(b2, fleet, {}, "timeout", 30.0) == 7.0
    assert fl.timeout_for(p1, fleet, {"connect_timeout": 1.5}, "connect_timeout", 5.0) == 1.5


def test_credentials_need_a_secret() -> None:
    with pytest.raises(ValueError):
        Credentials()


def test_a_command_without_remote_support_refuses_s() -> None:
    """A plugin that only knows the local anvil must not act locally when asked for a server."""
    import argparse

    from doveadm_py.command import DvadmCommand
    from doveadm_py.transport.options import add_socket_path_argument

    class LocalOnly(DvadmCommand):
        def add_arguments(self, parser: argparse.ArgumentParser) -> None:
            add_socket_path_argument(parser)

        def take_action(self, parsed_args: argparse.Namespace) -> int:
            with self.anvil(parsed_args.socket_path):
                return 0

    from types import SimpleNamespace

    app = SimpleNamespace(command_manager=SimpleNamespace(namespace="dvadm.test.commands"))
    cmd = LocalOnly(app, None, cmd_name="local only")
    parsed = cmd.get_parser("dvadm local only").parse_intermixed_args(["-S", "all"])
    with pytest.raises(UsageError) as info:
        cmd.run(parsed)
    assert info.value.message == "'local only' does not support -S (remote servers): it reads the local anvil"


def literal_blocks_after(text: str, marker: str) -> list[str]:
    """The indented literal blocks that follow a line ending with ``marker`` in an rst file."""
    blocks = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith(marker):
            block = []
            for follow in lines[i + 2 :]:
                if follow and not follow.startswith("    "):
                    break
                block.append(follow[4:])
            blocks.append("\n".join(block))
    return blocks


def test_the_documented_fleet_files_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parent.parent
    (readme,) = literal_blocks_after((repo / "README.rst").read_text(), "fleet.toml``)::")
    fleet = load(tmp_path, readme)
    assert [s.name for s in fl.select(fleet, ["backends"])] == ["backend1"]
    docs = literal_blocks_after((repo / "docs" / "fleet.rst").read_text(), "``~/.config/dvadm/fleet.toml``::")
    fleet = load(tmp_path, docs[0])
    assert [s.name for s in fl.select(fleet, ["backends"])] == ["backend1", "backend2"]
    assert fleet.servers["backend1"].ca_file == "/etc/dvadm/mail-ca.pem"
    assert fleet.servers["backend2"].timeouts == {"timeout": 60.0}
    assert fleet.defaults == {"connect_timeout": 5.0, "timeout": 30.0}
