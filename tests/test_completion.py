"""``dvadm complete --shell bash|zsh``: the scripts complete in a real bash and a real interactive zsh."""

from __future__ import annotations

import shlex
import subprocess
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from doveadm_py.testing import run
from doveadm_py.testing.cli import dvadm_executable

FLEET = """\
[servers.mail1]
url = "http://127.0.0.1:1"
api_key_env = "NONE"
groups = ["backends"]
[servers.mail2]
url = "http://127.0.0.1:2"
api_key_env = "NONE"
"""


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    code, out, err = run(["complete", "--shell", "bash"])
    assert (code, err) == (0, "")
    path = tmp_path_factory.mktemp("completion") / "dvadm.bash"
    path.write_text(out)
    return path


def complete_in_bash(script: Path, line: str, env: dict[str, str] | None = None) -> list[str]:
    """What TAB offers at the end of ``line`` (a trailing space starts a new word), in a real bash."""
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    driver = f"""
source {shlex.quote(str(script))}
spec=$(complete -p dvadm) || exit 3
func=$(sed -n 's/.* -F \\([^ ]*\\) dvadm$/\\1/p' <<<"$spec")
COMP_WORDS=({" ".join(shlex.quote(w) for w in words)})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE={shlex.quote(line)}
COMP_POINT=${{#COMP_LINE}}
"$func" dvadm "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    bin_dir = str(Path(dvadm_executable()).parent)
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", driver],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return sorted(filter(None, proc.stdout.split("\n")))


def test_bash_completes_commands_formatters_and_options(bash_script: Path) -> None:
    assert {"who", "kick", "help", "complete"} <= set(complete_in_bash(bash_script, "dvadm "))
    assert complete_in_bash(bash_script, "dvadm ki") == ["kick"]
    assert complete_in_bash(bash_script, "dvadm help ki") == ["kick"]
    assert {"who", "kick", "complete"} <= set(complete_in_bash(bash_script, "dvadm help "))
    assert complete_in_bash(bash_script, "dvadm -f ") == [
        "flow",
        "formatted",
        "json",
        "pager",
        "tab",
        "table",
    ]
    assert complete_in_bash(bash_script, "dvadm -D -f j") == ["json"]
    assert complete_in_bash(bash_script, "dvadm kick --d") == ["--dest-host", "--dry-run"]
    assert "--separate-connections" in complete_in_bash(bash_script, "dvadm -f json who -")


def test_bash_completes_fleet_servers_and_groups(bash_script: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    offered = complete_in_bash(bash_script, "dvadm who -S ", env={"DVADM_FLEET": str(fleet)})
    assert offered == ["all", "backends", "mail1", "mail2"]
    assert complete_in_bash(bash_script, "dvadm kick -S ma", env={"DVADM_FLEET": str(fleet)}) == [
        "mail1",
        "mail2",
    ]


#: Drives an interactive ``zsh -f`` through zsh's own pseudo-terminal module: compinit loads the
#: script from fpath, each argument is typed as keys, then ^Xr appends the edit buffer to the report
#: file and prints a numbered marker that the driver waits for (the test's timeout bounds each wait).
#: ^Xa is zsh's documented all-matches widget: it inserts every match the last TAB offered.
ZSH_DRIVER = r"""
zmodload zsh/zpty || exit 3
report_file=$1 fpath_dir=$2
shift 2
zpty dvz env TERM=xterm zsh -f -i
zpty -w dvz "PS1='% '; fpath=(${(q)fpath_dir} \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w dvz 'LISTMAX=10000'  # list without asking "do you wish to see all", which would eat the next key
zpty -w dvz 'zle -C all-matches complete-word _generic; bindkey "^Xa" all-matches'
zpty -w dvz 'zstyle ":completion:all-matches:*" old-matches only'
zpty -w dvz 'zstyle ":completion:all-matches::::" completer _all_matches'
zpty -w dvz "typeset -i reports; report() { print -r -- \$BUFFER >> ${(q)report_file}; BUFFER=; \
    zle -I; print -r -- @@report-\$((++reports))@@ }; zle -N report; bindkey '^Xr' report"
integer n=0
for keys in "$@"; do
    zpty -w -n dvz "$keys"$'\C-xr'
    zpty -r dvz line "*@@report-$((++n))@@*" || exit 4
