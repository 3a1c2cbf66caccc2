"""The base class of every dvadm command, dvadm's own and third parties' (public API).

It is a plain cliff ``Command`` (``Lister``/``ShowOne`` reserve ``-f`` and ``-c``, which
doveadm commands need; notes, pitfall 3) with what doveadm commands share: an argument
parser that fails with exit 64 instead of argparse's exit 2, no ``-h`` help flag (``kick
-h`` is dest-host), the anvil client for the configured base_dir, and output through the
formatter chosen by the global ``-f`` or the command's default.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TextIO, cast

from cliff.command import Command

from .errors import EX_TEMPFAIL, UsageError

if TYPE_CHECKING:
    from .anvil import AnvilClient
    from .app import DvadmApp
    from .globalopts import GlobalOptions
    from .masks import ReadingsError
    from .output import Header
    from .settings import Settings
    from .transport.fleet import Answer, ServerFailure
    from .transport.http import HttpTransport
    from .transport.local import LocalTransport


class HelpRequested(Exception):
    """``CMD --help`` printed its help; the command must not run (exit 0)."""


class CommandArgumentParser(argparse.ArgumentParser):
    """argparse with doveadm's failure mode: one line naming the problem, exit 64."""

    dvadm_command: DvadmCommand  # the command whose parser this is (set by its get_parser)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("add_help", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # -h is dest-host (kick) or nothing (who), never help, as in doveadm: say where help is.
        hint = "help is --help (-h is not help here)" if re.search(r"(^|[ /])-h\b", message) else None
        raise UsageError(f"{self.prog}: {message}", hint=hint)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            raise UsageError(message.strip())
        raise HelpRequested()


class _HelpAction(argparse.Action):
    """``--help`` that names the providing distribution, looked up only when asked."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        command = parser.dvadm_command  # type: ignore[attr-defined]  # argparse passes the parser as its base class
        add_epilog(parser, provider_note(command))
        parser.print_help(command.app.stdout)
        raise HelpRequested()


def permute(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Split argv as GNU getopt_long does: (option words, positionals), each in order.

    A word starting with ``-`` is an option (with its value, attached or the next word); the
    first ``--`` ends the options. A value that looks like an option is attached
    (``-a-x``, ``--socket-path=-x``) so that argparse takes it as getopt does.
    """
    takes_value = {name: action.nargs != 0 for name, action in parser._option_string_actions.items()}
    options: list[str] = []
    positionals: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            positionals.extend(words)
            break
        if len(word) < 2 or word[0] != "-":
            positionals.append(word)
            continue
        if word.startswith("--"):
            needs_value = "=" not in word and takes_value.get(word, False)
        else:  # a cluster of short options: the first that takes a value ends it
            needs_value = False
            for index in range(1, len(word)):
                if takes_value.get(f"-{word[index]}"):
                    needs_value = index == len(word) - 1
                    break
        value = next(words, None) if needs_value else None
        if value is None:
            options.append(word)
        elif value == "--":  # argparse drops a '--' value; getopt would take it
            raise UsageError(f"{parser.prog}: '--' given as the value of {word}")
        elif value.startswith("-"):
            options.append(f"{word}={value}" if word.startswith("--") else word + value)
        else:
            options.extend((word, value))
    return options, positionals


#: The distribution of dvadm's own commands; help names any other provider.
APP_DISTRIBUTION = "dvadm"


def provider_note(command: Any) -> str:
    """The "provided by" line for a third-party command's help ('' for dvadm's own)."""
    dist = command.app.command_manager.provider(command.cmd_name)
    if dist and dist != APP_DISTRIBUTION:
        return f"This command is provided by the {dist} distribution."
    return ""


def add_epilog(parser: argparse.ArgumentParser, note: str) -> None:
    if note:
        parser.epilog = f"{parser.epilog}\n\n{note}" if parser.epilog else note


