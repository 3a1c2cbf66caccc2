"""Lazy command discovery: entry points are listed, and only the chosen one is imported.

cliff's stock CommandManager builds a stevedore ExtensionManager, which imports every
command module on every run, so one slow or broken plugin would slow or break every
command (notes, pitfalls 1 and 8). Here the ``dvadm.commands`` group is read from
stevedore's entry point cache (no import, no scan of installed packages) and a command
is loaded only when :meth:`LazyCommandManager.find_command` picks it. Names must match
exactly: no unique-prefix guessing for a tool that kicks users (pitfall 5).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any

from cliff.commandmanager import CommandManager

if TYPE_CHECKING:
    from cliff.command import Command

from .errors import EX_SOFTWARE, DoveadmError, UsageError

COMMAND_GROUP = "dvadm.commands"


class UnknownCommandError(UsageError):
    """No command has that name (exit 64, as doveadm)."""


class BrokenPluginError(DoveadmError):
    """A command's module failed to import (exit 70); every other command still works."""

    exit_code = EX_SOFTWARE


def list_entry_points(group: str) -> list[EntryPoint]:
    """The group's entry points from stevedore's cache, without importing any of them."""
    from stevedore import ExtensionManager

    return ExtensionManager.make_test_instance([], namespace=group).list_entry_points()


def command_providers(group: str = COMMAND_GROUP) -> dict[tuple[str, str], str]:
    """(entry point name, value) -> distribution name, from one scan of the group.

    stevedore's cache does not keep distributions, so this scans the group's entry points
    with importlib.metadata; only help and error paths call it, never a normal run.
    """
    from importlib.metadata import entry_points

    return {(ep.name, ep.value): ep.dist.name for ep in entry_points(group=group) if ep.dist is not None}


def distribution_of(entry_point: Any, group: str = COMMAND_GROUP) -> str | None:
    """Name of the distribution that declares an entry point (None if unknown)."""
    if getattr(entry_point, "dist", None) is not None:
        return str(entry_point.dist.name)
    key = (getattr(entry_point, "name", ""), getattr(entry_point, "value", ""))
    return command_providers(group).get(key)


class LazyCommandManager(CommandManager):
    """A cliff CommandManager that keeps entry points unloaded until one is run."""

    def __init__(self, namespace: str = COMMAND_GROUP) -> None:
        self.duplicates: dict[str, list[Any]] = {}
        super().__init__(namespace, convert_underscores=True)

    def load_commands(self, namespace: str) -> None:
        self.group_list.append(namespace)
        for ep in list_entry_points(namespace):
            name = ep.name.replace("_", " ")
            if name in self.commands:
                self.duplicates.setdefault(name, [self.commands[name]]).append(ep)
                continue
            self.commands[name] = ep

    def find_command(self, argv: list[str]) -> tuple[type[Command], str, list[str]]:
        """The longest exact command name at the start of argv, loaded; nothing else."""
        words = _leading_words(argv)
        for i in range(len(words), 0, -1):
            name = " ".join(words[:i])
            if name in self._legacy:
                name = self._legacy[name]
            if name in self.commands:
                self._refuse_conflict(name)
                return self.load(name), " ".join(argv[:i]), argv[i:]
        raise UnknownCommandError(f"unknown command '{argv[0]}'" if argv else "no command given")

    def load(self, name: str) -> type[Command]:
        """Import one command; a failure names the distribution that shipped it."""
        from cliff.command import Command

        ep = self.commands[name]
        try:
            factory = ep.load()
        except Exception as err:
            raise BrokenPluginError(self._broken_message(name, ep, err)) from err
        if not (isinstance(factory, type) and issubclass(factory, Command)):
            raise BrokenPluginError(
                self._broken_message(name, ep, TypeError(f"{ep.value} is not a cliff Command class"))
            )
        return factory

    def _refuse_conflict(self, name: str) -> None:
        """Two distributions declaring one command: which would run is an accident, so none does."""
        if name in self.duplicates:
            raise BrokenPluginError(f"command '{name}' is declared more than once: {self.conflict(name)}")

    def conflict(self, name: str) -> str:
        """Who declares a duplicated command, for errors and help."""
        group = self.namespace or COMMAND_GROUP
        eps = self.duplicates[name]
        return ", ".join(f"{getattr(ep, 'value', ep)} ({distribution_of(ep, group) or '?'})" for ep in eps)

    def _broken_message(self, name: str, ep: Any, err: BaseException) -> str:
        dist = distribution_of(ep, self.namespace or COMMAND_GROUP)
        where = f"plugin distribution {dist}" if dist else f"entry point {getattr(ep, 'value', ep)}"
        return f"command '{name}' from {where} failed to load: {type(err).__name__}: {err}"

    def names(self) -> list[str]:
        return sorted(self.commands)

    def provider(self, name: str) -> str | None:
        """The distribution that ships command ``name`` (help and errors only: scans metadata)."""
        ep = self.commands.get(name)
        return distribution_of(ep, self.namespace or COMMAND_GROUP) if ep is not None else None


def _leading_words(argv: Iterable[str]) -> list[str]:
    words = []
    for arg in argv:
        if arg.startswith("-"):
            break
        words.append(arg)
    return words
