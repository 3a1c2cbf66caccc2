"""Malformed command lines through the real ``dvadm`` script never crash and never reach anvil.

Every error case runs against a fresh simulator that holds sessions: the run must end with doveadm's
exit code (reference section 7: 64 bad command line, 75 fatal), exactly one line on stderr naming the
problem, no traceback, nothing on stdout, and anvil must have received no kick and every session must
still be there. Pure command-line errors must not even connect; the few that depend on the server's
protocol generation may read from anvil first (handshake and dumps only).

Bytes that are odd but legal in a mask (TAB, LF, CR, 0x01, non-UTF-8) are not errors: they are
tab-escaped on the wire and can never inject a second anvil command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from doveadm_py.anvil.escape import split_tabescaped
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

SOCK = object()
"""Stands for the simulator's socket path in an argv template."""

# Above any pid_max: should a case wrongly reach the 2.3 signal path, no process can be hit.
PID_BASE = 2_000_000_000
INJECTED = "alice\nKICK-USER\tbob"  # a mask that would be two anvil commands if sent unescaped


def sessions() -> list[SimSession]:
    names = ["jane", "bob", "alice", "bob", INJECTED, "\udcffodd"]  # the last one is not UTF-8 (b"\xffodd")
    return [
        SimSession(PID_BASE + i, name, ip=f"10.0.0.{i + 1}", alt={"user_alias": f"{name}-alias"})
        for i, name in enumerate(names)
    ]


def snapshot(simulator: AnvilSimulator) -> list[tuple[str, int, str]]:
    return sorted((s.username, s.pid, s.guid) for s in simulator.sessions)


def argv_for(template: Sequence[str | bytes | object], path: str) -> list[str | bytes]:
    return [path if arg is SOCK else arg for arg in template]  # type: ignore[misc]


@dataclass(frozen=True)
class Bad:
    """One malformed command line and how dvadm must refuse it."""

    id: str
    argv: tuple[str | bytes | object, ...]
    exit: int
    phrase: bytes
    protocols: tuple[int, ...] = (1, 2)
    connects: bool = False  # the problem shows only once the server's protocol is known
    bug: str = ""  # a known bug makes this case fail (strict xfail, so a fix is noticed)


def who(*args: str | bytes) -> tuple[str | bytes | object, ...]:
    return ("who", "-a", SOCK, *args)


def kick(*args: str | bytes) -> tuple[str | bytes | object, ...]:
    return ("kick", "-a", SOCK, *args)


USAGE, TEMPFAIL = 64, 75
# Handshakes and dumps: what a command may ask before it learns that the server cannot do what was asked.
READ_ONLY_REQUESTS = {
    b"VERSION\tanvil\t1\t0",
    b"VERSION\tanvil-client\t2\t0",
    b"",
    b"CONNECT-DUMP",
    b"PENALTY-DUMP",
}
LONG_MASK = "x" * 1100  # longer than anvil's 1024-byte line on its own

