"""``dvadm penalty`` (the installed plugin) against the anvil simulator, protocols 1 (2.3) and 2 (2.4)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from doveadm_py.api import AnvilSimulator, PenaltyRecord, run_dvadm

T0 = 1795533842  # the last_penalty observed on the real Dovecot 2.3.19
OBSERVED = PenaltyRecord("127.0.0.77", 1, T0, T0 + 5)
# In anvil's order (least recently updated first), with the text doveadm shows for each ident.
RECORDS = [
    (OBSERVED, "127.0.0.77"),
    (PenaltyRecord("192.0.2.200", 3, T0 + 10, T0 + 20), "192.0.2.200"),
    (PenaltyRecord("::FFFF:127.0.0.9", 2, T0 + 30, T0 + 40), "::ffff:127.0.0.9"),  # IPv4-mapped
    (PenaltyRecord("not-an-ip", 7, T0 + 50, T0 + 60), ""),  # doveadm prints no IP
    (PenaltyRecord("1.2", 4, T0 + 70, T0 + 80), "1.0.0.2"),  # inet_aton form, printed canonically
]
REQUEST = {1: b"VERSION\tanvil\t1\t0\nPENALTY-DUMP\n", 2: b"VERSION\tanvil-client\t2\t0\n\nPENALTY-DUMP\n"}

pytestmark = pytest.mark.usefixtures("penalty_plugin")


def last_penalty(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def last_update(t: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def tab_row(record: PenaltyRecord, ip: str) -> bytes:
    fields = (ip, str(record.penalty), last_penalty(record.last_penalty), last_update(record.last_update))
    return ("\t".join(fields) + "\n").encode()


TAB_TITLES = b"IP\tpenalty\tlast_penalty\tlast_update\n"


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def protocol(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def sim(protocol: int) -> Iterator[AnvilSimulator]:
    with AnvilSimulator(protocol=protocol, penalties=[record for record, _ in RECORDS]) as simulator:
        yield simulator


def penalty(sim: AnvilSimulator, *args: str, fmt: str | None = None) -> tuple[int, bytes, bytes]:
    options = ("-f", fmt) if fmt else ()
    proc = run_dvadm(*options, "penalty", "-a", sim.path, *args)
    return proc.returncode, proc.stdout, proc.stderr


def test_table_bytes_match_real_doveadm_output(protocol: int) -> None:
    """The one-row table real doveadm 2.3 printed (times aside): IP 10, penalty 7, last_penalty 19,
    and last_update 11 + (80 - 50) // 2 = 26 columns, trailing spaces kept."""
    with AnvilSimulator(protocol=protocol, penalties=[OBSERVED]) as sim:
        code, out, err = penalty(sim)
        assert (code, err) == (0, b"")
        assert out == (
            b"IP         penalty last_penalty        last_update               \n"
            + f"127.0.0.77 1       {last_penalty(T0)} {last_update(T0 + 5):<26}\n".encode()
        )
        assert sim.raw_received == [REQUEST[protocol]]


def test_table_all_rows(sim: AnvilSimulator, protocol: int) -> None:
    """Widths: IP 16 (the mapped address), penalty 7, last_penalty 19, last_update 11 + (80 - 56) // 2."""
    code, out, err = penalty(sim)
    assert (code, err) == (0, b"")
    empty_ip = "" if protocol == 1 else "-"  # 2.4's table shows empty values as '-'
    expected = "IP               penalty last_penalty        last_update            \n"
    for record, ip in RECORDS:
        lp, lu = last_penalty(record.last_penalty), last_update(record.last_update)
        expected += f"{ip or empty_ip:<16} {record.penalty:<7} {lp} {lu:<23}\n"
    assert out == expected.encode()


def test_exact_requests(sim: AnvilSimulator, protocol: int) -> None:
    assert penalty(sim)[0] == 0
    assert sim.raw_received == [REQUEST[protocol]]
    handshake = [b"VERSION\tanvil\t1\t0"] if protocol == 1 else [b"VERSION\tanvil-client\t2\t0", b""]
    assert sim.requests == [*handshake, b"PENALTY-DUMP"]
    assert sim.errors == []


