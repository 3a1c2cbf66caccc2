"""Man pages and ``dvadm help CMD``: one source, current pages, and ``man`` finds them after pip install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from doveadm_py.manual import BUILTIN, write_pages
from doveadm_py.testing import run
from doveadm_py.testing.venv import ThrowawayEnv

REPO = Path(__file__).resolve().parent.parent
PAGES = ("dvadm.1", "dvadm-who.1", "dvadm-kick.1")


def test_checked_in_pages_are_generated_from_the_parsers(tmp_path: Path) -> None:
    written = write_pages(str(tmp_path))
    assert sorted(Path(p).name for p in written) == sorted(PAGES)
    for name in PAGES:
        assert (REPO / "man" / name).read_text() == (tmp_path / name).read_text(), f"run `make man`: {name}"


def render(page: Path) -> str:
    env = {**os.environ, "MANWIDTH": "200", "MAN_KEEP_FORMATTING": "", "LC_ALL": "C"}
    proc = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("command", ["who", "kick"])
def test_help_and_man_page_show_the_same_sections(command: str) -> None:
    code, out, err = run(["help", command])
    assert (code, err) == (0, "")
    man = render(REPO / "man" / f"dvadm-{command}.1")
    for option, metavar in (("-a", "anvil_socket_path"), ("-f", "passdb_field")):
        # Python 3.13's argparse writes "-a, --socket-path X" where older ones write "-a X, --socket-path X".
        form = re.compile(rf"^ *{option}\b.* {metavar}$", re.MULTILINE)
        assert form.search(out) and form.search(man), (option, metavar)
    for heading, text in BUILTIN[command]:
        assert f"\n{heading.upper()}\n" in out and f"\n{heading.upper()}\n" in man
        for line in text.splitlines():
            if line.startswith("    "):  # forms and examples, literally in both
                assert line[4:] in out and line[4:] in man, line


def test_kick_help_has_forms_masks_examples_and_exit_codes() -> None:
    out = run(["help", "kick"]).stdout
    for heading in ("FORMS", "MASKS", "EXAMPLES", "EXIT STATUS"):
        assert f"\n{heading}\n" in out
    assert "dvadm kick [-a socket] -h dest_host" in out and "68  nothing kicked" in out


def test_who_help_says_what_f_matches_without_1() -> None:
    out = " ".join(run(["who", "--help"]).stdout.split())
    assert "without -1 they match the primary username, as doveadm 2.4" in out


def test_man_finds_the_pages_after_pip_install(tmp_path: Path) -> None:
    """pip puts the pages in <prefix>/share/man/man1; man-db finds them from <prefix>/bin on PATH."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.rst", "LICENSE", "MANIFEST.in"):
        shutil.copy(REPO / name, source / name)
    for name in ("doveadm_py", "man"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    env = ThrowawayEnv(tmp_path)
    env.install(source)
    prefix = env.python.parent.parent
    man_env = {"PATH": f"{prefix}/bin:/usr/bin:/bin", "MANPAGER": "cat", "MANWIDTH": "100", "LC_ALL": "C"}
    where = subprocess.run(
        ["man", "-w", "dvadm-kick"], capture_output=True, text=True, env=man_env, timeout=60
    )
    assert where.stdout.strip() == f"{prefix}/share/man/man1/dvadm-kick.1", where.stderr
    shown = subprocess.run(["man", "dvadm-kick"], capture_output=True, text=True, env=man_env, timeout=60)
    assert shown.returncode == 0 and "EXIT STATUS" in shown.stdout and "--dry-run" in shown.stdout
    for page in PAGES:
        assert (prefix / "share" / "man" / "man1" / page).is_file()
