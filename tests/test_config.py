"""base_dir from a config of another Dovecot installation: its own doveconf, else the file itself.

The machine's doveconf is 2.3's; a 2.4 config (``dovecot_config_version``) in a prefix of its
own is what a migrating admin points ``-c`` at. doveconf runs are bounded, and a doveconf that
cannot start is exit 75 with no descriptor left open.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from doveadm_py.errors import TempFailError
from doveadm_py.globalopts import parse_global_options
from doveadm_py.settings import Settings
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

CONFIG_24 = "dovecot_config_version = 2.4.1\ndovecot_storage_version = 2.4.1\nprotocols = imap\n"


@pytest.fixture
def sim():
    with AnvilSimulator(2, sessions=[SimSession(pid=1001, username="alice", ip="192.0.2.10")]) as sim:
        yield sim


def make_prefix(
    root: Path, main: str, conf_d: dict[str, str] | None = None, doveconf: str | None = None
) -> Path:
    """``root/etc/dovecot/dovecot.conf`` (+ ``conf.d`` files, + ``root/bin/doveconf``); returns the config."""
    etc = root / "etc/dovecot"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "dovecot.conf").write_text(main)
    for name, text in (conf_d or {}).items():
        (etc / "conf.d" / name).write_text(text)
    if doveconf is not None:
        (root / "bin").mkdir()
        script = root / "bin/doveconf"
        script.write_text(doveconf)
        script.chmod(0o755)
    return etc / "dovecot.conf"


def host_doveconf() -> str:
    require_dovecot()
    path = shutil.which("doveconf")
    assert path, "the host's Dovecot 2.3 has no doveconf on PATH"
    return path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_the_installation_s_own_doveconf_is_asked(sim, tmp_path):
    log = tmp_path / "argv"
    script = f'#!/bin/sh\necho "$@" > {log}\necho {os.path.dirname(sim.path)}\n'
    config = make_prefix(tmp_path / "opt", CONFIG_24, doveconf=script)
    proc = run_dvadm("-c", str(config), "who")
    assert proc.returncode == 0, proc.stderr
    assert b"alice" in proc.stdout
    assert log.read_text() == f"-c {config} -h base_dir\n"


def test_another_version_s_config_is_read_when_doveconf_cannot_parse_it(sim, tmp_path):
    """No doveconf in the prefix: the host's 2.3 doveconf fails on 2.4 syntax, the file has the answer."""
    host_doveconf()
    config = make_prefix(
        tmp_path / "opt",
        CONFIG_24 + "!include_try /nonexistent/*.protocol\n!include conf.d/*.conf\n",
        {
            "10-master.conf": f"service imap {{\n  base_dir = /wrong\n}}\nbase_dir = {tmp_path}/early\n",
            "20-dirs.conf": f'# later files win\nbase_dir = "{os.path.dirname(sim.path)}"\n',
        },
    )
    proc = run_dvadm("-c", str(config), "who", "-1")
    assert proc.returncode == 0, proc.stderr
    assert b"alice" in proc.stdout


def test_no_guess_when_neither_doveconf_nor_the_file_give_base_dir(tmp_path):
    """The built-in /run/dovecot would be the host's other Dovecot: refuse instead."""
    host_doveconf()
    config = make_prefix(
        tmp_path / "opt", CONFIG_24 + "!include conf.d/*.conf\n", {"10-x.conf": "ssl = no\n"}
    )
    proc = run_dvadm("-c", str(config), "who")
    assert proc.returncode == 75
    message = proc.stderr.decode()
    assert "Unknown setting: dovecot_config_version" in message and "sets no base_dir" in message
    assert len(message.splitlines()) == 1


def test_a_real_24_config_of_a_real_24_server(dovecot_factory, tmp_path):
    """A 2.4.1 instance's own config, in a prefix whose base_dir is the host's view of its socket."""
    host_doveconf()
    instance = dovecot_factory(server="2.4-trixie")
    text = instance.config_path.read_text()
    assert text.count("base_dir = ") == 1
    main = re.sub(r"(?m)^base_dir = .*$", "!include conf.d/*.conf", text)
    config = make_prefix(tmp_path / "opt", main, {"10-dirs.conf": f"base_dir = {instance.base_dir}\n"})
    proc = run_dvadm("-c", str(config), "-f", "tab", "who", "-1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == b"username\tservice\tpid\tip\tdest_ip"  # 2.4's titles


def test_a_hanging_doveconf_is_killed_at_the_deadline(tmp_path):
    pids = tmp_path / "pids"
    script = f"#!/bin/sh\necho $$ > {pids}\nsleep 300 &\necho $! >> {pids}\nwait\n"
    config = make_prefix(tmp_path / "opt", CONFIG_24, doveconf=script)
    started = time.monotonic()
    proc = run_dvadm("-o", "dvadm_doveconf_timeout=1", "-c", str(config), "who", timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 75
    assert (
        proc.stderr.decode()
        == f"Fatal: doveconf {config.parent.parent.parent}/bin/doveconf did not answer within 1 s (killed)\n"
    )
    assert elapsed < 15
    shell, child = (int(line) for line in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (alive(shell) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(shell) and not alive(child)  # the doveconf and what it started


def test_a_doveconf_that_cannot_start_is_75(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    doveconf = bindir / "doveconf"
    doveconf.write_text("#!/nonexistent/interpreter\n")
    doveconf.chmod(0o755)
    config = tmp_path / "dovecot.conf"
    config.write_text("base_dir = /x\n")
    proc = run_dvadm("-c", str(config), "who", env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert proc.returncode == 75
    assert proc.stderr.decode() == f"Fatal: cannot run doveconf {doveconf}: No such file or directory\n"


def test_a_doveconf_that_cannot_start_leaks_no_descriptor(tmp_path):
    config = tmp_path / "dovecot.conf"
    config.write_text("base_dir = /x\n")
    options = parse_global_options(["-c", str(config), "who"])[0]
    before = sorted(os.listdir("/proc/self/fd"))
    for doveconf in (tmp_path / "missing", config):  # absent; not executable
        with pytest.raises(TempFailError, match="cannot run doveconf"):
            _ = Settings(options, doveconf=str(doveconf)).base_dir
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_include_loop_is_an_error_not_a_hang(tmp_path):
    config = tmp_path / "dovecot.conf"
    config.write_text("!include dovecot.conf\n")
    options = parse_global_options(["-c", str(config), "who"])[0]
    with pytest.raises(TempFailError, match="nested more than"):
        _ = Settings(options, doveconf=None).base_dir


def test_missing_include_is_an_error_include_try_is_not(tmp_path):
    config = tmp_path / "dovecot.conf"
    options = parse_global_options(["-c", str(config), "who"])[0]
    config.write_text("!include_try nothing/*.conf\n!include_try nothing.conf\nbase_dir = /y\n")
    assert Settings(options, doveconf=None).base_dir == "/y"
    config.write_text("base_dir = /y\n!include nothing/*.conf\n")
    with pytest.raises(TempFailError, match="no matches"):
        _ = Settings(options, doveconf=None).base_dir
