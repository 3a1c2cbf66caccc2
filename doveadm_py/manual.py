"""Manual pages and long help: one text per command, shown by ``dvadm help CMD`` and ``man dvadm-CMD``.

The pages are generated from the commands' own argument parsers with argparse-manpage (a dev tool:
``make man`` writes ``man/*.1``, a test keeps them current) plus the sections below; ``dvadm help
kick`` prints the same sections as plain text after the parser's help. A plugin command adds its own
with a ``manual_sections`` class attribute: ``((heading, text), ...)``. Only help and the generator
import this module.

Text markup (rendered to roff for man, kept as it is for help): paragraphs separated by blank
lines; a line starting with ``- `` starts a bullet; lines indented by four spaces are literal
(examples, forms).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from typing import Any

Sections = Sequence[tuple[str, str]]

#: The .TH date: the date of the text, not of the build, so generating the pages is reproducible.
MAN_DATE = "2026-11-30"

#: dvadm's global options (getopt, before the command word): flags, metavar, help.
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], str | None, str], ...] = (
    (("-D",), None, "debug: log every anvil line sent and received, show tracebacks"),
    (("-v",), None, "verbose"),
    (("-f",), "FORMATTER", "output formatter: flow, tab, table, pager, json, formatted, or a plugin's"),
    (("-h",), None, "hide column titles (with no command: this help)"),
    (("-c",), "FILE", "Dovecot config file (base_dir comes from it)"),
    (("-i",), "INSTANCE", "Dovecot instance name"),
    (("-o",), "KEY=VALUE", "override a setting, e.g. -o base_dir=/run/dovecot2 (repeatable)"),
    (("-O",), None, "ignore the config: built-in defaults"),
    (("-k", "-L"), None, "accepted for compatibility"),
    (("--help",), None, "this help"),
    (("--version",), None, "the version"),
)

EXIT_CODES = """\
As doveadm (sysexits):

    0   success (a Dovecot 2.4 kick also when nothing matched)
    64  bad command line: unknown option, bad mask, two networks, no mask for kick
    68  nothing kicked (Dovecot 2.3)
    70  a plugin failed to load, or an internal error
    74  the output could not be written
    75  the server failed: anvil socket missing or refused, timeout, malformed reply;
        a missing config file; an unknown formatter

An error is one line on stderr (Error: ... or Fatal: ...); -D adds the traceback. Bad input
is rejected before anything is sent to anvil, so it never kicks anything."""

MASKS = """\
As doveadm: * and ? wildcards, ASCII case-insensitive, over the whole name; several user masks
are OR-ed; an all-digits argument is a username. ip or ip/bits (IPv4 or IPv6; an IPv4-mapped
client address matches IPv4 networks) is a network, at most one. With both, a session must match
a user mask and the network."""

BUILTIN: dict[str, Sections] = {
    "": (
        (
            "Description",
            """\
dvadm is a drop-in for Dovecot's doveadm administration commands that look at and act on
connected users. It speaks Dovecot's anvil protocol itself, for Dovecot 2.3 (protocol 1) and 2.4
(protocol 2), and detects which one the server runs. Third parties add commands by publishing a
Python package with an entry point in the group dvadm.commands.

Global options go before the command word only (getopt + rules, as doveadm); everything after it
belongs to the command, so "dvadm -f json kick -f user_alias x" means what it means to doveadm.

dvadm's own settings use -o too: -o dvadm_anvil_timeout=SECONDS bounds connecting and every anvil
read (default 10), -o dvadm_kick_timeout=SECONDS each Dovecot 2.4 kick reply (default 30). The
anvil socket is <base_dir>/anvil; base_dir comes from -o base_dir=, else the config (doveconf -h
base_dir with the same -c/-i), else /run/dovecot.""",
        ),
        (
            "Commands",
            "    dvadm help              the commands, with the package providing each\n"
            "    dvadm who               who is connected (dvadm-who(1))\n"
            "    dvadm kick              disconnect users (dvadm-kick(1))",
        ),
        ("Exit status", EXIT_CODES),
        ("See also", "dvadm-who(1), dvadm-kick(1), doveadm(1)"),
    ),
    "who": (
        (
            "Description",
            """\