BAD = [
    # -- global options (getopt '+Df:hvc:i:ko:OL') --
    Bad("global-unknown-short", ("-x", *who()), USAGE, b"unknown global option -x"),
    Bad("global-unknown-long", ("--bogus", *who()), USAGE, b"unknown global option --bogus"),
    Bad("global-unknown-nonutf8", (b"-\xff", *who()), USAGE, b"unknown global option -\xff"),
    Bad("global-f-missing-value", ("-f",), USAGE, b"-f needs a value"),
    Bad("global-c-missing-value", ("-c",), USAGE, b"-c needs a value"),
    Bad("global-o-missing-value", ("-o",), USAGE, b"-o needs a value"),
    Bad("global-o-without-equals", ("-o", "base_dir", *who()), USAGE, b"-o needs key=value"),
    Bad("global-o-empty-key", ("-o", "=x", *kick("jane")), USAGE, b"-o needs key=value"),
    Bad("global-o-nonutf8", ("-o", b"\xff", *who()), USAGE, b"-o needs key=value, got '\xff'"),
    Bad("global-help-with-value", ("--help=x", *who()), USAGE, b"--help"),
    Bad("formatter-unknown-who", ("-f", "nope", *who()), TEMPFAIL, b"Unknown print formatter: nope"),
    Bad("formatter-unknown-kick", ("-f", "nope", *kick("jane")), TEMPFAIL, b"Unknown print formatter"),
    Bad("formatter-nonutf8", ("-f", b"\xfe", *who()), TEMPFAIL, b"Unknown print formatter: \xfe"),
    Bad("formatter-attached", ("-fnope", *kick("bob")), TEMPFAIL, b"Unknown print formatter: nope"),
    Bad("config-missing-who", ("-c", "/nonexistent/dovecot.conf", "who"), TEMPFAIL, b"not found"),
    Bad("config-missing-kick", ("-c", "/nonexistent/dovecot.conf", "kick", "jane"), TEMPFAIL, b"not found"),
    Bad("config-missing-with-a", ("-c", "/nonexistent/dovecot.conf", *who()), TEMPFAIL, b"not found"),
    # -- who --
    Bad("who-unknown-long", who("--bogus"), USAGE, b"unrecognized arguments: --bogus"),
    Bad("who-unknown-short", who("-z"), USAGE, b"unrecognized arguments: -z"),
    Bad("who-junk-nonutf8", who("-z", b"\xff\xfe"), USAGE, b"unrecognized arguments: -z"),
    Bad("who-flag-with-value", who("--separate-connections=yes"), USAGE, b"--separate-connections"),
    Bad("who-a-missing-value", ("who", "-a"), USAGE, b"-a/--socket-path: expected one argument"),
    Bad("who-a-bad-port", ("who", "-a", "127.0.0.1:99999"), USAGE, b"Invalid anvil address"),
    Bad("who-a-no-port", ("who", "-a", "localhost"), USAGE, b"Port not known for anvil address"),
    Bad(
        "who-a-huge-port",
        ("who", "-a", "127.0.0.1:" + "1" * 5000),
        USAGE,
        b"Invalid anvil address",
    ),
    Bad("who-f-missing-value", who("-f"), USAGE, b"-f/--passdb-field: expected one argument"),
    # worded apart by 2.3 and 2.4 ("cmd who: ..."): the server is asked its generation first
    Bad(
        "who-two-networks",
        who("10.0.0.0/8", "192.168.0.0/16"),
        USAGE,
        b"Multiple network masks",
        connects=True,
    ),
    Bad(
        "who-two-hosts", who("jane", "10.0.0.1", "10.0.0.2"), USAGE, b"Multiple network masks", connects=True
    ),
    Bad(
        "who-v4-and-v6", who("10.0.0.0/8", "jane", "::1/64"), USAGE, b"Multiple network masks", connects=True
    ),
    Bad("who-bits-33", who("10.0.0.0/33"), USAGE, b"Invalid network mask '10.0.0.0/33'"),
    Bad("who-bits-129", who("::1/129"), USAGE, b"Invalid network mask '::1/129'"),
    Bad("who-bits-x", who("1.2.3.4/x"), USAGE, b"Invalid network mask '1.2.3.4/x'"),
    Bad("who-bits-empty", who("jane", "10.0.0.0/"), USAGE, b"Invalid network mask '10.0.0.0/'"),
    Bad("who-bits-bracketed-v6", who("[2001:db8::]/200"), USAGE, b"Invalid network mask '[2001:db8::]/200'"),
    Bad("who-empty-mask", who(""), USAGE, b"Empty user mask"),
    Bad("who-f-on-23", who("-f", "user_alias", "jane"), USAGE, b"only Dovecot 2.4", (1,), connects=True),
    # -- kick --
    Bad("kick-no-args", kick(), USAGE, b"user and/or ip[/bits] must be specified."),
    Bad("kick-dry-run-only", kick("--dry-run"), USAGE, b"user and/or ip[/bits] must be specified."),
    Bad("kick-force-only", kick("--force"), USAGE, b"user and/or ip[/bits] must be specified."),
    Bad("kick-zero-network-only", kick("0.0.0.0/0"), USAGE, b"A /0 network matches everyone"),
    Bad("kick-zero-networks-v6", kick("::/0", "10.0.0.0/0"), USAGE, b"give '*' to kick every user"),
    Bad("kick-f-without-mask", kick("-f", "user_alias"), USAGE, b"Username must be given with passdb-field"),
    Bad("kick-f-network-only", kick("-f", "user_alias", "10.0.0.0/8"), USAGE, b"Username must be given"),
    Bad("kick-f-empty-field", kick("-f", "", "jane"), USAGE, b"-f passdb_field must not be empty"),
    Bad("kick-f-missing-value", kick("-f"), USAGE, b"-f/--passdb-field: expected one argument"),
    Bad("kick-h-missing-value", kick("-h"), USAGE, b"-h/--dest-host: expected one argument"),
    Bad("kick-a-missing-value", ("kick", "-a"), USAGE, b"-a/--socket-path: expected one argument"),
    Bad("kick-h-not-an-ip", kick("-h", "notanip"), TEMPFAIL, b"dest-host isn't a valid IP address"),
    Bad("kick-h-empty", kick("-h", "", "jane"), TEMPFAIL, b"dest-host isn't a valid IP address"),
    Bad("kick-h-network", kick("-h", "10.0.0.0/8"), TEMPFAIL, b"dest-host isn't a valid IP address"),
    Bad("kick-h-v6-garbage", kick("-h", "::g"), TEMPFAIL, b"dest-host isn't a valid IP address"),
    Bad("kick-unknown-long", kick("--bogus", "jane"), USAGE, b"unrecognized arguments: --bogus"),
    Bad("kick-unknown-short", kick("-Z", "jane"), USAGE, b"unrecognized arguments: -Z"),
    Bad("kick-force-with-value", kick("--force=1", "jane"), USAGE, b"--force"),
    Bad(
        "kick-two-networks",
        kick("jane", "10.0.0.0/8", "10.0.0.0/16"),
        USAGE,
        b"Multiple network masks",
        connects=True,  # worded apart by 2.3 and 2.4: the server is asked its generation first
    ),
    Bad("kick-bits-33", kick("10.0.0.0/33"), USAGE, b"Invalid network mask '10.0.0.0/33'"),
    Bad("kick-bits-129", kick("jane", "::1/129"), USAGE, b"Invalid network mask '::1/129'"),
    Bad("kick-bits-x", kick("1.2.3.4/x"), USAGE, b"Invalid network mask '1.2.3.4/x'"),
    Bad("kick-bits-negative", kick("bob", "10.0.0.0/-1"), USAGE, b"Invalid network mask '10.0.0.0/-1'"),
    Bad("kick-empty-mask", kick(""), USAGE, b"Empty user mask"),
    Bad("kick-empty-second-mask", kick("jane", ""), USAGE, b"Empty user mask"),
    Bad("kick-f-on-23", kick("-f", "user_alias", "jane"), USAGE, b"alternative usernames", (1,), True),
    Bad("kick-h-on-23", kick("-h", "10.0.0.9", "jane"), USAGE, b"proxy destinations", (1,), True),
    Bad("kick-mask-over-1024", kick(LONG_MASK), USAGE, b"request too long for anvil", (2,), True),
    Bad("kick-escaped-over-1024", kick("\t" * 600), USAGE, b"request too long for anvil", (2,), True),
    Bad("kick-alt-over-1024", kick("-f", "user_alias", LONG_MASK), USAGE, b"request too long", (2,), True),
]


