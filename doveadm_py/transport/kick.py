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
from typing import TYPE_CHECKING, Any

from ..commands.kick.report import DRY_RUN, KICKED, NONE, WARNING, KickReport
from ..commands.kick.v1 import NEEDS_24, group_by_pid, sorted_names
from ..commands.kick.v2 import dest_matches, exact_matches, kickable
from ..errors import EX_NOTFOUND, EX_TEMPFAIL
from ..masks import Filter
from ..output import Header
from ..sessionview import select_sessions, separate_headers, separate_rows
from .http import HttpTransport, RemoteError

if TYPE_CHECKING:
    from ..commands.kick import Kick

#: ``-f formatted`` (the local kick's default): without a format it would fail after kicking.
FORMAT = "%{server}: %{connections} connections kicked\n"
HEADERS = (
    Header("server", "server"),
    Header("connections", "connections", right=True),
    Header("users", "users", expand=True),
)


def kick_server(
    server: HttpTransport, filter_: Filter, dest_host: str | None, args: argparse.Namespace
) -> KickReport:
    """Plan from the server's session list, then (unless dry run or refused) its own kick.

    ``count`` is the connections kicked (2.4: the server's count; 2.3: the listed sessions
    of the users the server reports kicked), ``users`` who they belonged to.
    """
    from ..commands.kick import settle
    from ..masks import CommandEventError

    dump = server.sessions()
    sessions = list(dump)
    if dump.protocol == 2:  # as the local 2.4 kick: anvil never kicks these (2.4's lmtp)
        sessions = [s for s in sessions if kickable(s)]
    try:
        filter_ = settle(filter_, dump.protocol, args, None)  # masks as this server's generation reads them
    except CommandEventError as err:
        raise err.for_command("kick") from None
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
    masks: Sequence[str] = args.masks
    notes: list[str] = []
    if field is not None and not fast:
        if field in dump.alt_fields:
            masks, targets, notes = by_alt_value(sessions, targets, dump.alt_fields.index(field))
        else:
            masks = []
    if args.dry_run:
        return KickReport(2, DRY_RUN, sessions=targets, alt_fields=dump.alt_fields, notes=notes)
    users = sorted_names(s.username for s in targets)
    if not masks and (field is not None or dest_host is None):  # -f: no alt value is safe to send
        return KickReport(2, KICKED, count=0, notes=notes)
    outcome = server.api_kick(masks, None if masks is not args.masks else dest_host, field)
    return KickReport(2, KICKED, users=users, count=outcome.connections, notes=notes)


def by_alt_value(
    sessions: list[Any], targets: list[Any], index: int
) -> tuple[list[str], list[Any], list[str]]:
    """``-f`` with wildcards, a network or ``-h``: the exact alt values to kick, the sessions that
    reaches, and warnings for the values left out.

    doveadm 2.4 would take its slow path and send each matching session's *primary username*
    as the alt value (an upstream bug): that kicks whoever has that alt value, matching or not.
    An exact value takes its fast path (``KICK-ALT-USER field value``), which kicks every
    session carrying it, so a value is sent only when all of those matched and the server
    reads it as a plain name (no wildcard, not an IP).
    """
    from ..errors import UsageError
    from ..masks import parse_masks

    carriers: dict[str, list[Any]] = {}
    for s in sessions:
        if index < len(s.alt) and s.alt[index]:
            carriers.setdefault(s.alt[index], []).append(s)
    wanted = {id(s) for s in targets}
    values: dict[str, None] = {}
    notes = []
    for s in targets:
        value = s.alt[index] if index < len(s.alt) else ""
        if not value or value in values:
            continue
        try:
            plain = parse_masks([value]).for_protocol(2)
            is_name = plain.user_masks == (value,) and plain.network is None and not plain.has_wildcards
        except UsageError:
            is_name = False
        others = sum(id(c) not in wanted for c in carriers.get(value, ()))
        if not is_name:
            notes.append(f"not kicking alt value {value!r}: the server would read it as a mask, not a name")
        elif others:
            notes.append(
                f"not kicking alt value {value!r}: it would also disconnect {others} "
                "session(s) that do not match"
            )
        else:
            values[value] = None
    reached = [s for s in targets if index < len(s.alt) and s.alt[index] in values]
    return list(values), reached, notes