Lists connected users, aggregated per (username, service): connection count, pids and IPs; -1
lists every connection. Titles and counting follow the server's own doveadm generation (2.3:
proto, the count is the sum of anvil's refcounts; 2.4: service, plus dest_ip and one column per
alternative-username field with -1).

-f passdb_field (Dovecot 2.4) matches the masks against that alternative username with -1.
Without -1 the masks match the primary username, as doveadm 2.4 does. To choose an output
format, put the global -f before the command: dvadm -f json who.""",
        ),
        ("Masks", MASKS + " An aggregated row is kept when any of its IPs is in the network."),
        (
            "Examples",
            """\
    dvadm who                          everyone, one row per user and service
    dvadm who -1 'ja*'                 every connection of users starting with ja
    dvadm who 192.0.2.0/24             users connected from that network
    dvadm -f json who -1               as JSON
    dvadm who -1 -f user_alias 'a*'    2.4: match an alternative username""",
        ),
        ("Exit status", EXIT_CODES),
        ("See also", "dvadm(1), dvadm-kick(1), doveadm-who(1)"),
    ),
    "kick": (
        (
            "Forms",
            """\
    dvadm kick [-a socket] [-f passdb_field] [-h dest_host] user_mask [...]
    dvadm kick [-a socket] [-f passdb_field] [-h dest_host] ip[/bits]
    dvadm kick [-a socket] [-f passdb_field] [-h dest_host] user_mask [...] ip[/bits]
    dvadm kick [-a socket] -h dest_host

Disconnects users by user_mask and/or the ip[/bits] they connect from (both must match when both
are given), or, on Dovecot 2.4, proxy connections to dest_host (-h, an IP literal). -f
passdb_field (2.4) matches the masks against an alternative username (a passdb user_* field)
instead. --dry-run prints the sessions that would be kicked, in who -1 form, and kicks nothing.
Put a global -f (output format) before the command: "kick -f json" names a passdb field.""",
        ),
        ("Masks", MASKS),
        (
            "Dovecot 2.4",
            """\
Anvil kicks. Plain names go straight to anvil (exact, case-sensitive match, as doveadm);
wildcards, networks or -h read the session list, filter it, and kick each matching session by its
connection GUID, pipelined on one connection. Prints "N connections kicked" (exit 0, also for 0).
A dump that fails midway kicks nothing.""",
        ),
        (
            "Dovecot 2.3",
            """\
dvadm signals the mail processes itself, as doveadm 2.3 does: a process is killed when all of its
users match. A process shared with a user who does not match is only killed with --force;
without it nothing is killed and a warning lists those users. A process that /proc does not show
as a Dovecot mail process right before the signal, pid 1, dvadm itself, its parent or its process
group are never signalled. Prints "kicked connections from the following users:" and the sorted
user list, or "no users kicked" (exit 68).""",
        ),
        (
            "Examples",
            """\
    dvadm kick --dry-run 'jan?'        show whom it would kick
    dvadm kick 'jan?'                  jane, jann, ... from everywhere
    dvadm kick foo 192.0.2.0/24        foo's connections from that network
    dvadm kick 192.0.2.7               everyone connected from 192.0.2.7
    dvadm kick -h 10.0.0.5             2.4: proxy connections to backend 10.0.0.5
    dvadm kick -f user_alias 'a1*'     2.4: by an alternative username""",
        ),
        ("Exit status", EXIT_CODES),
        ("See also", "dvadm(1), dvadm-who(1), doveadm-kick(1)"),
    ),
}


def sections_for(name: str, command: Any = None) -> Sections:
    """A command's manual sections: its own ``manual_sections``, else dvadm's built-in ones."""
    own = getattr(command, "manual_sections", None)
    return tuple(own) if own else BUILTIN.get(name, ())


def as_text(sections: Sections) -> str:
    """The sections for ``dvadm help``: headings in capitals, the text as written."""
    return "".join(f"\n{heading.upper()}\n{indent(text)}\n" for heading, text in sections)


def indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.splitlines())


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text)


def as_roff(text: str) -> str:
    """The markup of this module as man(7) roff."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip("\n")):
        lines = block.splitlines()
        if all(line.startswith("    ") for line in lines):
            out += [".PP", ".nf", *(_escape(line[4:]) for line in lines), ".fi"]
        elif lines[0].startswith("- "):
            for item in re.split(r"\n(?=- )", block):
                out += [".IP \\(bu 2", _escape(" ".join(line.strip() for line in item[2:].splitlines()))]
        else:
            out += [".PP", _escape(" ".join(line.strip() for line in lines))]
    return "\n".join(out)


