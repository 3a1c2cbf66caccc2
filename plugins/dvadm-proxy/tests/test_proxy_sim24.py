"""On Dovecot 2.4, ``proxy list`` and ``proxy kick`` are ``who`` and ``kick`` under another name:
against dvadm's 2.4 anvil simulator they print the same bytes and send the same requests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from doveadm_py.api import AnvilSimulator, SimSession

RunDvadm = Callable[..., subprocess.CompletedProcess[bytes]]

SESSIONS = [
    SimSession(pid=1001, username="jane", ip="192.0.2.7", alt={"user_alias": "jane-a"}),
    SimSession(
        pid=2001,
        username="jane",
        service="imap-login",
        ip="192.0.2.7",
        dest_ip="10.0.0.1",
        alt={"user_alias": "jane-a"},
    ),
    SimSession(
        pid=2002,
        username="bob",
        service="imap-login",
        ip="192.0.2.8",
        dest_ip="10.0.0.2",
        alt={"user_alias": "shared"},
    ),
    SimSession(pid=1003, username="james", ip="198.51.100.1", alt={"user_alias": "shared"}),
]


def acted_on(requests: list[bytes]) -> list[bytes]:
    """The requests anvil answered: without what a busy anvil, greeting late, refused as a first
    line (a 2.3 handshake from who/kick, an ipc line from proxy); anvil drops those and hangs up."""
    return [line for line in requests if line != b"VERSION\tanvil\t1\t0" and not line.startswith(b"proxy\t")]


def same_as_builtin(
    dvadm: RunDvadm, directory: Path, builtin: str, args: tuple[str, ...], globals_: tuple[str, ...] = ()
) -> None:
    """A fresh simulator each, on the same path: same output, same requests, same kicks."""
    results = []
    for command in ((builtin,), ("proxy", "list" if builtin == "who" else "kick")):
        with AnvilSimulator(
            protocol=2, sessions=SESSIONS, alt_fields=["user_alias"], directory=str(directory)
        ) as sim:
            proc = dvadm(*globals_, *command, "-a", sim.path, *args)
            results.append((proc.returncode, proc.stdout, proc.stderr, acted_on(sim.requests), sim.kicks))
    assert results[0] == results[1]
    assert results[0][0] in (0, 64, 75)


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("-1",),
        ("jan*",),
        ("-1", "192.0.2.0/24"),
        ("-1", "-f", "user_alias", "shared"),
        ("-f", "x", "jane"),
    ],
)
@pytest.mark.parametrize("formatter", [(), ("-f", "tab"), ("-f", "json")])
def test_proxy_list_is_who(
    dvadm: RunDvadm, tmp_path: Path, args: tuple[str, ...], formatter: tuple[str, ...]
) -> None:
    same_as_builtin(dvadm, tmp_path, "who", args, formatter)


@pytest.mark.parametrize(
    "args",
    [
        ("jane",),
        ("jan*",),
        ("-h", "10.0.0.1"),
        ("-h", "10.0.0.2", "b*"),
        ("-f", "user_alias", "shared"),
        ("--dry-run", "*"),
        ("192.0.2.0/24",),
        ("-h", "not-an-ip"),  # 2.4: dest-host isn't a valid IP address, 75
        ("-f", "user_alias"),  # 64
    ],
)
def test_proxy_kick_is_kick(dvadm: RunDvadm, tmp_path: Path, args: tuple[str, ...]) -> None:
    same_as_builtin(dvadm, tmp_path, "kick", args)


def test_kick_sends_the_requests_and_counts(dvadm: RunDvadm) -> None:
    with AnvilSimulator(protocol=2, sessions=SESSIONS, alt_fields=["user_alias"]) as sim:
        proc = dvadm("proxy", "kick", "-a", sim.path, "-h", "10.0.0.1")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"1 connections kicked\n", b"")
        assert len(sim.kicks) == 1 and sim.kicks[0].startswith(b"KICK-USER\tjane\t")


def test_without_a_socket_option_a_24_base_dir_is_found_by_its_anvil(dvadm: RunDvadm) -> None:
    """No ``<base_dir>/ipc`` (2.4 has none) and a greeting anvil: the 2.4 path, on that anvil."""
    with AnvilSimulator(protocol=2, sessions=SESSIONS, alt_fields=["user_alias"]) as sim:
        base_dir = os.path.dirname(sim.path)
        proc = dvadm("-f", "tab", "-o", f"base_dir={base_dir}", "proxy", "list", "-1", "bob")
        assert (proc.returncode, proc.stderr) == (0, b"")
        assert proc.stdout.splitlines()[1] == b"bob\timap-login\t2002\t192.0.2.8\t10.0.0.2\tshared"
        assert sim.accepted == 1  # the anvil connection that proved 2.4 served the dump


def test_a_late_greeting_switches_to_24_and_sends_nothing_it_would_act_on(dvadm: RunDvadm) -> None:
    """A slow 2.4 anvil given as ``-a`` looks like a silent 2.3 ipc socket at first; its late
    greeting in place of the first reply line switches to 2.4 (anvil drops the ipc line as a
    bad VERSION line), so the kick happens exactly once, through anvil."""
    with AnvilSimulator(protocol=2, sessions=SESSIONS, alt_fields=["user_alias"], greeting_delay=0.2) as sim:
        proc = dvadm("proxy", "kick", "-a", sim.path, "jane")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"2 connections kicked\n", b"")
        assert sim.kicks == [b"KICK-USER\tjane"]


def test_a_23_anvil_is_no_ipc_socket(dvadm: RunDvadm) -> None:
    """``-a`` naming a 2.3 anvil: the ipc line goes there, as with doveadm, and anvil hangs up."""
    with AnvilSimulator(protocol=1, sessions=[]) as sim:
        proc = dvadm("-o", "dvadm_ipc_timeout=2", "proxy", "kick", "-a", sim.path, "jane")
    assert proc.returncode == 75
    assert proc.stderr.startswith(b"Error: KICK failed: ")
    assert sim.kicks == []


def test_neither_socket_names_both(dvadm: RunDvadm, tmp_path: Path) -> None:
    """No ipc socket and no anvil (Dovecot down): the error names what each generation uses."""
    proc = dvadm("-o", f"base_dir={tmp_path}", "proxy", "list")
    assert (proc.returncode, proc.stdout) == (75, b"")
    assert (
        proc.stderr
        == (
            f"Error: LIST-FULL failed: connect({tmp_path}/ipc) failed: No such file or directory "
            f"(Dovecot 2.3); net_connect_unix({tmp_path}/anvil) failed: No such file or directory (2.4)\n"
        ).encode()
    )


def test_a_tcp_address_must_be_a_24_anvil(dvadm: RunDvadm) -> None:
    """A value without '/' is host:port of a 2.4 anvil; a 2.3 anvil there is refused, nothing sent."""
    with AnvilSimulator(protocol=1, sessions=[], tcp=True) as sim:
        proc = dvadm("-o", "dvadm_ipc_timeout=0.5", "proxy", "kick", "-a", sim.path, "jane")
        assert (proc.returncode, proc.stdout) == (64, b"")
        assert proc.stderr.startswith(f"Error: {sim.path} is no Dovecot 2.4 anvil; ".encode())
        assert sim.requests == []


@pytest.mark.parametrize(
    ("command", "masks"),
    [
        ("kick", ("jane", "10.0.0.0/8", "192.168.0.0/16")),
        ("kick", ("192.0.2.0/24", "fe80::1%lo/64")),  # two networks to 2.4 only: refused once it greets
        ("list", ("10.0.0.0/8", "192.168.0.0/16")),
        ("list", ("192.0.2.0/24", "fe80::1%lo/64")),
    ],
)
def test_two_networks_in_the_words_of_doveadm_24s_proxy_command(
    dvadm: RunDvadm, command: str, masks: tuple[str, ...]
) -> None:
    """doveadm 2.4.5 logs it on its command's event, which is named as typed: ``cmd proxy kick: ...``."""
    with AnvilSimulator(protocol=2, sessions=SESSIONS, alt_fields=["user_alias"]) as sim:
        proc = dvadm("proxy", command, "-a", sim.path, *masks)
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            64,
            b"",
            f"Error: cmd proxy {command}: Multiple network masks not supported\n".encode(),
        )
        assert sim.kicks == []
