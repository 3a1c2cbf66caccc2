"""Mistakes get a pointer to the fix on stderr; doveadm's stdout and exit codes stay as they were."""

from __future__ import annotations

from doveadm_py.testing import run
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

SESSIONS = [
    SimSession(11, "user4a", ip="192.0.2.1", alt={"user_alias": "a4"}),
    SimSession(12, "user5", ip="192.0.2.2", alt={"user_alias": "a5"}),
]
HELP_HINT = "Hint: help is --help (-h is not help here)\n"


def test_dash_h_without_a_value_points_to_help() -> None:
    code, out, err = run(["who", "-h"])
    assert (code, out) == (64, "")
    assert err == "Error: dvadm who: unrecognized arguments: -h\n" + HELP_HINT
    code, out, err = run(["kick", "-h"])
    assert (code, out) == (64, "")
    assert err == "Error: dvadm kick: argument -h/--dest-host: expected one argument\n" + HELP_HINT
    assert run(["kick", "-f"])[2].count("Hint") == 0  # only -h gets it


def test_missing_anvil_socket_hints_at_dovecot_and_c_i(tmp_path: str) -> None:
    code, out, err = run(["-o", f"base_dir={tmp_path}", "who"])
    assert (code, out) == (75, "")
    first, hint = err.splitlines()
    assert first == f"Fatal: net_connect_unix({tmp_path}/anvil) failed: No such file or directory"
    assert hint.startswith("Hint: is Dovecot running?") and "-i INSTANCE" in hint and "-c FILE" in hint


def test_who_f_formatter_name_on_24_hints_to_put_it_first() -> None:
    with AnvilSimulator(2, sessions=SESSIONS, alt_fields=["user_alias"]) as sim:
        plain = run(["who", "-a", sim.path])
        code, out, err = run(["who", "-a", sim.path, "-f", "json"])
        assert (code, out) == (0, plain.stdout)  # doveadm 2.4's table, exit 0: unchanged
        assert err == (
            "Hint: -f json after 'who' names a passdb field, which this server does not have; "
            "for json output put it before the command: dvadm -f json who ...\n"
        )
        assert run(["who", "-a", sim.path, "-f", "user_alias", "-1", "a*"]).stderr == ""  # a real field
        assert run(["who", "-a", sim.path, "-f", "nosuch"]).stderr == ""  # no formatter's name


def test_kick_f_formatter_name_on_24_hints_and_kicks_nobody() -> None:
    with AnvilSimulator(2, sessions=SESSIONS, alt_fields=["user_alias"]) as sim:
        code, out, err = run(["kick", "-a", sim.path, "-f", "json", "user4*"])
        assert (code, out) == (0, "0 connections kicked\n")
        assert "put it before the command: dvadm -f json kick" in err and err.count("\n") == 1
        assert sim.kicks == []
        code, out, err = run(["kick", "-a", sim.path, "-f", "user_alias", "a4"])
        assert (code, out, err) == (0, "1 connections kicked\n", "")
