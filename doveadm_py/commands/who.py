"""``dvadm who``: who is connected, as the server's own ``doveadm who`` shows it.

Titles and counting follow the server's generation (2.3: ``proto``, count = sum of
refcounts; 2.4: ``service``, count = sessions). Row order is deterministic: dump order
for ``-1``, first-seen order when aggregated (doveadm's is hash order).

Big servers: the dump is parsed in bulk (:meth:`ConnectDump.pieces`) and rows go to the
formatter column-wise (:class:`ColumnBlocks`); aggregation keeps its groups compact
(:class:`Groups`). Both give exactly the rows of the plain record-by-record code.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from ..aggregation import aggregate
from ..anvil.dump import DumpGuard
from ..command import DvadmCommand
from ..errors import UsageError
from ..masks import CommandEventError, Filter, ReadingsError, parse_masks
from ..output import ColumnBlocks, Header
from ..sessionview import (
    AGGREGATED_V1,
    AGGREGATED_V2,
    select_sessions,
    separate_columns,
    separate_headers,
    separate_rows,
)
from ..transport.options import add_socket_path_argument

ALT_NEEDS_24 = "-f passdb_field needs alternative usernames, which only Dovecot 2.4's anvil tracks"


class Who(DvadmCommand):
    """Show who is logged in to the Dovecot server."""

    usage = (
        "[-a <anvil socket path> | -S <server> ...] [-1] [-f <passdb field>] [<user mask> ...] [<ip/bits>]"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_socket_path_argument(parser)
        parser.add_argument(
            "-1", "--separate-connections", action="store_true", help="one row per connection"
        )
        parser.add_argument(
            "-f",
            "--passdb-field",
            metavar="passdb_field",
            help="2.4, with -1: match masks against this alt username (without -1 they match the "
            "primary username, as doveadm 2.4)",
        )
        parser.add_argument("masks", nargs="*", metavar="mask", help="user mask (* and ?) or ip[/bits]")

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        servers = self.remote_servers(parsed_args)
        try:
            filter_ = parse_masks(parsed_args.masks)
        except ReadingsError as err:  # worded apart by 2.3 and 2.4: as the server's own doveadm
            if servers is not None:
                return self.report_readings(servers, err)
            raise err.for_protocol(
                self.local_generation(parsed_args.socket_path), self.cmd_name or "who"
            ) from None
        if servers is not None:
            return self.fleet_who(servers, filter_, parsed_args)
        with self.local_transport(parsed_args.socket_path) as anvil:
            dump = anvil.sessions(on_invalid=self._invalid_line)
            # Only the dump makes the protocol certain: a 2.4 anvil slow to greet looks like 2.3 until then.
            if dump.protocol == 1 and parsed_args.passdb_field is not None:
                dump.close()
                raise UsageError(f"{ALT_NEEDS_24}; this server speaks the 2.3 protocol")
            try:
                filter_ = filter_.for_protocol(dump.protocol)  # fe80::1%eth0 is a network to 2.4 only
            except CommandEventError as err:  # 2.4 words it with the command's prefix
                dump.close()
                raise err.for_command(self.cmd_name or "who") from None
            except UsageError:
                dump.close()
                raise
            if parsed_args.separate_connections:
                headers, rows, guard = separate(dump, filter_, parsed_args.passdb_field)
            else:
                headers, rows, guard = aggregated(dump, filter_)
            self.emit(headers, rows, generation=dump.protocol)
        guard.raise_if_failed()
        self.hint_formatter_as_field(parsed_args.passdb_field, dump.alt_fields)
        return 0

    def fleet_who(self, servers: list[Any], filter_: Filter, parsed_args: argparse.Namespace) -> int:
        """Every server's full session list, filtered, aggregated and formatted here, per server."""
        from ..transport.fleet import Answer, ServerFailure

        answers = self.ask_servers(servers, lambda server: server.sessions())
        parts = []
        for i, answer in enumerate(answers):
            if not isinstance(answer, Answer):
                continue
            dump = answer.value
            if dump.protocol == 1 and parsed_args.passdb_field is not None:
                answers[i] = ServerFailure(answer.name, f"{answer.name}: {ALT_NEEDS_24}; it runs Dovecot 2.3")
                continue
            try:
                settled = filter_.for_protocol(dump.protocol)
            except UsageError as err:
                answers[i] = ServerFailure(answer.name, f"{answer.name}: {err.message}")
                continue
            if parsed_args.separate_connections:
                headers, rows, _ = separate(dump, settled, parsed_args.passdb_field)
            else:
                headers, rows, _ = aggregated(dump, settled)
            parts.append((answer.name, headers, rows, dump.protocol))
        self.emit_merged(parts)
        return self.report_failures(answers)

    def _invalid_line(self, line: bytes) -> None:
        from ..anvil.records import excerpt

        self.app.stderr.write(f"Error: Invalid input: {excerpt(line)}\n")


def separate(
    dump: Any, filter_: Filter, passdb_field: str | None = None
) -> tuple[tuple[Header, ...], Iterable[Sequence[str]], DumpGuard]:
    """``who -1``: one row per connection, filtered per connection.

    With ``-f`` (and masks) a session lacking the alt value never matches, which only the
    records tell apart from an empty value, so that rare case reads records.
    """
    headers = separate_headers(dump.protocol, dump.alt_fields)
    n_alt = len(dump.alt_fields)
    field = passdb_field if filter_.user_masks else None
    if field is None:
        guard = DumpGuard(dump.pieces())
        return headers, ColumnBlocks(separate_columns(dump.protocol, guard, filter_, n_alt)), guard
    guard = DumpGuard(dump)
    if field not in dump.alt_fields:
        return headers, iter(()), guard
    selected = select_sessions(guard, filter_, dump.alt_fields.index(field))
    return headers, separate_rows(dump.protocol, selected, n_alt), guard


def aggregated(dump: Any, filter_: Filter) -> tuple[tuple[Header, ...], ColumnBlocks, DumpGuard]:
    """``who``: one row per (username, service); a user is kept if any of its IPs matches."""
    headers = AGGREGATED_V1 if dump.protocol == 1 else AGGREGATED_V2
    guard = DumpGuard(dump.pieces())
    return headers, ColumnBlocks(aggregate(dump.protocol, guard, filter_)), guard
