"""Kicking on Dovecot 2.3 (anvil protocol 1): SIGTERM the mail processes, as doveadm 2.3.

The dump is grouped by pid. A pid is signalled when all of its users match (a user
matches when any of its lines in that pid passes the user and network filters). A pid
shared with a user that does not match is signalled only with ``--force``; without it
nothing at all is signalled and the other users are listed in a warning, as doveadm does.

Safer than doveadm: every pid goes through :func:`doveadm_py.procsafety.terminate`; a
dump cut short by EOF or with malformed lines, a TCP anvil address (remote dump, local
pids) and options that need 2.4 data are refused before anything is signalled.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import EX_NOTFOUND, TempFailError, UsageError
from .masks import Filter
from .output import Header
from .sessionview import separate_headers, separate_rows

if TYPE_CHECKING:
    from .anvil import AnvilClient, ConnectDump
    from .command import DvadmCommand

NEEDS_24 = "this server speaks anvil protocol 1 (Dovecot 2.3), which does not track {what}"
RESULT = (Header("result", "result"),)


@dataclass
class PidUsers:
    """One process in the dump: its users in first-seen order and those that matched."""

    pid: int
    users: dict[str, None] = field(default_factory=dict)
    matched: set[str] = field(default_factory=set)

    @property
    def all_matched(self) -> bool:
        return len(self.matched) == len(self.users)


def group_by_pid(sessions: Iterable[Any], filter_: Filter) -> dict[int, PidUsers]:
    pids: dict[int, PidUsers] = {}
    for s in sessions:
        entry = pids.get(s.pid)
        if entry is None:
            entry = pids[s.pid] = PidUsers(s.pid)
        entry.users[s.username] = None
        if filter_.match(s.username, s.ip):
            entry.matched.add(s.username)
    return pids


def kick_v1(
    cmd: DvadmCommand,
    client: AnvilClient,
    dump: ConnectDump,
    invalid: list[bytes],
    filter_: Filter,
    args: argparse.Namespace,
) -> int:
    """Kick on a server whose dump proved protocol 1; ``invalid`` collects its malformed lines."""
    if args.passdb_field is not None:
        what = "alternative usernames (-f passdb_field); on 2.3, doveadm kick -f meant --force"
        raise UsageError(NEEDS_24.format(what=what))
    if args.dest_host is not None:
        raise UsageError(NEEDS_24.format(what="proxy destinations (-h dest_host)"))
    if "/" not in client.path:
        raise UsageError(
            f"refusing to kick through TCP anvil {client.path}: Dovecot 2.3 kicks by signalling "
            "local pids, and that dump lists another host's processes"
        )
    sessions = list(dump)
    if not dump.complete:  # doveadm 2.3 takes EOF for the end; the lost tail may share a pid
        raise TempFailError(f"read({client.path}) failed: Unexpected EOF in CONNECT-DUMP, refusing to kick")
    if invalid:
        first = invalid[0].decode("utf-8", "backslashreplace")
        raise TempFailError(
            f"{client.path}: anvil sent {len(invalid)} malformed dump line(s), refusing to kick: {first}"
        )
    pids = group_by_pid(sessions, filter_)
    chosen = [p for p in pids.values() if p.matched and (p.all_matched or args.force)]
    partly = [p for p in pids.values() if p.matched and not p.all_matched]
    others = sorted_names(u for p in partly for u in p.users if u not in p.matched)
    out = cmd.app.stdout
    if others and not args.force:
        out.write("warning: other connections would also be kicked from following users:\n")
        emit_names(cmd, others)
        out.write("\nUse the '--force' option to enforce the disconnect.\n")
        return 0
    if args.dry_run:
        chosen_pids = {p.pid for p in chosen}
        rows = separate_rows(1, (s for s in sessions if s.pid in chosen_pids))
        cmd.emit(separate_headers(1), rows, formatter="table", generation=1)
        return 0
    kicked = signal_all(cmd, chosen)
    if not kicked:
        out.write("no users kicked\n")
        return EX_NOTFOUND
    out.write("kicked connections from the following users:\n")
    emit_names(cmd, kicked)
    out.write("\n")
    return 0


def signal_all(cmd: DvadmCommand, chosen: list[PidUsers]) -> list[str]:
    """SIGTERM each chosen pid that passes the safety checks; the users of those that went."""
    from .procsafety import Outcome, terminate

    kicked: list[str] = []
    err = cmd.app.stderr
    for entry in chosen:
        outcome, reason = terminate(entry.pid)
        users = " ".join(entry.users)
        if outcome in (Outcome.SIGNALLED, Outcome.GONE):
            kicked.extend(entry.users)
        elif outcome is Outcome.REFUSED:
            err.write(f"Warning: not signalling pid {entry.pid} (users: {users}): {reason}\n")
        else:
            err.write(f"Error: kill({entry.pid}, SIGTERM) failed: {reason}\n")
    return sorted_names(kicked)


def sorted_names(names: Iterable[str]) -> list[str]:
    """strcmp order without duplicates, as doveadm 2.3 lists users."""
    return sorted(set(names), key=lambda n: n.encode("utf-8", "surrogateescape"))


def emit_names(cmd: DvadmCommand, names: list[str]) -> None:
    cmd.emit(RESULT, [(n,) for n in names], format="%{result} ", generation=1)