def test_there_are_enough_cases() -> None:
    assert len(BAD) >= 40
    assert len({case.id for case in BAD}) == len(BAD)


RUNS = [
    pytest.param(
        case,
        protocol,
        id=f"{('2.3', '2.4')[protocol - 1]}-{case.id}",
        marks=[pytest.mark.xfail(strict=True, reason=f"bug: {case.bug}")] if case.bug else [],
    )
    for case in BAD
    for protocol in case.protocols
]


@pytest.mark.parametrize(("case", "protocol"), RUNS)
def test_bad_command_line_is_refused(case: Bad, protocol: int) -> None:
    with AnvilSimulator(protocol, sessions=sessions(), alt_fields=["user_alias"]) as sim:
        check_refused(case, sim)


def check_refused(case: Bad, sim: AnvilSimulator) -> None:
    before = snapshot(sim)
    result = run_dvadm(*argv_for(case.argv, sim.path), timeout=30)
    lines = result.stderr.splitlines()
    assert b"Traceback" not in result.stderr + result.stdout
    assert result.returncode == case.exit, result.stderr
    # one line, and at most a pointer to the fix after it
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith(b"Hint: ")), result.stderr
    assert case.phrase in lines[0], lines[0]
    assert lines[0].startswith(b"Fatal: " if case.exit == TEMPFAIL else b"Error: "), lines[0]
    assert result.stdout == b""
    # Nothing but read-only requests reached anvil: no kick, and every session is still there.
    assert sim.kicks == [] and sim.errors == []
    assert set(sim.requests) <= READ_ONLY_REQUESTS, sim.requests
    assert snapshot(sim) == before
    if not case.connects:
        assert sim.accepted == 0  # refused before even connecting


