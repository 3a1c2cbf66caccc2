"""The fleet example of docs/fleet.rst and README.rst, run as written against real servers.

The Dovecot config blocks (2.3 and 2.4), the fleet files and every ``dvadm ... -S`` command
are read from the documents themselves; only the example names are replaced by the test's
(addresses and ports on 127.0.0.1, key, password, certificate and CA files). backend1 is the
documented https server with an API key and a CA file, backend2 the plain http one with a
password from the environment; each runs on a real 2.3 or 2.4. Each command's rows and the
IMAP sessions a kick closes are checked against what its masks select.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from doveadm_py.testing import cli
from doveadm_py.testing.dovecot import DovecotInstance, free_port
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.fleet import disconnected, make_certificates, sessions_on

ROOT = Path(__file__).resolve().parent.parent
FLEET_DOC = ROOT / "docs" / "fleet.rst"
README = ROOT / "README.rst"
KEY = "docs-Example-Key-5d0c"
PASSWORD = "docs-Example-Pw-93aa"
SESSIONS = {
    "backend1": [("jane", "127.0.0.1"), ("foo", "127.0.0.5"), ("james", "127.0.0.3")],
    "backend2": [("foo", "127.0.0.6"), ("jano", "127.0.0.2")],
}
#: The penalty plugin is not installed here; its -S is tested in plugins/dvadm-penalty.
PLUGIN_COMMANDS = {"penalty"}


def literal_blocks(path: Path) -> list[str]:
    """The text of every ``::`` literal block of an RST file, dedented."""
    lines = path.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            i += 1
            body: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                body.append(lines[i])
                i += 1
            text = "\n".join(body).strip("\n")
            indent = min(len(line) - len(line.lstrip()) for line in text.splitlines() if line.strip())
            blocks.append("\n".join(line[indent:] for line in text.splitlines()) + "\n")
        else:
            i += 1
    return blocks


def only_block(path: Path, *needles: str) -> str:
    found = [b for b in literal_blocks(path) if all(n in b for n in needles)]
    assert len(found) == 1, f"{path.name}: {len(found)} blocks with {needles}"
    return found[0]


def dovecot_conf(generation: int, port: int, https: bool, cert: str, key: str) -> str:
    """The documented config block of that generation, for backend1 (https, API key) or
    backend2 (http, the documented ``doveadm_password`` alternative)."""
    listen = "address =" if generation == 1 else "listen ="
    block = only_block(FLEET_DOC, "service doveadm {", listen)
    lines = []
    for line in block.splitlines():
        comment = line.partition(" #")[2].strip()
        if not https and comment.startswith("https"):
            continue
        if line.startswith("doveadm_api_key") and not https:
            line = comment.removeprefix("or:").strip()
        lines.append(line)
    text = "\n".join(lines) + "\n"
    for example, real in (
        ("<a long random key>", KEY),
        ("<a password>", PASSWORD),
        ("192.0.2.10", "127.0.0.1"),
        ("port = 8080", f"port = {port}"),
        ("/etc/dovecot/private/mail1.pem", cert),
        ("/etc/dovecot/private/mail1.key", key),
    ):
        assert example in block
        text = text.replace(example, real)
    assert not re.search(r"<[a-z]|192\.0\.2|8080|/etc/", text), text
    return text


class Example:
    def __init__(self, generations: tuple[str, str], tmp: Path) -> None:
        self.tmp = tmp
        self.generations = dict(zip(SESSIONS, generations, strict=True))
        self.servers: dict[str, DovecotInstance] = {}
        self.ports: dict[str, int] = {}
        self.cert_dirs: list[str] = []

    def start(self) -> None:
        for name, server_name in self.generations.items():
            server = require_dovecot(server_name)
            https = name == "backend1"
            port = free_port()
            cert = key = "(unused)"
            if https:  # certificates where the server (a 2.4 in its chroot) can read them
                cert_dir = Path(tempfile.mkdtemp(prefix="dvadm-tls-", dir=server.tmp_dir))
                self.cert_dirs.append(str(cert_dir))
                self.ca, cert_path, key_path = make_certificates(cert_dir)
                cert, key = server.inner(cert_path), server.inner(key_path)
            conf = dovecot_conf(server.generation, port, https, cert, key)
            self.servers[name] = DovecotInstance(extra_conf=conf, server=server).start()
            self.ports[name] = port
        key_file = self.tmp / "backend1.key"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)
        self.key_file = key_file

    def stop(self) -> None:
        for instance in self.servers.values():
            instance.stop()
        for directory in self.cert_dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def fleet_file(self, doc: Path) -> Path:
        text = only_block(doc, "[servers.backend1]")
        for example, real in (
            ("https://mail1.example.net:8080", f"https://127.0.0.1:{self.ports['backend1']}"),
            ("http://10.0.0.2:8080", f"http://127.0.0.1:{self.ports['backend2']}"),
            ("/etc/dvadm/backend1.key", str(self.key_file)),
            ("/etc/dvadm/mail-ca.pem", str(self.ca)),
        ):
            text = text.replace(example, real)
        assert "example" not in text and "/etc/" not in text, text
        path = self.tmp / f"fleet-{doc.stem}.toml"
        path.write_text(text)
        return path

    def run(self, fleet_file: Path, argv: list[str]) -> tuple[int, str, str]:
        """The command with that fleet file; the test's CA stands in for the system CAs (the
        README's entry has no ca_file): OpenSSL's $SSL_CERT_FILE."""
        env = dict(
            os.environ,
            DVADM_FLEET=str(fleet_file),
            BACKEND2_DOVEADM_PASSWORD=PASSWORD,
            SSL_CERT_FILE=str(self.ca),
        )
        proc = cli.run_dvadm(*argv, env=env, timeout=60)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def documented_commands(doc: Path) -> list[list[str]]:
    """Every ``dvadm`` command line with ``-S`` in the document's literal blocks (``$`` prompts
    too; not the ``[...]`` synopses)."""
    commands = []
    for block in literal_blocks(doc):
        for line in block.splitlines():
            if "[" in line:
                continue
            words = shlex.split(line.removeprefix("$ "), comments=True)
            if words[:1] == ["dvadm"] and "-S" in words:
                commands.append([w.replace("192.0.2.0/24", "127.0.0.0/24") for w in words[1:]])
    return commands


def command_word(argv: list[str]) -> str:
    return next((w for w in argv if not w.startswith("-") and w != "json"), "")


def selected(argv: list[str], fleet_servers: list[str]) -> tuple[str, list[str], list[tuple[str, str, str]]]:
    """The command word, the servers -S names, and the (server, user, ip) sessions its masks match."""
    command = command_word(argv)
    rest = argv[argv.index(command) + 1 :]
    targets: list[str] = []
    masks: list[str] = []
    words = iter(rest)
    for word in words:
        if word == "-S":
            targets.append(next(words))
        elif not word.startswith("-"):
            masks.append(word)
    servers = [s for s in fleet_servers if {"all", "backends", s} & set(targets)]
    users = [m for m in masks if "." not in m]
    networks = [ipaddress.ip_network(m) for m in masks if "." in m]
    matches = [
        (server, user, ip)
        for server in servers
        for user, ip in SESSIONS[server]
        if (not users or any(fnmatch.fnmatchcase(user, m) for m in users))
        and all(ipaddress.ip_address(ip) in n for n in networks)
    ]
    return command, servers, matches


@pytest.fixture(scope="module", params=[("2.3", "2.4-sid"), ("2.4-trixie", "2.3")], ids=lambda g: "+".join(g))
def example(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    require_dovecot()
    example = Example(request.param, tmp_path_factory.mktemp("docs-fleet"))
    try:
        example.start()
        yield example
    finally:
        example.stop()


def test_the_documents_show_the_commands_tested_here() -> None:
    fleet_doc = documented_commands(FLEET_DOC)
    readme = documented_commands(README)
    assert len(fleet_doc) >= 5 and len(readme) >= 2
    assert all(command_word(c) in {"who", "kick", *PLUGIN_COMMANDS} for c in fleet_doc + readme)


@pytest.mark.parametrize("doc", [FLEET_DOC, README], ids=lambda d: d.name)
def test_the_documented_fleet_example_works_as_written(example: Example, doc: Path) -> None:
    fleet_file = example.fleet_file(doc)
    fleet_servers = [s for s in SESSIONS if f"[servers.{s}]" in fleet_file.read_text()]
    for argv in documented_commands(doc):
        if command_word(argv) in PLUGIN_COMMANDS:
            continue
        command, servers, matches = selected(argv, fleet_servers)
        with sessions_on(example.servers, SESSIONS) as groups:
            code, out, err = example.run(fleet_file, argv)
            assert (code, err) == (0, ""), argv
            title, *lines = out.splitlines()
            # A table with a 2.4 server's rows shows empty cells as "-", as doveadm 2.4 does.
            rows = [[cell for cell in line.split() if cell != "-"] for line in lines]
            if command == "who":
                assert title.split()[:2] == ["server", "username"], argv
                got = sorted((r[0], r[1]) for r in rows)
                if "-1" in argv:
                    assert got == sorted((s, u) for s, u, _ in matches), argv
                else:
                    assert got == sorted({(s, u) for s, u, _ in matches}), argv
                assert disconnected(groups, {}) == {name: set() for name in SESSIONS}
            else:
                kicked = {s: {(u, ip) for s2, u, ip in matches if s2 == s} for s in SESSIONS}
                assert title.split() == ["server", "connections", "users"], argv
                assert rows[:-1] == [
                    [s, str(len(kicked[s])), *sorted({u for u, _ in kicked[s]})] for s in servers
                ], argv
                assert rows[-1] == ["total", str(len(matches))], argv
                assert disconnected(groups, kicked) == kicked, argv


def test_the_documented_allowed_commands_refuse_others(example: Example) -> None:
    """``doveadm_allowed_commands = who,kick,penalty`` (as written) lets dvadm's commands through
    on both generations and refuses the rest, which dvadm names in one line."""
    from doveadm_py.transport.http import Credentials, HttpTransport, RemoteError

    for name, credentials in (
        ("backend1", Credentials(api_key=KEY)),
        ("backend2", Credentials(password=PASSWORD)),
    ):
        scheme = "https" if name == "backend1" else "http"
        server = HttpTransport(
            name, f"{scheme}://127.0.0.1:{example.ports[name]}", credentials, ca_file=str(example.ca)
        )
        try:
            assert server.command("penalty", {}) == []
            with pytest.raises(RemoteError) as caught:
                server.command("mailboxList", {"user": "jane"})
        finally:
            server.close()
        assert (
            caught.value.message
            == f"{name}: the server does not allow mailboxList (doveadm_allowed_commands)"
        )
