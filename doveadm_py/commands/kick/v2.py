"""Kicking on Dovecot 2.4 (anvil protocol 2): anvil disconnects the sessions.

As doveadm 2.4: plain names without a network or ``-h`` go straight to ``KICK-USER user``
(no dump; anvil matches exactly and case-sensitively); anything else reads the dump,
filters it and kicks each matching session by connection GUID. Differences, all safer:
- requests are pipelined on one connection, not one round trip each;
- ``-f field`` sends the alt value that matched (upstream sends the primary username);
  an alt value is kicked by value only when every session carrying it matched,
  otherwise its matching sessions are kicked one by one by GUID;
- a dump that fails midway kicks nothing (doveadm kicks what it had read);
- a session without a connection GUID is kicked by name only when that reaches no other
  session (doveadm's bare ``KICK-USER user`` disconnects all of the user's sessions).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...masks import Filter
from ...sessionview import select_sessions
from .report import DRY_RUN, KICKED, KickReport

if TYPE_CHECKING:
    from ...anvil import AnvilClient, ConnectDump, KickResult

ZERO_GUID = "0" * 32
#: Services whose sessions anvil never kicks (kick type N: Dovecot 2.4's lmtp).
UNKICKABLE_SERVICES = frozenset({"lmtp"})


def kickable(session: Any) -> bool:
    return session.service not in UNKICKABLE_SERVICES


def kick_v2(
    client: AnvilClient,
    filter_: Filter,
    dest_host: str | None,
    args: argparse.Namespace,
    dump: ConnectDump | None = None,
) -> KickReport:
    """Kick through anvil; ``dump`` is one already requested while settling the protocol."""
    from ...anvil import KickRequest

    field = args.passdb_field
    fast = dest_host is None and filter_.network is None and not filter_.has_wildcards
    if fast and not args.dry_run:
        requests = [
            KickRequest("alt", field, mask) if field is not None else KickRequest("user", mask, None)
            for mask in filter_.user_masks
        ]
        if dump is not None:
            dump.close()
        return counted(client.kick_many(requests))
    if dump is None:
        dump = client.connect_dump()
    alt_fields = dump.alt_fields
    # A dump that fails midway raises here, before any kick. anvil skips unkickable sessions.
    sessions = [s for s in dump if kickable(s)]
    notes: list[str] = []
    if field is not None and field not in alt_fields:
        targets: list[Any] = []
    elif fast:  # only on a dry run: what anvil's by-name kicks would reach
        touched = list(exact_matches(sessions, filter_, alt_fields, field))
        return KickReport(2, DRY_RUN, sessions=touched, alt_fields=alt_fields)
    else:
        alt_index = None if field is None else alt_fields.index(field)
        targets = [s for s in select_sessions(sessions, filter_, alt_index) if dest_matches(s, dest_host)]
    requests, touched = plan_requests(sessions, targets, alt_fields, field, notes)
    if args.dry_run:
        return KickReport(2, DRY_RUN, sessions=touched, alt_fields=alt_fields, notes=notes)
    return counted(client.kick_many(requests), notes)


def exact_matches(
    sessions: list[Any], filter_: Filter, alt_fields: tuple[str, ...], field: str | None
) -> Iterator[Any]:
    """What anvil's fast path selects: exact, case-sensitive names (for --dry-run)."""
    names = set(filter_.user_masks)
    index = None if field is None else alt_fields.index(field)
    for s in sessions:
        name = s.username if index is None else (s.alt[index] if index < len(s.alt) else None)
        if name in names:
            yield s


def dest_matches(session: Any, dest_host: str | None) -> bool:
    return dest_host is None or session.dest_ip == dest_host


def plan_requests(
    sessions: list[Any], targets: list[Any], alt_fields: tuple[str, ...], field: str | None, notes: list[str]
) -> tuple[list[Any], list[Any]]:
    """Kick requests that reach exactly the target sessions, and the targets they reach
    (``notes`` says why the others are left alone)."""
    from ...anvil import KickRequest

    if field is None or not targets:
        return by_guid(sessions, targets, notes)
    index = alt_fields.index(field)
    target_ids = {id(s) for s in targets}
    carriers: dict[str, list[Any]] = {}
    for s in sessions:
        if index < len(s.alt) and s.alt[index]:
            carriers.setdefault(s.alt[index], []).append(s)
    requests = []
    done: set[str] = set()
    touched = []
    rest = []
    for s in targets:
        value = s.alt[index]
        # An empty value is no alt username: anvil could not find the session by it.
        if value and all(id(c) in target_ids for c in carriers[value]):
            touched.append(s)
            if value not in done:
                done.add(value)
                requests.append(KickRequest.alt(field, value))
        else:
            rest.append(s)
    more_requests, more_touched = by_guid(sessions, rest, notes, target_ids)
    return requests + more_requests, touched + more_touched


def by_guid(
    sessions: list[Any], targets: list[Any], notes: list[str], wanted: set[int] | None = None
) -> tuple[list[Any], list[Any]]:
    """``KICK-USER user guid`` per target; a session without a GUID only by name, and only
    when that kicks no session outside ``wanted`` (ids; default: the targets). doveadm sends
    the bare name regardless. Returns the requests and the targets they reach."""
    from ...anvil import KickRequest

    guidless = {s.username for s in targets if s.guid == ZERO_GUID}
    by_name: set[str] = set()
    if guidless:
        target_ids = wanted if wanted is not None else {id(s) for s in targets}
        spared = Counter(s.username for s in sessions if s.username in guidless and id(s) not in target_ids)
        for name in sorted(guidless):
            if spared[name]:
                notes.append(
                    f"Warning: not kicking {name}: anvil has no connection GUID for a matching session, "
                    f"and kicking by name would also disconnect {spared[name]} session(s) that do not match"
                )
            else:
                by_name.add(name)
    requests = []
    touched = []
    named: set[str] = set()
    for s in targets:
        name = s.username
        if name in by_name:
            touched.append(s)
            if name not in named:
                named.add(name)
                requests.append(KickRequest.user(name))
        elif s.guid != ZERO_GUID:
            touched.append(s)
            requests.append(KickRequest.user(name, s.guid))
    return requests, touched


def counted(result: KickResult, notes: list[str] | None = None) -> KickReport:
    """``N connections kicked`` (exit 0 even for 0, as 2.4); anvil's odd replies as errors."""
    notes = list(notes or [])
    notes += [f"Error: {error}" for error in result.errors]
    return KickReport(2, KICKED, count=result.connections, notes=notes)
