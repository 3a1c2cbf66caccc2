"""The dvadm application: command discovery, doveadm's option rules, exit codes, plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from doveadm_py.app import DvadmApp
from doveadm_py.errors import UsageError
from doveadm_py.globalopts import parse_global_options
from doveadm_py.settings import Settings
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.dovecot import tool_binary
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.simulator import AnvilSimulator, SimSession


@pytest.fixture
def sim2():
    sessions = [
        SimSession(pid=1001, username="alice", ip="192.0.2.10", alt={"user_account": "acct-1"}),
        SimSession(pid=1002, username="bob", ip="192.0.2.20", alt={"user_account": "acct-2"}),
    ]
    with AnvilSimulator(protocol=2, sessions=sessions, alt_fields=["user_account"]) as sim:
        yield sim


def command_args(argv: list[str]):
    """Parse argv as dvadm does: global options, then the chosen command's own parser."""
    app = DvadmApp()
    opts, rest = parse_global_options(argv)
    factory, name, sub_argv = app.command_manager.find_command(rest)
    cmd = factory(app, opts, cmd_name=name)
    return opts, cmd.parse_arguments(cmd.get_parser(f"dvadm {name}"), sub_argv)


# -- doveadm's split between global and command options ------------------------------


def test_global_f_and_kick_f_are_different_options():
    opts, args = command_args(["-f", "json", "kick", "-f", "user_alias", "x"])
    assert opts.formatter == "json"
    assert args.passdb_field == "user_alias" and args.masks == ["x"]


def test_kick_h_is_dest_host_not_help_or_hide_titles():
    opts, args = command_args(["kick", "-h", "10.0.0.1"])
    assert opts.hide_titles is False
    assert args.dest_host == "10.0.0.1" and args.masks == []


def test_clustered_and_attached_global_options():
    opts, args = command_args(["-Dv", "-fjson", "-h", "who", "-1", "ja*"])
    assert (opts.debug, opts.verbose, opts.formatter, opts.hide_titles) == (True, True, "json", True)
    assert args.separate_connections and args.masks == ["ja*"]


def test_double_dash_ends_global_options():
    opts, args = command_args(["-v", "--", "who", "-f", "user_alias", "x"])
    assert opts.verbose and opts.formatter is None
    assert args.passdb_field == "user_alias"


def test_command_options_may_follow_masks():
    _, args = command_args(["who", "ja*", "-1", "127.0.0.0/8"])
    assert args.separate_connections and args.masks == ["ja*", "127.0.0.0/8"]


def test_repeated_o_overrides():
    opts, _ = parse_global_options(["-o", "base_dir=/a", "-oimap_x=1", "who"])
    assert opts.overrides == {"base_dir": "/a", "imap_x": "1"}


def test_json_formatter_and_kick_f_end_to_end(sim2):
    proc = run_dvadm("-f", "json", "kick", "-a", sim2.path, "-f", "user_account", "acct-1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"count": "1"}]
    assert b"KICK-ALT-USER\tuser_account\tacct-1" in sim2.requests


# -- exit codes and messages -------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        ([], 64, b"usage: dvadm"),
        (["nosuchcommand"], 64, b"unknown command 'nosuchcommand'"),
        (["-x", "who"], 64, b"unknown global option -x"),
        (["-f"], 64, b"global option -f needs a value"),
        (["-o", "base_dir", "who"], 64, b"-o needs key=value"),
        (["-f", "nope", "who"], 75, b"Unknown print formatter: nope"),
        (["-c", "/nonexistent/dovecot.conf", "who"], 75, b"/nonexistent/dovecot.conf not found"),
        (["who", "--bogus"], 64, b"unrecognized arguments: --bogus"),
        (["who", "-a"], 64, b"expected one argument"),
    ],
)
def test_bad_command_lines(argv, code, needle):
    proc = run_dvadm(*argv)
    assert proc.returncode == code
    assert needle in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert proc.stdout == b""