def test_kick_through_tcp_anvil_is_refused_on_23() -> None:
    """2.3 kicks by signalling local pids: a TCP anvil's dump lists another host's processes."""
    with AnvilSimulator(1, sessions=sessions(), tcp=True) as sim:
        result = run_dvadm("kick", "-a", sim.path, "jane", timeout=30)
        assert result.returncode == USAGE
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and b"refusing to kick through TCP anvil" in lines[0]
        assert b"Traceback" not in result.stderr and result.stdout == b""
        assert sim.kicks == [] and set(sim.requests) <= READ_ONLY_REQUESTS


# -- odd but legal masks: escaped on the wire, never a second command ------------------------------------


def kick_lines(sim: AnvilSimulator) -> list[list[bytes]]:
    return [split_tabescaped(line) for line in sim.kicks]


@pytest.mark.parametrize(
    "mask",
    [INJECTED, "a\tb", "a\rb", "a\x01b", "carol\n\nCONNECT-DUMP", "\x1b[31mred\x07", "x\x7f\x02y", "\ttab"],
    ids=["injection", "tab", "cr", "soh", "blank-lines", "ansi", "controls", "leading-tab"],
)
def test_control_bytes_in_a_mask_are_one_escaped_kick_on_24(mask: str) -> None:
    with AnvilSimulator(2, sessions=sessions(), alt_fields=["user_alias"]) as sim:
        before = snapshot(sim)
        result = run_dvadm("kick", "-a", sim.path, mask, timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stderr == b"" and b"Traceback" not in result.stdout
        # Exactly one KICK line arrived, and it unescapes to exactly the mask.
        assert len(sim.kicks) == 1
        assert kick_lines(sim) == [[b"KICK-USER", mask.encode()]]
        assert sum(line.startswith(b"KICK") for line in sim.requests) == 1
        assert sim.errors == []
        kicked = [s for s in before if s[0] == mask]
        assert result.stdout == f"{len(kicked)} connections kicked\n".encode()
        assert snapshot(sim) == [s for s in before if s[0] != mask]


def test_injected_kick_user_leaves_bob_alone_on_24() -> None:
    """``kick 'alice\\nKICK-USER\\tbob'`` kicks the one session with that literal name; bob survives."""
    with AnvilSimulator(2, sessions=sessions()) as sim:
        result = run_dvadm("kick", "-a", sim.path, INJECTED, timeout=30)
        assert result.returncode == 0 and result.stdout == b"1 connections kicked\n", result.stderr
        names = [s.username for s in sim.sessions]
        assert names.count("bob") == 2 and "alice" in names and INJECTED not in names
        assert sim.kicks == [b"KICK-USER\talice\x01nKICK-USER\x01tbob"]


def test_injection_through_a_wildcard_kicks_by_guid_only() -> None:
    """The slow path sends one escaped KICK-USER per matching session, with its GUID."""
    with AnvilSimulator(2, sessions=sessions()) as sim:
        target = next(s for s in sim.sessions if s.username == INJECTED)
        result = run_dvadm("kick", "-a", sim.path, "alice\n*", timeout=30)
        assert result.returncode == 0 and result.stdout == b"1 connections kicked\n", result.stderr
        assert kick_lines(sim) == [[b"KICK-USER", INJECTED.encode(), target.guid.encode()]]
        assert sorted(s.username for s in sim.sessions) == sorted(
            ["jane", "bob", "alice", "bob", "\udcffodd"]
        )


def test_non_utf8_mask_goes_to_anvil_byte_for_byte() -> None:
    with AnvilSimulator(2, sessions=sessions()) as sim:
        result = run_dvadm("kick", "-a", sim.path, b"\xffodd", timeout=30)
        assert result.returncode == 0 and result.stdout == b"1 connections kicked\n", result.stderr
        assert sim.kicks == [b"KICK-USER\t\xffodd"]
        assert "\udcffodd" not in [s.username for s in sim.sessions]


@pytest.mark.parametrize("protocol", [1, 2], ids=["2.3", "2.4"])
@pytest.mark.parametrize(
    "masks",
    [
        [b"\xff*"],
        [b"\xff\xfe\xfd"],
        ["a\nb", "j*"],
        [INJECTED],
        ["\t"],
        [b"*\x80*", "10.0.0.0/8"],
        ["::g/64", "1.2.3.256/8", "jane/8"],  # not addresses: username masks (doveadm's rule), not errors
    ],
    ids=["nonutf8-wildcard", "nonutf8", "newline", "injection", "tab", "nonutf8-and-network", "not-ips"],
)
def test_who_with_odd_masks_never_crashes(protocol: int, masks: list[str | bytes]) -> None:
    with AnvilSimulator(protocol, sessions=sessions()) as sim:
        for extra in ([], ["-1"]):
            result = run_dvadm("-f", "tab", "who", "-a", sim.path, *extra, *masks, timeout=30)
            assert result.returncode == 0, result.stderr
            assert result.stderr == b""
            assert b"Traceback" not in result.stdout
        assert sim.kicks == []


def test_who_lists_a_non_utf8_user_with_its_own_bytes() -> None:
    with AnvilSimulator(2, sessions=sessions()) as sim:
        result = run_dvadm("-f", "tab", "who", "-a", sim.path, "-1", b"\xff*", timeout=30)
        assert result.returncode == 0 and result.stderr == b""
        rows = result.stdout.splitlines()[1:]
        assert [row.split(b"\t")[0] for row in rows] == [b"\xffodd"]


@pytest.mark.parametrize(
    "mask",
    ["zed\nKICK-USER\tbob", "a\tb", b"\xff\xfe", LONG_MASK],
    ids=["injection", "tab", "nonutf8", "long"],
)
def test_odd_masks_on_23_only_filter(mask: str | bytes) -> None:
    """2.3 sends no mask to anvil: an odd mask matches nobody here and kicks nothing (exit 68)."""
    with AnvilSimulator(1, sessions=sessions()) as sim:
        before = snapshot(sim)
        result = run_dvadm("kick", "-a", sim.path, mask, timeout=30)
        assert result.returncode == 68 and result.stdout == b"no users kicked\n", result.stderr
        assert result.stderr == b""
        assert b"CONNECT-DUMP" in sim.requests and set(sim.requests) <= READ_ONLY_REQUESTS
        assert snapshot(sim) == before