def _kick_v1(
    server: HttpTransport,
    sessions: list[Any],
    filter_: Filter,
    dest_host: str | None,
    args: argparse.Namespace,
) -> KickReport:
    if args.passdb_field is not None:
        raise RemoteError(f"{server.name}: {NEEDS_24.format(what='alternative usernames (-f passdb_field)')}")
    if dest_host is not None:
        raise RemoteError(f"{server.name}: {NEEDS_24.format(what='proxy destinations (-h dest_host)')}")
    pids = group_by_pid(sessions, filter_)
    chosen = {p.pid for p in pids.values() if p.matched and (p.all_matched or args.force)}
    partly = [p for p in pids.values() if p.matched and not p.all_matched]
    others = sorted_names(u for p in partly for u in p.users if u not in p.matched)
    if others and not args.force:
        return KickReport(1, WARNING, users=others, count=0)
    targets = [s for s in sessions if s.pid in chosen]
    if args.dry_run:
        return KickReport(1, DRY_RUN, sessions=targets)
    if not chosen:
        return KickReport(1, NONE, count=0, exit_code=EX_NOTFOUND)
    outcome = server.api_kick(args.masks, None, None)
    kicked = set(outcome.users)
    if not kicked:
        return KickReport(1, NONE, count=0, exit_code=EX_NOTFOUND)
    connections = sum(s.refcount for s in targets if s.username in kicked)
    return KickReport(1, KICKED, users=sorted_names(kicked), count=connections)


def fleet_kick(cmd: Kick, args: argparse.Namespace) -> int:
    """Kick on every ``-S`` server at once; one row per server and a total, or the dry run's sessions.

    Each server's kick (or failure) gets its audit line. Exit: 75 if a server failed; else 68
    when nothing was kicked (or listed, dry run) anywhere and every server is a 2.3 that did not
    refuse (as the local 2.3 kick, whose refusal exits 0); else 0.
    """
    from ..commands.kick import validate
    from ..errors import TempFailError
    from ..masks import ReadingsError
    from .fleet import Answer

    try:
        filter_, dest_host = validate(args)
    except ReadingsError as wrong:  # each server's error in its doveadm's words; nothing is kicked
        cmd.audit(args, None, wrong)
        return cmd.report_readings(cmd.remote_servers(args) or [], wrong)
    servers = cmd.remote_servers(args)
    assert servers is not None  # Kick calls this only with -S targets
    answers = cmd.ask_servers(servers, lambda server: server.kick(filter_, dest_host, args))
    done = [(a.name, a.value) for a in answers if isinstance(a, Answer)]
    for answer in answers:
        cmd.server = answer.name
        if isinstance(answer, Answer):
            cmd.audit(args, answer.value, None)
        else:
            cmd.audit(args, None, TempFailError(answer.message))
    err = cmd.app.stderr
    for name, report in done:
        for note in report.notes:
            err.write(f"Warning: {name}: {note}\n")
        if report.status == WARNING:
            err.write(
                f"Warning: {name}: nothing kicked: other connections would also be kicked from "
                f"following users: {' '.join(report.users)}; use the '--force' option to enforce it\n"
            )
    if args.dry_run:
        parts = []
        for name, r in done:
            headers = separate_headers(r.generation, r.alt_fields)
            rows = separate_rows(r.generation, r.sessions, len(r.alt_fields))
            parts.append((name, headers, rows, r.generation))
        cmd.emit_merged(parts, formatter="table")  # as the local dry run's listing
        if cmd.report_failures(answers):
            return EX_TEMPFAIL
        nothing = done and all(r.generation == 1 and not r.sessions and r.status != WARNING for _, r in done)
        return EX_NOTFOUND if nothing else 0  # as the local dry runs: 2.3's lists nothing: 68
    kicked = [(name, r) for name, r in done if r.status == KICKED]
    table = [(name, str(r.count or 0), " ".join(r.users) if r.status == KICKED else "") for name, r in done]
    total = sum(r.count or 0 for _, r in kicked)
    table.append(("total", str(total), ""))
    generation = max((r.generation for _, r in done), default=2)
    cmd.emit(HEADERS, table, formatter="table", format=FORMAT, generation=generation)
    if cmd.report_failures(answers):
        return EX_TEMPFAIL
    if total == 0 and done and all(r.generation == 1 and r.status != WARNING for _, r in done):
        return EX_NOTFOUND
    return 0