done
zpty -d dvz
"""


def complete_in_zsh(script: Path, *lines: str, env: dict[str, str] | None = None) -> list[str]:
    """The command line after typing each of ``lines`` (TAB as \\t) in a real interactive zsh."""
    fpath_dir = script.parent
    report = fpath_dir / "report.txt"
    report.unlink(missing_ok=True)
    bin_dir = str(Path(dvadm_executable()).parent)
    proc = subprocess.run(
        ["zsh", "-f", "-c", ZSH_DRIVER, "zsh", str(report), str(fpath_dir), *lines],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(fpath_dir), **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    return report.read_text().splitlines()


@pytest.fixture(scope="module")
def zsh_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    code, out, err = run(["complete", "--shell", "zsh"])
    assert (code, err) == (0, "")
    path = tmp_path_factory.mktemp("zsh-fpath") / "_dvadm"  # the name compinit maps to the command
    path.write_text(out)
    return path


def test_zsh_completes_commands_formatters_options_and_servers(zsh_script: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    every = "\t\x18a"  # TAB, then all-matches: the line shows every match TAB offered
    lines = complete_in_zsh(
        zsh_script,
        "dvadm wh\t",
        "dvadm ki\t",
        "dvadm -D -f j\t",
        "dvadm -f " + every,
        "dvadm kick --d" + every,
        "dvadm " + every,
        "dvadm -f json who -" + every,
        "dvadm who -S " + every,
        "dvadm kick -S ma\t" + every,  # TAB inserts "il", the second lists
        "dvadm help ki\t",
        env={"DVADM_FLEET": str(fleet)},
    )
    assert lines[:5] == [
        "dvadm who ",
        "dvadm kick ",
        "dvadm -D -f json ",
        "dvadm -f flow formatted json pager tab table ",
        "dvadm kick --dest-host --dry-run ",
    ]
    assert {"who", "kick", "help", "complete"} <= set(lines[5].split()[1:])
    assert "--separate-connections" in lines[6].split()[4:]
    assert lines[7:] == [
        "dvadm who -S all backends mail1 mail2 ",
        "dvadm kick -S mail1 mail2 ",
        "dvadm help kick ",
    ]


def nested_script(shell: str) -> str:
    """The script with two-word commands installed (as a plugin's ``proxy list``): ``user count``
    and ``user kick``, dvadm's own who and kick under other names."""
    import shtab

    from doveadm_py.app import DvadmApp
    from doveadm_py.completion import completion_parser
    from doveadm_py.loader import COMMAND_GROUP

    app = DvadmApp()
    for name, target in (
        ("user count", "doveadm_py.commands.who:Who"),
        ("user kick", "doveadm_py.commands.kick:Kick"),
    ):
        app.command_manager.commands[name] = EntryPoint(name.replace(" ", "_"), target, COMMAND_GROUP)
    return shtab.complete(completion_parser(app), shell=shell)


def test_two_word_commands_complete_in_bash_and_zsh(tmp_path: Path) -> None:
    """A plugin's two-word command: its first word is offered with the others, then its second."""
    bash = tmp_path / "dvadm.bash"
    bash.write_text(nested_script("bash"))
    assert complete_in_bash(bash, "dvadm us") == ["user"]
    assert complete_in_bash(bash, "dvadm user ") == ["count", "kick"]
    assert complete_in_bash(bash, "dvadm user kick --d") == ["--dest-host", "--dry-run"]
    assert complete_in_bash(bash, "dvadm help us") == ["user"]
    zsh = tmp_path / "fpath" / "_dvadm"
    zsh.parent.mkdir()
    zsh.write_text(nested_script("zsh"))
    every = "\t\x18a"
    assert complete_in_zsh(zsh, "dvadm us\t", "dvadm user " + every, "dvadm user kick --d" + every) == [
        "dvadm user ",
        "dvadm user count kick ",
        "dvadm user kick --dest-host --dry-run ",
    ]


def test_zsh_script_parses_and_names_everything(tmp_path: Path) -> None:
    code, out, err = run(["complete", "--shell", "zsh"])
    assert (code, err) == (0, "")
    assert out.startswith("#compdef dvadm")
    for word in ("who", "kick", "--dry-run", "json", "formatted", "dvadm complete --servers"):
        assert word in out
    script = tmp_path / "_dvadm"
    script.write_text(out)
    check = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_unknown_shell_is_a_usage_error() -> None:
    code, out, err = run(["complete", "--shell", "fish"])
    assert (code, out) == (64, "") and "invalid choice" in err
