"""The ``dvadm`` cliff application: doveadm's global options, lazy commands, one-line errors.

``App.run`` is replaced rather than extended: cliff parses global options anywhere in
argv, starts a cmd2 shell without arguments, guesses commands from prefixes and turns
errors into exit 1 (notes, pitfalls 2, 5, 6, 7). dvadm keeps cliff's command classes,
command manager and hooks, and follows doveadm for everything a user sees.
"""

from __future__ import annotations

import argparse
import gc
import sys
import traceback
from importlib.metadata import EntryPoint
from typing import Any, TextIO, cast

from cliff.app import App
from cliff.command import Command

from . import __version__
from .command import HelpRequested
from .errors import EX_SOFTWARE, EX_TEMPFAIL, EX_USAGE, DoveadmError, OutputError
from .globalopts import USAGE, GlobalOptions, parse_global_options
from .loader import COMMAND_GROUP, LazyCommandManager, UnknownCommandError
from .settings import Settings
from .streams import Diagnostics, Output, prepare_std_streams

DESCRIPTION = "dvadm: a doveadm-compatible Dovecot administration tool"


class DvadmApp(App):
    NAME = "dvadm"
    options: GlobalOptions  # type: ignore[assignment]  # cliff's App has an argparse Namespace here
    command_manager: LazyCommandManager

    def __init__(
        self,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        command_manager: LazyCommandManager | None = None,
    ) -> None:
        super().__init__(
            description=DESCRIPTION,
            version=__version__,
            command_manager=command_manager or LazyCommandManager(),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
        # cliff's help imports every command and its completion is not doveadm's; dvadm's
        # help is loaded like any command, only when it is run.
        self.command_manager.commands.pop("complete", None)
        help_ep = EntryPoint("help", "doveadm_py.helpcmd:HelpCommand", COMMAND_GROUP)
        self.command_manager.commands["help"] = help_ep
        complete_ep = EntryPoint("complete", "doveadm_py.completion:Complete", COMMAND_GROUP)
        self.command_manager.commands["complete"] = complete_ep
        self.options = GlobalOptions()
        self.settings = Settings(self.options)
        self.stdout: Output = Output(stdout or sys.stdout)  # the streams cliff's App has just set
        self.stderr: Diagnostics = Diagnostics(stderr or sys.stderr)
        self._acting: str | None = None  # a command that changes the server, once it has run

    def build_option_parser(
        self, description: str | None, version: str | None, argparse_kwargs: dict[str, Any] | None = None
    ) -> argparse.ArgumentParser:
        # Global options are parsed by globalopts (getopt '+' rules); this parser only
        # exists because cliff's App expects one.
        return argparse.ArgumentParser(prog=self.NAME, description=description, add_help=False)

    def run(self, argv: list[str]) -> int:
        """Run the command line; exit 74 when its output cannot be written (see :meth:`finish`)."""
        code = 0
        try:
            code = self._run(argv)
            self.stdout.release()
        except BrokenPipeError:
            return 141
        except OutputError as err:
            return self.output_failed(err, code)
        return code

    def output_failed(self, err: OutputError, code: int) -> int:
        """Say what was done when its report is lost: a kick that kicked is not a failed kick.

        Exit 74 when the command had succeeded; its own code when it had failed anyway.
        """
        if self._acting is not None:
            err = OutputError(
                f"{self._acting} has run (exit code {code}), but its report is lost: {err.message}"
            )
        if code:
            self.stderr.write(f"Error: {err.message}\n")
            return code
        return self.fail(err)

    def _run(self, argv: list[str]) -> int:
        try:
            self.options, rest = parse_global_options(argv)
        except DoveadmError as err:
            return self.fail(err)
        self.settings = Settings(self.options)
        try:
            self.settings.check()
        except DoveadmError as err:
            return self.fail(err)
        if self.options.version:
            self.stdout.write(f"{self.NAME} {__version__}\n")
            return 0
        if self.options.help or (self.options.hide_titles and not rest):
            rest = ["help", *rest]
        if not rest:
            self.stderr.write(self.usage_text())
            return EX_USAGE
        try:
            return self.run_subcommand(rest)
        except KeyboardInterrupt:
            return 130

    def run_subcommand(self, argv: list[str]) -> int:
        try:
            factory, name, sub_argv = self.command_manager.find_command(argv)
        except UnknownCommandError as err:
            hint = self.suggest(argv[0])
            self.stderr.write(f"Error: {err.message}{hint}\n{self.usage_text()}")
            return err.exit_code
        except DoveadmError as err:
            return self.fail(err)
        cmd = self.make_command(factory, name)
        if getattr(cmd, "changes_state", False):
            self.stdout.hold()  # its report is written once it has finished (see output_failed)
        parsed = None
        try:
            if self.options.formatter:
                from .output import load_formatter

                load_formatter(self.options.formatter)  # fail before anything is done
            parser = cmd.get_parser(f"{self.NAME} {name}")
            parse = getattr(cmd, "parse_arguments", None)
            parsed = parse(parser, sub_argv) if parse else parser.parse_args(sub_argv)
            if getattr(cmd, "changes_state", False):
                self._acting = f"'{name}'"
            result = cmd.run(parsed)
        except HelpRequested:
            return 0
        except DoveadmError as err:
            refused = getattr(cmd, "refused_before_run", None)
            if parsed is None and refused is not None:  # e.g. the kick's audit line
                refused(sub_argv, err)
            return self.fail(err)
        except SystemExit as exc:  # a plain cliff command's argparse
            code = exc.code if isinstance(exc.code, int) else 0
            return EX_USAGE if code == 2 else code
        except (BrokenPipeError, KeyboardInterrupt):
            raise
        except Exception as err:
            if self.options.debug:
                traceback.print_exc(file=self.stderr)
            self.stderr.write(f"Fatal: internal error in '{name}': {type(err).__name__}: {err}\n")
            return EX_SOFTWARE
        return int(result or 0)

    def make_command(self, factory: type[Command], name: str) -> Command:
        """An instance of a command class, given dvadm's global options as cliff's ``app_args``.

        cliff types ``app_args`` as the Namespace its own parser would give; dvadm's parsed global
        options are a :class:`GlobalOptions`, read by attribute just the same.
        """
        return factory(self, cast("argparse.Namespace", self.options), cmd_name=name)

    def fail(self, err: DoveadmError) -> int:
        """Report a failure as doveadm does: one line on stderr, the traceback only with -D."""
        if self.options.debug and err.__traceback__ is not None:
            traceback.print_exception(err, file=self.stderr)
        prefix = err.prefix or ("Fatal" if err.exit_code == EX_TEMPFAIL else "Error")
        self.stderr.write(f"{prefix}: {err.message}\n")
        if err.hint:
            self.stderr.write(f"Hint: {err.hint}\n")
        self.stderr.flush()
        return err.exit_code

    def debug_log(self, line: str) -> None:
        """Sink for ``-D`` debug lines (anvil traffic and the like)."""
        self.stderr.write(f"Debug: {line}\n")

    def suggest(self, word: str) -> str:
        """Names the user may have meant; shown, never run (no prefix matching)."""
        close = [name for name in self.command_manager.names() if name.startswith(word)]
        return f" (did you mean: {', '.join(close)}?)" if close and word else ""

    def usage_text(self) -> str:
        names = ", ".join(self.command_manager.names())
        return f"{USAGE}\ncommands: {names}\nSee 'dvadm help' for details.\n"


def main(argv: list[str] | None = None) -> int:
    """Run dvadm in this process (tests, embedding); returns the exit code."""
    prepare_std_streams()
    return DvadmApp().run(sys.argv[1:] if argv is None else argv)


def console_main() -> int:
    """The ``dvadm`` console script: :func:`main` without the cyclic garbage collector.

    dvadm is short-lived and makes little cyclic garbage, but the collector rescans every
    container it holds: 30-35% of an aggregated ``who`` over a million sessions. Freezing
    before exit spares the final collection at interpreter shutdown too (~8 ms of start-up).
    """
    gc.disable()
    try:
        return main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    sys.exit(console_main())
