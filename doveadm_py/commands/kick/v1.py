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

from ...errors import EX_NOTFOUND, TempFailError, UsageError
from ...masks import Filter
from .report import DRY_RUN, KICKED, NONE, WARNING, KickReport

if TYPE_CHECKING:
    from ...anvil import AnvilClient, ConnectDump

NEEDS_24 = "this server speaks anvil protocol 1 (Dovecot 2.3), which does not track {what}"
PROXY_KICK = "; to disconnect proxied users on 2.3 use: dvadm proxy kick -h {host} (plugin dvadm-proxy)"
PROXY_KICK_WIDER = ", which kicks every proxy to that host: Dovecot 2.3 cannot also match users"


@dataclass
class PidUsers:
    """One process in the dump: its users in first-seen order, those that matched, its services."""

    pid: int
    users: dict[str, None] = field(default_factory=dict)
    matched: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)

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
        entry.services.add(s.service)
        if filter_.match(s.username, s.ip):
            entry.matched.add(s.username)
    return pids


def kick_v1(
    client: AnvilClient,
    dump: ConnectDump,
    invalid: list[bytes],
    filter_: Filter,
    args: argparse.Namespace,
) -> KickReport:
    """Kick on a server whose dump proved protocol 1; ``invalid`` collects its malformed lines."""
    if args.passdb_field is not None:
        what = "alternative usernames (-f passdb_field); on 2.3, doveadm kick -f meant --force"
        raise UsageError(NEEDS_24.format(what=what))
    if args.dest_host is not None:
        import shlex

        # The named command is wider when users were given too: say so rather than let it be pasted.
        hint = PROXY_KICK.format(host=shlex.quote(args.dest_host)) + (PROXY_KICK_WIDER if args.masks else "")
        raise UsageError(NEEDS_24.format(what="proxy destinations (-h dest_host)") + hint)
    if "/" not in client.path:
        raise UsageError(
            f"refusing to kick through TCP anvil {client.path}: Dovecot 2.3 kicks by signalling "
            "local pids, and that dump lists another host's processes"
        )
    sessions = list(dump)
    if not dump.complete:  # doveadm 2.3 takes EOF for the end; the lost tail may share a pid
        raise TempFailError(f"read({client.path}) failed: Unexpected EOF in CONNECT-DUMP, refusing to kick")
    if invalid:
        from ...anvil.records import excerpt

        first = excerpt(invalid[0])
        raise TempFailError(
            f"{client.path}: anvil sent {len(invalid)} malformed dump line(s), refusing to kick: {first}"
        )
    pids = group_by_pid(sessions, filter_)
    chosen = [p for p in pids.values() if p.matched and (p.all_matched or args.force)]
    partly = [p for p in pids.values() if p.matched and not p.all_matched]
    others = sorted_names(u for p in partly for u in p.users if u not in p.matched)
    if others and not args.force:
        return KickReport(1, WARNING, users=others)
    from ...procsafety import libexec_dirs

    libexec = libexec_dirs(client.path)
    report = KickReport(1, KICKED)
    kicked = signal_all(chosen, libexec, report.notes, dry_run=args.dry_run)
    if args.dry_run:
        report.status = DRY_RUN
        report.sessions = [s for s in sessions if s.pid in kicked]
    report.users = sorted_names(u for pid in kicked for u in pids[pid].users)
    if not kicked:
        if not args.dry_run:
            report.status = NONE
        report.exit_code = EX_NOTFOUND
    return report


def signal_all(
    chosen: list[PidUsers], libexec: tuple[str, ...], notes: list[str], *, dry_run: bool
) -> list[int]:
    """SIGTERM each chosen pid that passes the safety checks (only check them on a dry run);
    the pids counted as kicked. Why others were not goes to ``notes``."""
    from ...procsafety import Outcome, terminate

    kicked: list[int] = []
    for entry in chosen:
        outcome, reason = terminate(entry.pid, entry.services, libexec, dry_run=dry_run)
        users = " ".join(entry.users)
        if outcome in (Outcome.SIGNALLED, Outcome.GONE):
            kicked.append(entry.pid)
        elif outcome in (Outcome.REFUSED, Outcome.UNVERIFIED):
            notes.append(f"Warning: not signalling pid {entry.pid} (users: {users}): {reason}")
        else:
            notes.append(f"Error: kill({entry.pid}, SIGTERM) failed: {reason}")
    return kicked


def sorted_names(names: Iterable[str]) -> list[str]:
    """strcmp order without duplicates, as doveadm 2.3 lists users."""
    return sorted(set(names), key=lambda n: n.encode("utf-8", "surrogateescape"))
