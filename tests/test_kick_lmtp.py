"""LMTP deliveries on real Dovecot 2.3, 2.4.1 and 2.4.5: ``who`` and ``kick`` next to their own doveadm.

A delivery held open after ``RCPT TO`` is an ``lmtp`` session in anvil, without a client IP
(:mod:`doveadm_py.testing.lmtp`). Dovecot 2.4's anvil never kicks one (kick type N): ``kick --dry-run '*'``
listed them although the kick then left them alone (issue 11); it must list exactly what the kick
touches. Dovecot 2.3 kicks by signal: its doveadm SIGTERMs the LMTP process too, and so does dvadm (the
process passes the safety checks), so there the dry run lists them and the delivery ends.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kick_helpers import KICKED, report

from doveadm_py.testing import DovecotInstance, open_sessions, wait_registered
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.dovecot import free_port
from doveadm_py.testing.fixtures import dovecot_servers
from doveadm_py.testing.fleet import http_api_conf, write_fleet
from doveadm_py.testing.lmtp import held_delivery, lmtp_entries, wait_lmtp_registered
from doveadm_py.testing.servers import DovecotServer
from doveadm_py.testing.tables import dash_blank_cells, prints_blank_cells

pytestmark = [pytest.mark.dovecot, dovecot_servers()]

IMAP = [("james", "127.0.0.3"), ("foo", "127.0.0.5")]
LMTP = ["jane", "jano"]


API_KEY = "lmtp-fleet-key"


@pytest.fixture(scope="module")
def api_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(dovecot_server: DovecotServer, api_port: int) -> Iterator[DovecotInstance]:
    """With its doveadm HTTP API too, for ``kick -S`` (the fleet's kick) next to the local one."""
    api = http_api_conf(api_port, API_KEY, v24=dovecot_server.generation == 2)
    with DovecotInstance(extra_conf=api, server=dovecot_server, lmtp=True) as instance:
        yield instance


def dvadm(instance: DovecotInstance, *args: str) -> tuple[int, bytes, bytes]:
    done = run_dvadm(*instance.dvadm_args(), *args, timeout=60)
    return done.returncode, done.stdout, done.stderr


def doveadm(instance: DovecotInstance, *args: str) -> tuple[int, bytes, bytes]:
    done = instance.doveadm(*args)
    return done.returncode, done.stdout, done.stderr


def fields(table: bytes) -> Counter[tuple[bytes, ...]]:
    """A table's rows as whitespace-split fields, in any order (doveadm's rows come in hash order)."""
    return Counter(tuple(line.split()) for line in table.splitlines()[1:])


def listed(out: bytes) -> list[tuple[str, str]]:
    """(username, service) of each row of a dry run's table."""
    return sorted((row.split()[0].decode(), row.split()[1].decode()) for row in out.splitlines()[1:])


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def test_who_with_lmtp_deliveries_matches_doveadm(server: DovecotInstance) -> None:
    wait_registered(server, 0, timeout=10)
    with open_sessions(server, IMAP), held_delivery(server, LMTP):
        wait_lmtp_registered(server, len(LMTP))
        for args in (
            ["who"],
            ["who", "-1"],
            ["-f", "tab", "who"],
            ["-f", "tab", "who", "-1"],
            ["who", "ja*"],
        ):
            ours, theirs = dvadm(server, *args), doveadm(server, *args)
            if args == ["who", "-1"] and prints_blank_cells(server.server):  # 2.4.1: blanks for '-'
                theirs = (theirs[0], dash_blank_cells(theirs[1]), theirs[2])
            assert (ours[0], ours[2]) == (theirs[0], theirs[2]) == (0, b""), args
            assert ours[1].split(b"\n", 1)[0].split() == theirs[1].split(b"\n", 1)[0].split(), args  # titles
            assert fields(ours[1]) == fields(theirs[1]), (args, ours[1], theirs[1])
            if args[-1] != "ja*":
                assert Counter(row[0] for row in fields(ours[1]).elements()) >= Counter(
                    name.encode() for name in LMTP
                )


def test_dry_run_lists_exactly_what_the_kick_kicks_with_lmtp_deliveries(server: DovecotInstance) -> None:
    generation = server.server.generation
    wait_registered(server, 0, timeout=10)
    with open_sessions(server, IMAP) as imap, held_delivery(server, LMTP) as delivery:
        wait_lmtp_registered(server, len(LMTP))
        dry_code, dry_out, dry_err = dvadm(server, "kick", "--dry-run", "*")
        assert dry_err == b""
        expected = [(user, "imap") for user, _ in IMAP]
        if generation == 1:  # 2.3 signals the LMTP process as well
            expected += [(user, "lmtp") for user in LMTP]
        assert listed(dry_out) == sorted(expected), dry_out
        assert imap.wait_for_disconnects([], timeout=1, settle=0.3) == set()  # a dry run kicks nothing
        assert delivery.alive()

        code, out, err = dvadm(server, "kick", "*")
        assert (code, err) == (dry_code, b"")
        assert imap.wait_for_disconnects(IMAP, timeout=10) == set(IMAP)
        if generation == 2:
            assert out == b"%d connections kicked\n" % len(dry_out.splitlines()[1:])
            # Untouched: still registered, and the transaction still answers.
            assert len(lmtp_entries(server.connect_dump())) == len(LMTP)
            assert delivery.alive()
        else:
            assert report(out, "dvadm") == (KICKED, frozenset(user for user, _ in expected))
            assert wait_until(lambda: not delivery.alive())
            wait_lmtp_registered(server, 0)
    dvadm_result = (code, report(out, "dvadm"))

    # doveadm's own kick on the same kind of state does the same (2.3's doveadm prints its report's
    # parts in another order when stdout is a pipe: compared as kind and users).
    wait_registered(server, 0, timeout=10)
    with open_sessions(server, IMAP) as imap, held_delivery(server, LMTP) as delivery:
        wait_lmtp_registered(server, len(LMTP))
        real_code, real_out, _ = doveadm(server, "kick", "*")
        assert (real_code, report(real_out, "doveadm")) == dvadm_result
        assert imap.wait_for_disconnects(IMAP, timeout=10) == set(IMAP)
        if generation == 2:
            assert delivery.alive()
        else:
            assert wait_until(lambda: not delivery.alive())


def test_dry_run_of_a_name_with_only_a_delivery(server: DovecotInstance) -> None:
    """A plain name (2.4's fast path, KICK-USER by name) whose only session is a delivery: on 2.4 the dry
    run lists nothing and the kick kicks 0, as doveadm's; on 2.3 both signal the LMTP process."""
    generation = server.server.generation
    results = []
    for tool in (dvadm, doveadm):
        wait_registered(server, 0, timeout=10)
        with held_delivery(server, ["jane"]) as delivery:
            wait_lmtp_registered(server, 1)
            if tool is dvadm:
                dry_code, dry_out, _ = dvadm(server, "kick", "--dry-run", "jane")
                assert listed(dry_out) == ([] if generation == 2 else [("jane", "lmtp")])
                assert delivery.alive()
            code, out, _ = tool(server, "kick", "jane")
            assert code == dry_code
            if generation == 2:
                assert delivery.alive()
            else:
                assert wait_until(lambda: not delivery.alive())
            results.append((code, report(out, "dvadm" if tool is dvadm else "doveadm")))
    assert results[0] == results[1]
    assert results[0] == (
        0,
        ("0 connections kicked\n", frozenset()) if generation == 2 else (KICKED, {"jane"}),
    )


def test_fleet_dry_run_and_kick_with_lmtp_deliveries(
    server: DovecotInstance, api_port: int, tmp_path: Path
) -> None:
    """``kick -S``: its dry run (in the local dry run's default table) lists exactly what the local dry
    run lists, so no 2.4 lmtp session; a 2.4 kick of a name whose only session is a delivery reports no
    user kicked and the delivery goes on, as the local kick; a 2.3 refusal (the delivery's process serves
    another user) exits 0, as the local one."""
    fleet = write_fleet(tmp_path, {"one": {"url": f"http://127.0.0.1:{api_port}/", "key": API_KEY}})

    def remote(*args: str) -> tuple[int, bytes, bytes]:
        done = run_dvadm("kick", "-S", "one", *args, env={"DVADM_FLEET": str(fleet)}, timeout=60)
        return done.returncode, done.stdout, done.stderr

    wait_registered(server, 0, timeout=10)
    with open_sessions(server, IMAP), held_delivery(server, LMTP) as delivery:
        wait_lmtp_registered(server, len(LMTP))
        for masks in (["*"], ["jane"], ["nobody"]):
            code, out, err = dvadm(server, "kick", "--dry-run", *masks)
            fleet_code, fleet_out, fleet_err = remote("--dry-run", *masks)
            assert fleet_code == code, fleet_err
            fleet_rows = [tuple(row.split()[1:3]) for row in fleet_out.splitlines()[1:]]
            if out.startswith(b"warning: other connections"):  # 2.3: the delivery serves jano too
                assert fleet_err.startswith(b"Warning: one: nothing kicked: other connections"), fleet_err
                assert fleet_rows == []
                continue
            assert fleet_err == b""
            assert fleet_out.split(b"\n")[0].split() == [b"server", *out.split(b"\n")[0].split()]
            assert sorted(fleet_rows) == [(u.encode(), s.encode()) for u, s in listed(out)]
        if server.server.generation == 2:
            code, out, err = remote("jane")
            assert (code, err) == (0, b"")
            assert [row.split() for row in out.splitlines()[1:]] == [
                [b"one", b"0", b"-"],
                [b"total", b"0", b"-"],
            ]
            assert delivery.alive()