class DvadmCommand(Command):
    """Base class for dvadm commands.

    Subclasses set :attr:`default_formatter`, override :meth:`add_arguments` and
    :meth:`take_action`, and write results with :meth:`emit`. ``take_action`` returns
    the exit code (``None`` means 0) or raises :class:`doveadm_py.errors.DoveadmError`.
    """

    app: DvadmApp
    default_formatter: ClassVar[str] = "table"
    #: True for commands that change the server (kick): their output is held until they have
    #: finished, so a stdout that fails is reported as "done, report lost" (exit 74).
    changes_state: ClassVar[bool] = False
    #: doveadm-style usage of the command's arguments, shown by help and usage errors.
    usage: ClassVar[str] = ""

    def get_epilog(self) -> str:
        # cliff's default scans every installed distribution on each run (pitfall 4).
        return self._epilog or ""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = CommandArgumentParser(
            prog=prog_name,
            description=self.get_description(),
            epilog=self.get_epilog() or None,
            usage=f"{prog_name} {self.usage}" if self.usage else None,
        )
        parser.dvadm_command = self
        parser.add_argument(
            "--help", action=_HelpAction, nargs=0, default=argparse.SUPPRESS, help="this help"
        )
        self.add_arguments(parser)
        for hook in self._hooks:
            if hook.obj is not None:
                hook.obj.get_parser(parser)
        return parser

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's options and positionals (override)."""

    def parse_arguments(self, parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
        """doveadm's getopt_long: options may follow positionals, ``--`` ends the options.

        argparse's own intermixed parsing rejects ``kick -- -bob``, so the words are sorted
        here as getopt permutes them, and argparse gets options, ``--``, positionals.
        """
        options, positionals = permute(parser, argv)
        if not positionals:
            return parser.parse_args(options)
        if all(action.option_strings for action in parser._actions):  # takes no positionals
            parser.error(f"unrecognized arguments: {' '.join(positionals)}")
        return parser.parse_args([*options, "--", *positionals])

    def run(self, parsed_args: argparse.Namespace) -> Any:
        # A command that never asks for remote_servers() must not quietly act locally on -S.
        self._servers_given = bool(getattr(parsed_args, "servers", None))
        return super().run(parsed_args)

    # -- shared services -------------------------------------------------------------

    def hint_formatter_as_field(self, field: str | None, alt_fields: Sequence[str]) -> None:
        """``who -f json``: after the command word -f is the passdb field (as in doveadm). When it
        is no alt-username field of the server but a formatter's name, say where -f FORMATTER goes
        (one stderr line; output and exit code stay doveadm's)."""
        if field is None or field in alt_fields:
            return
        from .loader import list_entry_points

        if field in {ep.name for ep in list_entry_points("dvadm.formatters")}:
            self.app.stderr.write(
                f"Hint: -f {field} after '{self.cmd_name}' names a passdb field, which this server does not "
                f"have; for {field} output put it before the command: dvadm -f {field} {self.cmd_name} ...\n"
            )

    @property
    def options(self) -> GlobalOptions:
        """The global options (:class:`doveadm_py.globalopts.GlobalOptions`)."""
        return self.app.options

    @property
    def settings(self) -> Settings:
        """Shared Dovecot settings (:class:`doveadm_py.settings.Settings`)."""
        return self.app.settings

    def anvil(self, socket_path: str | None = None, **kwargs: Any) -> AnvilClient:
        """An anvil client for ``-a socket_path`` or ``<base_dir>/anvil``; ``-D`` logs its lines.

        Timeouts come from ``-o dvadm_anvil_timeout=SECS`` (default 10),
        ``-o dvadm_kick_timeout=SECS`` (default 30) and ``-o dvadm_anvil_deadline=SECS``
        (default 60).
        """
        from .anvil import AnvilClient
        from .settings import ANVIL_DEADLINE, ANVIL_TIMEOUT, KICK_TIMEOUT

        if getattr(self, "_servers_given", False):
            raise UsageError(
                f"'{self.cmd_name}' does not support -S (remote servers): it reads the local anvil"
            )

        settings = self.settings
        path = socket_path or settings.anvil_path
        timeout = settings.seconds(ANVIL_TIMEOUT, 10.0)
        kwargs.setdefault("timeout", timeout)
        kwargs.setdefault("connect_timeout", min(timeout, 5.0))
        kwargs.setdefault("kick_timeout", settings.seconds(KICK_TIMEOUT, 30.0))
        kwargs.setdefault("deadline", settings.seconds(ANVIL_DEADLINE, 60.0))
        return AnvilClient(path, debug=self.app.debug_log if self.options.debug else None, **kwargs)

    def local_transport(self, socket_path: str | None = None) -> LocalTransport:
        """The local anvil as a transport (:mod:`doveadm_py.transport`): ``-a`` or ``<base_dir>/anvil``."""
        from .transport.local import LocalTransport

        return LocalTransport(self.anvil(socket_path))

    def local_generation(self, socket_path: str | None = None) -> int:
        """The local anvil's protocol generation, made certain without reading a session (2.3: one
        PENALTY-DUMP); 1 when anvil cannot be reached. For words that differ by generation."""
        from .anvil import AnvilError

        try:
            with self.local_transport(socket_path) as anvil:
                return anvil.client.confirm_protocol()
        except AnvilError:
            return 1

    def remote_servers(self, parsed_args: argparse.Namespace) -> list[HttpTransport | ServerFailure] | None:
        """Transports for the ``-S`` targets (see :mod:`doveadm_py.transport.fleet`), or None for
        the local anvil. Each is an ``HttpTransport`` or a ``ServerFailure`` (e.g. its secret file
        is unsafe) to report with the other failures. ``-a`` with ``-S`` is a usage error."""
        targets = getattr(parsed_args, "servers", None)
        if not targets:
            return None
        if getattr(parsed_args, "socket_path", None):
            raise UsageError("-a (a local anvil socket) and -S (remote servers) cannot be used together")
        from .transport.fleet import connect

        debug = self.app.debug_log if self.options.debug else None
        return connect(targets, self.options.overrides, self.settings.seconds, debug)

    def ask_servers(
        self, targets: Sequence[HttpTransport | ServerFailure], ask: Callable[[HttpTransport], object]
    ) -> list[Answer | ServerFailure]:
        """``ask(transport)`` on every server at once: ``Answer`` or ``ServerFailure`` each, in order."""
        from .transport.fleet import DEFAULT_PARALLEL, PARALLEL, ask_all

        parallel = int(self.settings.seconds(PARALLEL, DEFAULT_PARALLEL))
        return ask_all(targets, ask, parallel)

    def report_readings(self, targets: Sequence[HttpTransport | ServerFailure], error: ReadingsError) -> int:
        """Masks wrong to both generations (worded apart by 2.3 and 2.4), with ``-S``: each server's
        error in its own doveadm's words, one line each. Only the servers' generations are asked:
        nothing is read or kicked. Exit 64, as the command line is wrong whatever the servers say."""
        from .errors import EX_USAGE
        from .transport.fleet import Answer

        answers = self.ask_servers(targets, lambda server: server.protocol)
        for answer in answers:
            if isinstance(answer, Answer):
                message = f"{answer.name}: {error.for_protocol(answer.value, self.cmd_name or '').message}"
            else:
                message = answer.message
            self.app.stderr.write(f"Error: {message}\n")
        return EX_USAGE

    def emit_merged(
        self,
        parts: Sequence[tuple[str, Sequence[Header], Iterable[Sequence[str]], int]],
        formatter: str | None = None,
    ) -> None:
        """Each server's (name, headers, rows, generation) as one result with a leading ``server`` column
        (``formatter``: as :meth:`emit`'s)."""
        from .transport.fleet import merge

        if parts:
            headers, rows, generation = merge(parts)
            self.emit(headers, rows, formatter=formatter, generation=generation)

    def report_failures(self, answers: Sequence[Answer | ServerFailure]) -> int:
        """One ``Error:`` line per failed server on stderr; 75 if any failed, else 0."""
        from .transport.fleet import ServerFailure

        failed = [a for a in answers if isinstance(a, ServerFailure)]
        for failure in failed:
            self.app.stderr.write(f"Error: {failure.message}\n")
        return EX_TEMPFAIL if failed else 0

    def emit(
        self,
        headers: Sequence[Header],
        rows: Iterable[Sequence[str]],
        *,
        formatter: str | None = None,
        format: str | None = None,
        generation: int = 2,
    ) -> None:
        """Write a result through the global ``-f`` formatter, else ``formatter``, else the default."""
        from .output import load_formatter

        name = self.options.formatter or formatter or self.default_formatter
        cls = load_formatter(name)
        stdout = cast("TextIO", self.app.stdout)  # Output: a TextIO whose write failures are OutputError
        out = cls(stdout, hide_titles=self.options.hide_titles, generation=generation, format=format)
        out.write(headers, rows)
