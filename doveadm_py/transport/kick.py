"""``kick -S``: each server's own kick through its doveadm HTTP API, with dvadm's promises kept.

Every server's session list is read first. On Dovecot 2.3 the API's kick always forces
(it kills a process that also serves users who do not match), so dvadm refuses a server
where a matching pid serves a non-matching session, unless ``--force``, exactly as its
local 2.3 kick does; nothing is sent to a server where nothing matches. ``--dry-run``
shows, per server, the sessions the kick would reach (2.3: every session of the processes
it would signal) and kicks nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..errors import EX_NOTFOUND, EX_TEMPFAIL
from ..kick_v1 import NEEDS_24, group_by_pid, sorted_names
from ..kick_v2 import dest_matches, exact_matches
from ..masks import Filter
from ..output import Header
from ..sessionview import select_sessions, separate_headers, separate_rows
from .http import HttpTransport, RemoteError

HEADERS = (
    Header("server", "server"),
    Header("connections", "connections", right=True),
    Header("users", "users", expand=True),
)


class ServerKick(NamedTuple):
    """One server's kick: what it kicked, or the sessions it would (dry run), or why it refused."""

    protocol: int
    alt_fields: tuple[str, ...] = ()
    connections: int = 0
    users: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    targets: tuple[Any, ...] = ()


def kick_server(
    server: HttpTransport, filter_: Filter, dest_host: str | None, args: argparse.Namespace
) -> ServerKick:
    """Plan from the server's session list, then (unless dry run or refused) its own kick."""
    dump = server.sessions()
    sessions = list(dump)
    if dump.protocol == 1:
        return _kick_v1(server, sessions, filter_, dest_host, args)
    field = args.passdb_field
    fast = dest_host is None and filter_.network is None and not filter_.has_wildcards
    if field is not None and field not in dump.alt_fields:
        targets: list[Any] = []
    elif fast:
        targets = list(exact_matches(sessions, filter_, dump.alt_fields, field))
    else:
        alt_index = None if field is None else dump.alt_fields.index(field)
        targets = [s for s in select_sessions(sessions, filter_, alt_index) if dest_matches(s, dest_host)]
    users = tuple(dict.fromkeys(s.username for s in targets))
    if args.dry_run:
        return ServerKick(2, dump.alt_fields, targets=tuple(targets))
    outcome = server.kick(args.masks, dest_host, field)
    return ServerKick(2, dump.alt_fields, outcome.count, users)


def _kick_v1(
    server: HttpTransport,
    sessions: list[Any],
    filter_: Filter,
    dest_host: str | None,
    args: argparse.Namespace,
) -> ServerKick:
    if args.passdb_field is not None:
        raise RemoteError(f"{server.name}: {NEEDS_24.format(what='alternative usernames (-f passdb_field)')}")
    if dest_host is not None:
        raise RemoteError(f"{server.name}: {NEEDS_24.format(what='proxy destinations (-h dest_host)')}")
    pids = group_by_pid(sessions, filter_)
    chosen = {p.pid for p in pids.values() if p.matched and (p.all_matched or args.force)}
    partly = [p for p in pids.values() if p.matched and not p.all_matched]
    others = sorted_names(u for p in partly for u in p.users if u not in p.matched)
    if others and not args.force:
        return ServerKick(1, refused=tuple(others))
    targets = tuple(s for s in sessions if s.pid in chosen)
    if args.dry_run:
        return ServerKick(1, targets=targets)
    if not chosen:
        return ServerKick(1)
    outcome = server.kick(args.masks, None, None)
    kicked = set(outcome.users)
    connections = sum(s.refcount for s in targets if s.username in kicked)
    return ServerKick(1, connections=connections, users=tuple(sorted_names(kicked)))


def fleet_kick(cmd: Any, servers: Sequence[Any], filter_: Filter, dest_host: str | None, args: Any) -> int:
    """Kick on every server at once; one row per server and a total, or the dry run's sessions.

    Exit: 75 if a server failed; else 68 when nothing was kicked and every server is a 2.3
    (as the local 2.3 kick); else 0.
    """
    from .fleet import Answer

    answers = cmd.ask_servers(servers, lambda server: kick_server(server, filter_, dest_host, args))
    done = [(a.name, a.value) for a in answers if isinstance(a, Answer)]
    err = cmd.app.stderr
    for name, result in done:
        if result.refused:
            err.write(
                f"Warning: {name}: nothing kicked: other connections would also be kicked from "
                f"following users: {' '.join(result.refused)}; use the '--force' option to enforce it\n"
            )
    if args.dry_run:
        parts = [
            (
                name,
                separate_headers(r.protocol, r.alt_fields),
                separate_rows(r.protocol, r.targets, len(r.alt_fields)),
                r.protocol,
            )
            for name, r in done
        ]
        cmd.emit_merged(parts)
        return cmd.report_failures(answers)
    rows = [(name, str(r.connections), " ".join(r.users)) for name, r in done]
    total = sum(r.connections for _, r in done)
    rows.append(("total", str(total), ""))
    cmd.emit(HEADERS, rows, formatter="table", generation=max((r.protocol for _, r in done), default=2))
    if cmd.report_failures(answers):
        return EX_TEMPFAIL
    if total == 0 and done and all(r.protocol == 1 for _, r in done):
        return EX_NOTFOUND
    return 0
