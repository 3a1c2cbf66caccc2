"""doveadm's global options, parsed with doveadm's rules (getopt ``+Df:hvc:i:ko:OL``).

cliff's own parser takes options anywhere in argv, so ``dvadm who -f field`` would lose
``-f`` to the global formatter option (notes, pitfall 2). doveadm stops at the first
non-option word: everything after the command word belongs to the command. POSIX
``getopt.getopt`` does exactly that, including clustered (``-Dv``) and attached
(``-fjson``) forms and ``--``.
"""

from __future__ import annotations

import getopt

from .errors import UsageError

SHORT_OPTIONS = "Df:hvc:i:ko:OL"
LONG_OPTIONS = ("help", "version")

USAGE = (
    "usage: dvadm [-DhkLOv] [-c <config file>] [-i <instance>] [-o <key>=<value>] "
    "[-f <formatter>] <command> [<args>]"
)


class GlobalOptions:
    """What the global options asked for; shared by every command through ``app.options``.

    A plain slots class rather than a dataclass: importing dataclasses and building one
    costs about a millisecond of every run's start-up.
    """

    __slots__ = (
        "config_file",
        "debug",
        "formatter",
        "help",
        "hide_titles",
        "instance",
        "keep_environment",
        "log_directly",
        "no_config",
        "overrides",
        "verbose",
        "version",
    )

    def __init__(self) -> None:
        self.debug = False
        self.verbose = False
        self.formatter: str | None = None
        self.hide_titles = False
        self.config_file: str | None = None
        self.instance: str | None = None
        self.keep_environment = False
        self.log_directly = False
        self.no_config = False
        self.overrides: dict[str, str] = {}
        self.help = False
        self.version = False

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"GlobalOptions({fields})"


def parse_global_options(argv: list[str]) -> tuple[GlobalOptions, list[str]]:
    """Split argv into global options and the command line that follows them.

    Raises :class:`UsageError` (exit 64) for an unknown option, a missing value or
    an ``-o`` without ``=``.
    """
    try:
        pairs, rest = getopt.getopt(argv, SHORT_OPTIONS, LONG_OPTIONS)
    except getopt.GetoptError as err:
        raise UsageError(f"{_describe(err)}; see 'dvadm --help'") from None
    opts = GlobalOptions()
    for name, value in pairs:
        if name == "-D":
            opts.debug = opts.verbose = True
        elif name == "-v":
            opts.verbose = True
        elif name == "-f":
            opts.formatter = value
        elif name == "-h":
            opts.hide_titles = True
        elif name == "-c":
            opts.config_file = value
        elif name == "-i":
            opts.instance = value
        elif name == "-k":
            opts.keep_environment = True
        elif name == "-L":
            opts.log_directly = True
        elif name == "-O":
            opts.no_config = True
        elif name == "-o":
            key, sep, val = value.partition("=")
            if not sep or not key:
                raise UsageError(f"global option -o needs key=value, got '{value}'")
            opts.overrides[key] = val
        elif name == "--help":
            opts.help = True
        elif name == "--version":
            opts.version = True
    return opts, rest


def _describe(err: getopt.GetoptError) -> str:
    if err.opt and "requires argument" in err.msg:
        dashes = "--" if len(err.opt) > 1 else "-"
        return f"global option {dashes}{err.opt} needs a value"
    if err.opt:
        dashes = "--" if len(err.opt) > 1 else "-"
        return f"unknown global option {dashes}{err.opt}"
    return f"bad global options: {err.msg}"
