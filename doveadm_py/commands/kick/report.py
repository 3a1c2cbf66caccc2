"""What a kick did, as data, and how ``dvadm kick`` prints it.

:mod:`doveadm_py.commands.kick.v1` and :mod:`doveadm_py.commands.kick.v2` return a :class:`KickReport`
instead of writing; the command prints it with :func:`print_report` and the audit trail
records it, so other front ends (the doveadm HTTP API) can use the same kick logic.

Printing follows the server generation's doveadm with one deliberate difference: with a
machine formatter (anything but ``table``, ``pager`` and ``formatted``: ``json``, ``tab``,
``flow``, plugins) stdout carries only that format, the rows of what was kicked. doveadm
2.3 appends its texts to the JSON, and in the warning case lists the users *not* kicked
as results; dvadm writes those texts to stderr and lists no results then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...output import Header

if TYPE_CHECKING:
    from ...command import DvadmCommand

KICKED = "kicked"  # v1: users listed; v2: a count
NONE = "none"  # v1: nothing kicked (exit 68)
WARNING = "warning"  # v1: shared processes without --force, nothing kicked
DRY_RUN = "dry-run"

HUMAN_FORMATTERS = frozenset({"table", "pager", "formatted"})
RESULT = (Header("result", "result"),)
COUNT = (Header("count", "count"),)
KICKED_TEXT = "kicked connections from the following users:"
WARNING_TEXT = "warning: other connections would also be kicked from following users:"
FORCE_TEXT = "Use the '--force' option to enforce the disconnect."
NONE_TEXT = "no users kicked"


@dataclass
class KickReport:
    """The result of one kick (or dry run) on one server."""

    generation: int  # 1 = Dovecot 2.3 (signals), 2 = 2.4 (anvil kicks)
    status: str  # KICKED, NONE, WARNING or DRY_RUN
    users: list[str] = field(default_factory=list)  # v1: kicked, or (WARNING) the others
    count: int | None = None  # v2: connections kicked
    sessions: list[Any] = field(default_factory=list)  # DRY_RUN: what the kick would touch
    alt_fields: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)  # warnings and errors, one line each
    exit_code: int = 0

    def summary(self) -> str:
        """One line for the audit trail."""
        if self.status == WARNING:
            return f"nothing kicked: other users share the processes: {' '.join(self.users)}"
        if self.status == NONE:
            return "no users kicked"
        if self.status == DRY_RUN:
            return f"dry run: {len(self.sessions)} session(s) would be kicked"
        if self.generation == 1:
            return f"kicked {' '.join(self.users)}"
        return f"{self.count or 0} connections kicked"


def print_report(cmd: DvadmCommand, report: KickReport) -> int:
    """Write ``report`` as doveadm would (see the module doc); returns its exit code."""
    err = cmd.app.stderr
    for note in report.notes:
        err.write(note + "\n")
    human = (cmd.options.formatter or cmd.default_formatter) in HUMAN_FORMATTERS
    if report.status == DRY_RUN:
        from ...sessionview import separate_headers, separate_rows

        g = report.generation
        headers = separate_headers(g, report.alt_fields)
        rows = separate_rows(g, report.sessions, len(report.alt_fields))
        cmd.emit(headers, rows, formatter="table", generation=g)
        return report.exit_code
    if report.generation == 2:
        cmd.emit(COUNT, [(str(report.count or 0),)], format="%{count} connections kicked\n", generation=2)
        return report.exit_code
    out = cmd.app.stdout
    if report.status == WARNING:
        if human:
            out.write(WARNING_TEXT + "\n")
            emit_names(cmd, report.users)
            out.write("\n" + FORCE_TEXT + "\n")
        else:
            emit_names(cmd, [])
            err.write(f"{WARNING_TEXT} {' '.join(report.users)}\n{FORCE_TEXT}\n")
    elif report.status == NONE:
        if human:
            out.write(NONE_TEXT + "\n")
        else:
            emit_names(cmd, [])
            err.write(NONE_TEXT + "\n")
    else:
        if human:
            out.write(KICKED_TEXT + "\n")
        emit_names(cmd, report.users)
        if human:
            out.write("\n")
    return report.exit_code


def emit_names(cmd: DvadmCommand, names: Sequence[str]) -> None:
    cmd.emit(RESULT, [(n,) for n in names], format="%{result} ", generation=1)
