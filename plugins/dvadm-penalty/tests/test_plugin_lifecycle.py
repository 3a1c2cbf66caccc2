"""The plugin as a distribution: listed with its provider once installed, isolated from a broken
neighbour, and gone without a trace when uninstalled. All of it happens in a throwaway venv, so
the tests run in any order (an uninstalled plugin is installed again by the next that needs it)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from doveadm_py.api import AnvilSimulator, PenaltyRecord, SimSession, run_dvadm

HELP_LINE = re.compile(rb"^  penalty +Show the auth-failure penalties .*\[from dvadm-penalty\]$", re.M)
BROKEN = "dvadm-broken-example"


@pytest.fixture
def sim() -> Iterator[AnvilSimulator]:
    sessions = [SimSession(pid=1001, username="alice", ip="192.0.2.10")]
    penalties = [PenaltyRecord("192.0.2.66", 2, 1795533842, 1795533842)]
    with AnvilSimulator(protocol=2, sessions=sessions, penalties=penalties) as simulator:
        yield simulator


def check_who_works(sim: AnvilSimulator) -> None:
    proc = run_dvadm("-f", "tab", "who", "-a", sim.path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout == b"username\t#\tservice\t(pids)\t(ips)\nalice\t1\timap\t(1001)\t(192.0.2.10)\n"


def check_penalty_works(sim: AnvilSimulator) -> None:
    proc = run_dvadm("-f", "tab", "penalty", "-a", sim.path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.splitlines()[1].split(b"\t")[:2] == [b"192.0.2.66", b"2"]


def write_broken_distribution(root: Path) -> Path:
    """A plugin whose module raises on import; its entry point name makes a two-word command."""
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64", "wheel"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (root / "setup.cfg").write_text(
        textwrap.dedent(f"""\
            [metadata]
            name = {BROKEN}
            version = 1.0

            [options]
            py_modules = dvadm_broken_example

            [options.entry_points]
            dvadm.commands =
                broken_example = dvadm_broken_example:Broken
            """)
    )
    (root / "dvadm_broken_example.py").write_text('raise RuntimeError("broken on purpose")\n')
    return root


@pytest.mark.usefixtures("penalty_plugin")
def test_help_names_the_providing_distribution() -> None:
    listing = run_dvadm("help")
    assert listing.returncode == 0
    assert HELP_LINE.search(listing.stdout), listing.stdout
    assert b"dvadm penalty [-a <anvil socket path> | -S <server> ...] [<ip/bits>]" in listing.stdout
    assert b"who" in listing.stdout and b"[from dvadm]" not in listing.stdout  # builtins carry no note
    for argv in (("help", "penalty"), ("penalty", "--help")):
        proc = run_dvadm(*argv)
        assert proc.returncode == 0
        assert proc.stdout.startswith(
            b"usage: dvadm penalty [-a <anvil socket path> | -S <server> ...] [<ip/bits>]\n"
        )
        # the note follows the summary; the command's manual text (dvadm-penalty(1)) comes after it
        assert b"\nThis command is provided by the dvadm-penalty distribution.\n" in proc.stdout


@pytest.mark.usefixtures("penalty_plugin")
def test_a_broken_plugin_beside_it_breaks_nothing_else(
    sim: AnvilSimulator, tmp_path: Path, make_distribution: Callable[[Path, str], object]
) -> None:
    make_distribution(write_broken_distribution(tmp_path / "broken"), BROKEN)
    check_who_works(sim)
    check_penalty_works(sim)
    listing = run_dvadm("help")
    assert listing.returncode == 0
    assert HELP_LINE.search(listing.stdout)
    assert re.search(rb"^  broken example +BROKEN: .*RuntimeError: broken on purpose$", listing.stdout, re.M)
    proc = run_dvadm("broken", "example")
    assert (proc.returncode, proc.stdout) == (70, b"")
    assert proc.stderr.startswith(
        f"Error: command 'broken example' from plugin distribution {BROKEN} failed to load: "
        "RuntimeError: broken on purpose".encode()
    )


def test_uninstall_removes_the_command_and_nothing_else(penalty_plugin: Any, sim: AnvilSimulator) -> None:
    check_penalty_works(sim)
    penalty_plugin.uninstall()
    listing = run_dvadm("help")
    assert listing.returncode == 0
    assert not re.search(rb"^  penalty ", listing.stdout, re.M)
    assert b"who" in listing.stdout and b"kick" in listing.stdout
    gone = run_dvadm("penalty", "-a", sim.path)
    assert (gone.returncode, gone.stdout) == (64, b"")
    assert b"unknown command 'penalty'" in gone.stderr
    assert run_dvadm("who", "--help").returncode == 0
    check_who_works(sim)
    assert sim.requests.count(b"PENALTY-DUMP") == 1  # only the run before the uninstall reached anvil


def test_installed_not_into_the_running_interpreter(penalty_plugin: Any) -> None:
    """The plugin lives in the throwaway venv only; the plain dvadm has no penalty command."""
    import importlib.util
    import subprocess

    assert importlib.util.find_spec("dvadm_penalty") is None
    found = subprocess.run(
        [str(penalty_plugin.env.python), "-c", "import dvadm_penalty; print(dvadm_penalty.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert found.stdout.startswith(str(penalty_plugin.env.root))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DVADM_TEST_PYTHON")
        assert run_dvadm("penalty").returncode == 64