def test_unique_prefix_never_runs_a_command(sim2):
    proc = run_dvadm("ki", "-a", sim2.path, "bob")
    assert proc.returncode == 64
    assert b"did you mean: kick" in proc.stderr
    assert sim2.requests == []  # nothing reached anvil
    assert len(sim2.sessions) == 2


def test_help_forms_exit_zero():
    for argv in (["help"], ["help", "who"], ["who", "--help"], ["--help"], ["-h"]):
        proc = run_dvadm(*argv)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert b"usage" in proc.stdout.lower(), argv
    assert b"-1, --separate-connections" in run_dvadm("who", "--help").stdout
    # argparse up to 3.12 repeats the metavar ("-h dest_host, --dest-host dest_host"), 3.13 does not
    kick_help = run_dvadm("help", "kick").stdout
    assert b"-h dest_host, --dest-host" in kick_help or b"-h, --dest-host dest_host" in kick_help


def test_version():
    proc = run_dvadm("--version")
    assert proc.returncode == 0 and proc.stdout.startswith(b"dvadm ")


def test_debug_logs_anvil_lines_on_stderr(sim2):
    proc = run_dvadm("-D", "who", "-a", sim2.path)
    assert proc.returncode == 0
    assert b"CONNECT-DUMP" in proc.stderr and b"alice" in proc.stderr
    assert b"alice" in proc.stdout


# -- lazy loading ----------------------------------------------------------------------


