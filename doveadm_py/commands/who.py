"""``dvadm who``: who is connected, as the server's own ``doveadm who`` shows it.

Titles and counting follow the server's generation (2.3: ``proto``, count = sum of
refcounts; 2.4: ``service``, count = sessions). Row order is deterministic: dump order
for ``-1``, first-seen order when aggregated (doveadm's is hash order).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from typing import Any

from ..command import DvadmCommand
from ..errors import UsageError
from ..masks import Filter, parse_masks
from ..output import Header
from ..sessionview import (
    AGGREGATED_V1,
    AGGREGATED_V2,
    DumpGuard,
    add_socket_path_argument,
    select_sessions,
    separate_headers,
    separate_rows,
)

ALT_NEEDS_24 = "-f passdb_field needs alternative usernames, which only Dovecot 2.4's anvil tracks"


class Who(DvadmCommand):
    """Show who is logged in to the Dovecot server."""

    usage = "[-a <anvil socket path>] [-1] [-f <passdb field>] [<user mask> ...] [<ip/bits>]"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_socket_path_argument(parser)
        parser.add_argument(
            "-1", "--separate-connections", action="store_true", help="one row per connection"
        )
        parser.add_argument(
            "-f", "--passdb-field", metavar="passdb_field", help="match masks against this alt username"
        )
        parser.add_argument("masks", nargs="*", metavar="mask", help="user mask (* and ?) or ip[/bits]")

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        filter_ = parse_masks(parsed_args.masks)
        with self.anvil(parsed_args.socket_path) as client:
            dump = client.connect_dump(on_invalid=self._invalid_line)
            # Only the dump makes the protocol certain: a 2.4 anvil slow to greet looks like 2.3 until then.
            if dump.protocol == 1 and parsed_args.passdb_field is not None:
                dump.close()
                raise UsageError(f"{ALT_NEEDS_24}; this server speaks the 2.3 protocol")
            guard = DumpGuard(dump)
            if parsed_args.separate_connections:
                headers, rows = separate(dump.protocol, dump.alt_fields, guard, filter_, parsed_args)
            else:
                headers, rows = aggregated(dump.protocol, guard, filter_)
            self.emit(headers, rows, generation=dump.protocol)
        guard.raise_if_failed()
        return 0

    def _invalid_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "backslashreplace")
        self.app.stderr.write(f"Error: Invalid input: {text}\n")


def separate(
    protocol: int,
    alt_fields: tuple[str, ...],
    sessions: Iterable[Any],
    filter_: Filter,
    args: argparse.Namespace,
) -> tuple[tuple[Header, ...], Iterator[tuple[str, ...]]]:
    """``who -1``: one row per connection, filtered per connection."""
    headers = separate_headers(protocol, alt_fields)
    field = args.passdb_field if filter_.user_masks else None
    if field is not None and field not in alt_fields:
        return headers, iter(())
    alt_index = None if field is None else alt_fields.index(field)
    return headers, separate_rows(protocol, select_sessions(sessions, filter_, alt_index), len(alt_fields))


def aggregated(
    protocol: int, sessions: Iterable[Any], filter_: Filter
) -> tuple[tuple[Header, ...], Iterator[tuple[str, ...]]]:
    """``who``: one row per (username, service); a user is kept if any of its IPs matches."""
    headers = AGGREGATED_V1 if protocol == 1 else AGGREGATED_V2
    return headers, _aggregate(protocol, sessions, filter_)


def _aggregate(protocol: int, sessions: Iterable[Any], filter_: Filter) -> Iterator[tuple[str, ...]]:
    # (username, service[, ip for nameless sessions]) -> [count, {pid: None}, {ip: None}]
    groups: dict[tuple[str, ...], list[Any]] = {}
    match_user = filter_.match_user
    user_ok: dict[str, bool] = {}
    for s in sessions:
        name = s.username
        ok = user_ok.get(name)
        if ok is None:
            ok = user_ok[name] = match_user(name)
        if not ok:
            continue
        key = (name, s.service) if name else ("", s.service, s.ip)
        group = groups.get(key)
        if group is None:
            group = groups[key] = [0, {}, {}]
        group[0] += s.refcount if protocol == 1 else 1
        group[1][s.pid] = None
        if s.ip:
            group[2][s.ip] = None
    match_any_ip = filter_.match_any_ip
    for key, (count, pids, ips) in groups.items():
        if filter_.network is None or match_any_ip(ips):
            pid_text = " ".join(map(str, pids))
            yield (key[0], str(count), key[1], f"({pid_text})", f"({' '.join(ips)})")
