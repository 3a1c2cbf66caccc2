"""``dvadm help [COMMAND]``: the command list with providers and broken plugins marked.

Help is the one place that imports every command (for descriptions) and reads which
distribution ships each entry point; ordinary runs do neither.
"""

from __future__ import annotations

import argparse
import inspect

from .command import APP_DISTRIBUTION, DvadmCommand, provider_note
from .globalopts import USAGE
from .loader import BrokenPluginError, UnknownCommandError, command_providers
from .manual import as_text, global_options_help, sections_for


class HelpCommand(DvadmCommand):
    """Show the commands, or one command's help."""

    usage = "[<command>]"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("command", nargs="*", help="command to describe")

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        manager = self.app.command_manager
        out = self.app.stdout
        if parsed_args.command:
            factory, name, _rest = manager.find_command(parsed_args.command)
            if _rest:
                raise UnknownCommandError(f"unknown command '{' '.join(parsed_args.command)}'")
            cmd = self.app.make_command(factory, name)
            parser = cmd.get_parser(f"dvadm {name}")
            out.write(parser.format_help())
            out.write(as_text(sections_for(name, factory)))
            note = provider_note(cmd)
            out.write(f"\n{note}\n" if note else "")
            return 0
        providers = command_providers()
        out.write(f"{USAGE}\n\n{global_options_help()}\ncommands:\n")
        for name in manager.names():
            out.write(self._describe(name, providers) + "\n")
        return 0

    def _describe(self, name: str, providers: dict[tuple[str, str], str]) -> str:
        manager = self.app.command_manager
        ep = manager.commands[name]
        dist = providers.get((getattr(ep, "name", ""), getattr(ep, "value", "")))
        note = f" [from {dist}]" if dist and dist != APP_DISTRIBUTION else ""
        if name in manager.duplicates:
            return f"  {name:<14} CONFLICT: declared more than once: {manager.conflict(name)}"
        try:
            factory = manager.load(name)
        except BrokenPluginError as err:
            return f"  {name:<14} BROKEN: {err.message}"
        usage = getattr(factory, "usage", "")
        doc = (inspect.getdoc(factory) or "").split("\n", 1)[0]
        line = f"  {name:<14} {doc}{note}"
        return f"{line}\n  {'':<14} dvadm {name} {usage}" if usage else line