def global_options_parser() -> argparse.ArgumentParser:
    """dvadm's global options as an argparse parser (getopt parses them; this one describes them)."""
    from .globalopts import USAGE

    usage = USAGE.split(":", 1)[-1].strip().removeprefix("dvadm ")
    parser = argparse.ArgumentParser(prog="dvadm", usage=usage, add_help=False)
    for flags, metavar, help_ in GLOBAL_OPTIONS:
        if metavar:
            parser.add_argument(*flags, metavar=metavar, help=help_)
        else:
            parser.add_argument(*flags, action="store_true", help=help_)
    return parser


def global_options_help() -> str:
    """The global options for ``dvadm help``."""
    lines = ["global options (before the command word only, as doveadm):"]
    for flags, metavar, help_ in GLOBAL_OPTIONS:
        spec = ", ".join(flags) + (f" {metavar}" if metavar else "")
        lines.append(f"  {spec:<15} {help_}")
    return "\n".join(lines) + "\n"


def manpage(parser: argparse.ArgumentParser, title: str, summary: str, sections: Sections) -> str:
    """One page in roff: NAME, SYNOPSIS and OPTIONS from the parser, then the sections."""
    from argparse_manpage.manpage import Manpage

    from . import __version__

    parser.prog = title
    page = Manpage(
        parser,
        _data={"date": MAN_DATE, "project_name": "dvadm", "version": __version__, "manual_title": "dvadm"},
    )
    page.description = summary
    parser.description = None
    for heading, text in sections:
        page.add_section(heading, ">", as_roff(text))
    return str(page)


def page_file(name: str) -> str:
    """The page of command ``name`` ("" for dvadm itself): ``dvadm-user-count.1``."""
    name = name.partition("=")[0]
    return f"dvadm-{name.replace(' ', '-')}.1" if name else "dvadm.1"


def page(app: Any, name: str) -> str:
    """The roff page of command ``name``, or of dvadm itself for ""."""
    if not name:
        summary = "a doveadm-compatible Dovecot administration tool"
        return manpage(global_options_parser(), "dvadm", summary, BUILTIN[""])
    return command_page(app, name)


def command_page(app: Any, name: str) -> str:
    """``name`` is an installed command, or ``NAME=module:Class`` for one not installed (a plugin
    in its source tree)."""
    if "=" in name:
        from importlib import import_module

        name, _, spec = name.partition("=")
        module, _, attr = spec.partition(":")
        factory = getattr(import_module(module), attr)
    else:
        factory = app.command_manager.load(name)
    command = factory(app, app.options, cmd_name=name)
    parser = command.get_parser(f"dvadm {name}")
    summary = (factory.__doc__ or "").strip().split("\n", 1)[0].rstrip(".")
    return manpage(parser, f"dvadm-{name.replace(' ', '-')}", summary, sections_for(name, factory))


def write_pages(directory: str, names: Sequence[str] = ("", "who", "kick")) -> list[str]:
    """Write the pages of dvadm ("") and the named commands into ``directory``; returns the paths."""
    from .app import DvadmApp

    os.environ["COLUMNS"] = "80"  # argparse wraps help by the terminal's width
    app = DvadmApp()
    written = []
    for name in names:
        path = os.path.join(directory, page_file(name))
        with open(path, "w", encoding="utf-8") as f:
            f.write(page(app, name))
        written.append(path)
    return written


if __name__ == "__main__":  # python -m doveadm_py.manual DIR [COMMAND ...]: (re)write the pages
    import sys

    for written in write_pages(sys.argv[1], *[sys.argv[2:]] if sys.argv[2:] else []):
        print(written)