@pytest.mark.parametrize(
    ("mask", "kept"),
    [
        ("127.0.0.0/8", ["127.0.0.77", "::ffff:127.0.0.9"]),  # a mapped client IP is in an IPv4 network
        ("192.0.2.200", ["192.0.2.200"]),  # no /bits: the whole address
        ("1.0.0.2/32", ["1.0.0.2"]),
        ("2001:db8::/32", []),
        ("0.0.0.0/0", [ip for _, ip in RECORDS]),  # /0: no filter, even the ident that is no IP
    ],
)
def test_netmask_filter(sim: AnvilSimulator, mask: str, kept: list[str]) -> None:
    code, out, err = penalty(sim, mask, fmt="tab")
    assert (code, err) == (0, b"")
    assert out == TAB_TITLES + b"".join(tab_row(r, ip) for r, ip in RECORDS if ip in kept)


@pytest.mark.parametrize("mask", ["10.0.0.0/33", "jane", "10.0.0.0/x", "", "127.0.0.1/-1"])
def test_bad_netmask_is_a_usage_error(sim: AnvilSimulator, mask: str) -> None:
    code, out, err = penalty(sim, mask)
    assert (code, out) == (64, b"")
    assert err.startswith(f"Error: Invalid netmask '{mask}' given\n".encode())
    assert sim.raw_received == []  # refused before connecting


def test_extra_positional_is_a_usage_error(sim: AnvilSimulator) -> None:
    code, out, err = penalty(sim, "127.0.0.0/8", "10.0.0.0/8")
    assert (code, out) == (64, b"")
    assert b"unrecognized arguments: 10.0.0.0/8" in err
    assert sim.raw_received == []


def test_tab_output(sim: AnvilSimulator) -> None:
    code, out, _ = penalty(sim, fmt="tab")
    assert code == 0
    assert out == TAB_TITLES + b"".join(tab_row(r, ip) for r, ip in RECORDS)  # empty IPs stay empty


def test_json_output(sim: AnvilSimulator) -> None:
    code, out, _ = penalty(sim, fmt="json")
    assert code == 0
    assert json.loads(out) == [
        {
            "IP": ip,
            "penalty": str(r.penalty),
            "last_penalty": last_penalty(r.last_penalty),
            "last_update": last_update(r.last_update),
        }
        for r, ip in RECORDS
    ]


def test_hide_titles_and_empty_dump(protocol: int) -> None:
    with AnvilSimulator(protocol=protocol) as sim:
        proc = run_dvadm("-h", "-f", "tab", "penalty", "-a", sim.path)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
        assert sim.raw_received == [REQUEST[protocol]]


def test_default_socket_is_base_dir_anvil(sim: AnvilSimulator) -> None:
    proc = run_dvadm("-o", f"base_dir={os.path.dirname(sim.path)}", "-f", "tab", "penalty", "127.0.0.77")
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout == TAB_TITLES + tab_row(*RECORDS[0])


def test_invalid_line_is_fatal(protocol: int) -> None:
    with AnvilSimulator(protocol=protocol, penalties=[OBSERVED], fault="garbage") as sim:
        code, out, err = penalty(sim)
    assert (code, out) == (75, b"")
    assert err.startswith(b"Fatal: ")
    assert err.endswith(b"Read invalid penalty line: garbage\tline\n")


def test_unreachable_anvil_is_a_temporary_failure(tmp_path) -> None:
    path = str(tmp_path / "anvil")
    proc = run_dvadm("penalty", "-a", path)
    assert (proc.returncode, proc.stdout) == (75, b"")
    error, hint = proc.stderr.splitlines()  # doveadm's message, then dvadm's pointer to the fix
    assert error == f"Fatal: net_connect_unix({path}) failed: No such file or directory".encode()
    assert hint.startswith(b"Hint: is Dovecot running?")


def test_times_are_local_time(sim: AnvilSimulator) -> None:
    """TZ is honoured (a POSIX TZ string, +05:30, so no tz database is needed)."""
    proc = run_dvadm("-f", "tab", "penalty", "-a", sim.path, "127.0.0.77", env={"TZ": "IST-5:30"})
    assert proc.returncode == 0
    offset = 5 * 3600 + 30 * 60
    expected = [
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(T0 + offset)),
        time.strftime("%H:%M:%S", time.gmtime(T0 + 5 + offset)),
    ]
    assert proc.stdout.splitlines()[1].decode().split("\t")[2:] == expected