def test_who_imports_no_other_command_and_no_cmd2(sim2):
    code = textwrap.dedent(
        f"""
        import sys
        from doveadm_py.app import main
        rc = main(["who", "-a", {sim2.path!r}])
        heavy = [m for m in sys.modules if m.split(".")[0] in ("cmd2", "prettytable", "yaml")]
        commands = sorted(m for m in sys.modules if m.startswith("doveadm_py.commands."))
        print(rc, heavy, commands, file=sys.stderr)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "0 [] ['doveadm_py.commands.who']"


# -- plugins from other distributions ------------------------------------------------------


def make_dist(root: Path, dist: str, module: str, source: str, entry_points: str) -> None:
    """A minimal installed distribution (dist-info with entry points) on a PYTHONPATH entry."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"  # as wheels name it
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_path(tmp_path):
    make_dist(
        tmp_path,
        "dvadm-brokenplug",
        "brokenplug_mod",
        'raise ImportError("this plugin is broken on purpose")\n',
        "[dvadm.commands]\nexplode = brokenplug_mod:Explode\n",
    )
    make_dist(
        tmp_path,
        "dvadm-hello",
        "hello_mod",
        """
        from doveadm_py.command import DvadmCommand
        from doveadm_py.output import Header

        class HelloWorld(DvadmCommand):
            '''Greet someone (a test plugin).'''
            usage = "<name>"
            def add_arguments(self, parser):
                parser.add_argument("name")
            def take_action(self, args):
                self.emit([Header("greeting", "greeting")], [("hello " + args.name,)], formatter="flow")
        """,
        "[dvadm.commands]\nhello_world = hello_mod:HelloWorld\n",
    )
    return {"PYTHONPATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}


def test_broken_plugin_is_isolated(plugin_path, sim2):
    proc = run_dvadm("explode", env=plugin_path)
    assert proc.returncode == 70
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1
    assert "dvadm-brokenplug" in lines[0] and "broken on purpose" in lines[0]
    who = run_dvadm("who", "-a", sim2.path, env=plugin_path)
    assert who.returncode == 0 and b"alice" in who.stdout
    listing = run_dvadm("help", env=plugin_path)
    assert listing.returncode == 0
    assert b"explode" in listing.stdout and b"BROKEN" in listing.stdout


def test_third_party_multi_word_command(plugin_path):
    proc = run_dvadm("hello", "world", "you", env=plugin_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"greeting=hello you\n"
    assert b"[from dvadm-hello]" in run_dvadm("help", env=plugin_path).stdout
    assert (
        b"provided by the dvadm-hello distribution"
        in run_dvadm("hello", "world", "--help", env=plugin_path).stdout
    )
    assert run_dvadm("hello", env=plugin_path).returncode == 64  # not a command by itself


# -- base_dir resolution ---------------------------------------------------------------


def settings_for(argv: list[str], **kwargs) -> Settings:
    return Settings(parse_global_options(argv)[0], **kwargs)


def test_base_dir_from_o_override_wins():
    assert settings_for(["-o", "base_dir=/x", "-c", "/nonexistent", "who"]).base_dir == "/x"


def test_base_dir_without_config():
    assert settings_for(["-O", "-c", "/nonexistent", "who"]).base_dir == "/run/dovecot"


def test_base_dir_from_config_file_without_doveconf(tmp_path):
    conf = tmp_path / "dovecot.conf"
    conf.write_text("# test\nprotocols = imap\nservice x {\n  base_dir = /wrong\n}\nbase_dir = /run/mine/\n")
    assert settings_for(["-c", str(conf), "who"], doveconf=None).base_dir == "/run/mine/"


def test_base_dir_from_doveconf(tmp_path):
    require_dovecot()  # a skip only outside CI: DVADM_REQUIRE_DOVECOT=1 fails without doveconf
    conf = tmp_path / "dovecot.conf"
    conf.write_text(f"base_dir = {tmp_path}/run\n")
    assert settings_for(["-c", str(conf), "who"]).base_dir.rstrip("/") == f"{tmp_path}/run"


def test_o_base_dir_locates_the_anvil_socket(sim2):
    base_dir = os.path.dirname(sim2.path)
    proc = run_dvadm("-o", f"base_dir={base_dir}", "who")
    assert proc.returncode == 0 and b"alice" in proc.stdout


def test_config_base_dir_locates_the_anvil_socket(sim2, tmp_path):
    conf = tmp_path / "dovecot.conf"
    conf.write_text(f"base_dir = {os.path.dirname(sim2.path)}\n")
    proc = run_dvadm("-c", str(conf), "who", "-1")
    assert proc.returncode == 0 and b"bob" in proc.stdout


def test_missing_socket_is_one_line_exit_75(tmp_path):
    proc = run_dvadm("-o", f"base_dir={tmp_path}", "who")
    assert proc.returncode == 75
    error, hint = proc.stderr.splitlines()  # doveadm's line, then a pointer to the fix
    assert str(tmp_path / "anvil").encode() in error and hint.startswith(b"Hint: ")


def test_two_distributions_declaring_one_command_run_neither(tmp_path, sim2):
    for dist in ("dvadm-one", "dvadm-two"):
        module = dist.replace("-", "_") + "_mod"
        make_dist(
            tmp_path,
            dist,
            module,
            "from doveadm_py.command import DvadmCommand\n\nclass Twin(DvadmCommand):\n"
            "    '''A duplicate.'''\n    def take_action(self, args):\n"
            f"        self.app.stdout.write('{dist} ran\\n')\n",
            f"[dvadm.commands]\ntwin = {module}:Twin\n",
        )
    env = {"PYTHONPATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_dvadm("twin", env=env)
    assert proc.returncode == 70 and proc.stdout == b""
    assert b"declared more than once" in proc.stderr
    assert b"dvadm-one" in proc.stderr and b"dvadm-two" in proc.stderr
    assert b"CONFLICT" in run_dvadm("help", env=env).stdout
    assert run_dvadm("who", "-a", sim2.path, env=env).returncode == 0


def test_empty_base_dir_still_names_a_socket_path():
    assert settings_for(["-o", "base_dir=", "who"]).anvil_path == "/anvil"
    assert settings_for(["-o", "base_dir=/run/x/", "who"]).anvil_path == "/run/x/anvil"


def test_anvil_timeout_setting_bounds_a_hung_anvil():
    with AnvilSimulator(protocol=2, fault="hang") as sim:
        started = time.monotonic()
        proc = run_dvadm("-o", "dvadm_anvil_timeout=0.5", "who", "-a", sim.path)
        elapsed = time.monotonic() - started
    assert proc.returncode == 75
    assert sim.path.encode() in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert elapsed < 5  # the default would wait 10 s


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_bad_timeout_setting_is_a_usage_error(value, sim2):
    proc = run_dvadm("-o", f"dvadm_anvil_timeout={value}", "who", "-a", sim2.path)
    assert proc.returncode == 64
    assert b"expected a number of seconds" in proc.stderr
    assert sim2.requests == []


# -- `--` ends the command's options (getopt_long), for every command ------------------------


@pytest.mark.parametrize(
    ("argv", "socket", "masks"),
    [
        (["kick", "--", "-bob"], None, ["-bob"]),
        (["kick", "x", "--", "-bob", "-1"], None, ["x", "-bob", "-1"]),
        (["kick", "-a", "s", "--", "-bob"], "s", ["-bob"]),
        (["who", "x", "-1", "--", "-bob"], None, ["x", "-bob"]),
        (["who", "--", "--"], None, ["--"]),  # only the first ends the options
        (["who", "-1as", "m"], "s", ["m"]),  # a cluster ending in an option with its value
        (["who", "-1a", "s", "m"], "s", ["m"]),
        (["kick", "-a", "-x", "y"], "-x", ["y"]),  # getopt takes the next word as the value
        (["kick", "--socket-path=-x", "y"], "-x", ["y"]),
        (["kick", "-", "x"], None, ["-", "x"]),
    ],
)
def test_double_dash_ends_command_options(argv, socket, masks):
    _, args = command_args(argv)
    assert (args.socket_path, args.masks) == (socket, masks)


def test_kick_and_who_name_a_user_that_begins_with_a_dash(sim2):
    sim2.sessions = [*sim2.sessions, SimSession(pid=1003, username="-bob", ip="192.0.2.30")]
    who = run_dvadm("-f", "tab", "who", "-1", "-a", sim2.path, "--", "-bob")
    assert who.returncode == 0, who.stderr
    assert who.stdout.splitlines()[1].startswith(b"-bob\timap\t1003\t")
    kick = run_dvadm("kick", "-a", sim2.path, "--", "-bob")
    assert (kick.returncode, kick.stdout) == (0, b"1 connections kicked\n"), kick.stderr
    assert sim2.kicks == [b"KICK-USER\t-bob"]


def test_value_double_dash_is_refused_not_dropped():
    with pytest.raises(UsageError, match="'--' given as the value of -a"):
        command_args(["kick", "-a", "--", "x"])


def test_a_command_without_positionals_still_parses_and_names_extra_words():
    from doveadm_py.command import CommandArgumentParser, DvadmCommand

    parser = CommandArgumentParser(prog="dvadm x")
    parser.add_argument("-a")
    parse = DvadmCommand.parse_arguments
    assert parse(None, parser, ["-a", "s"]).a == "s"  # type: ignore[arg-type]
    assert parse(None, parser, ["-a", "s", "--"]).a == "s"  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"^dvadm x: unrecognized arguments: y -z$"):
        parse(None, parser, ["y", "--", "-z"])  # type: ignore[arg-type]


def test_double_dash_reads_as_the_real_doveadm_23_reads_it():
    """Read-only, on a 2.3 simulator both tools can talk to: the same rows for the same words."""
    require_dovecot()
    doveadm = tool_binary("doveadm")
    assert doveadm
    sessions = [SimSession(pid=1001, username="-bob", ip="192.0.2.1"), SimSession(pid=1002, username="bob")]
    with AnvilSimulator(protocol=1, sessions=sessions) as sim:
        for words in (["--", "-bob"], ["-1", "--", "-bob"], ["bob", "--"]):
            argv = ["-f", "tab", "who", "-a", sim.path, *words]
            ours = run_dvadm(*argv)
            theirs = subprocess.run([doveadm, *argv], capture_output=True, timeout=30, check=False)
            assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), words
