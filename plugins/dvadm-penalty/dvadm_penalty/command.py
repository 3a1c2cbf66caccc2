"""``dvadm penalty``: anvil's auth-failure penalties per client IP, as ``doveadm penalty`` shows them.

PENALTY-DUMP is the same in Dovecot 2.3 and 2.4; only the handshake differs, and the
:class:`~doveadm_py.api.AnvilClient` takes care of it. Like doveadm, each ident is parsed
as an IP and the parsed address is printed, so an ident that is no IP prints as an empty
IP and no network contains it. Rows keep anvil's order (least recently updated first).

With ``-S`` the penalties come from remote servers' doveadm HTTP API (rows as each server
printed them, times in its local time zone), merged with a leading ``server`` column.

Only :mod:`doveadm_py.api` is used: this is what any third-party command can do.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from doveadm_py.api import (
    DvadmCommand,
    Header,
    Network,
    UsageError,
    add_socket_path_argument,
    canonical_ip,
    parse_netmask,
)

if TYPE_CHECKING:
    from doveadm_py.api import PenaltyRecord

HEADERS = (
    Header("IP", "IP"),
    Header("penalty", "penalty"),
    Header("last_penalty", "last_penalty"),
    Header("last_update", "last_update"),
)
LAST_PENALTY_FORMAT = "%Y-%m-%d %H:%M:%S"
LAST_UPDATE_FORMAT = "%H:%M:%S"


class Penalty(DvadmCommand):
    """Show the auth-failure penalties anvil keeps per client IP."""

    usage = "[-a <anvil socket path> | -S <server> ...] [<ip/bits>]"
    #: ``dvadm help penalty`` and ``man dvadm-penalty`` (doveadm_py.manual markup).
    manual_sections = (
        (
            "Description",
            """\
Sends PENALTY-DUMP to anvil (Dovecot 2.3 and 2.4 alike) and prints one row per client IP in
anvil's order, least recently updated first: penalty, the failure count that sets auth's delay
for that IP; last_penalty (local date and time), when it last grew; last_update (local time),
the last failure, including repeats of a password already counted.

ip/bits keeps the IPs in that network (an IPv4-mapped IPv6 address is in its IPv4 network); /0
keeps all. As doveadm, an ident that is no IP prints as an empty IP and is in no network.""",
        ),
        (
            "Examples",
            """\
    dvadm penalty                      every client IP with a penalty
    dvadm penalty 192.0.2.0/24         those in one network
    dvadm -f json penalty              as JSON""",
        ),
        (
            "Exit status",
            """\
0 success; 64 a bad network (Invalid netmask '<mask>' given); 75 anvil unreachable or a
malformed reply line (Read invalid penalty line: <line>).""",
        ),
        ("See also", "dvadm(1), doveadm-penalty(1)"),
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_socket_path_argument(parser)
        parser.add_argument(
            "netmask", nargs="?", metavar="ip/bits", help="only IPs in this network (/0: every IP)"
        )

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        # A mask bad to both generations is a usage error before anything is sent to anvil; one that
        # only 2.4 takes (a scoped fe80::1%lo/64) is settled once the server's generation is known.
        readings = netmask_readings(parsed_args.netmask)
        servers = self.remote_servers(parsed_args)
        if servers is not None:
            return self.fleet_penalty(servers, readings)
        with self.local_transport(parsed_args.socket_path) as anvil:
            records = anvil.penalties()  # the request is sent here: the protocol is settled
            network = readings[anvil.protocol]
            if isinstance(network, UsageError):
                raise network
            rows = penalty_rows(records, None if network is None else network.contains)
            self.emit(HEADERS, rows, generation=anvil.protocol)
        return 0

    def fleet_penalty(self, servers: list[Any], readings: dict[int, Network | UsageError | None]) -> int:
        """Every server's penalty rows at once, the mask read as that server's generation reads it
        (asked only when 2.3 and 2.4 read it apart); a failed server is named on stderr (exit 75)."""
        from doveadm_py.api import Answer

        def ask(server: Any) -> list[Any]:
            network = readings[1] if same_reading(readings) else readings[server.protocol]
            if isinstance(network, UsageError):
                raise network
            return [r for r in server.penalty_rows() if network is None or network.contains(r[0])]

        answers = self.ask_servers(servers, ask)
        parts = [(answer.name, HEADERS, answer.value, 2) for answer in answers if isinstance(answer, Answer)]
        self.emit_merged(parts)
        return self.report_failures(answers)


def netmask_readings(text: str | None) -> dict[int, Network | UsageError | None]:
    """The mask as 2.3 (1) and 2.4 (2) read it (None: no filter); UsageError now if wrong to both."""
    readings: dict[int, Network | UsageError | None] = {}
    for protocol in (1, 2):
        try:
            readings[protocol] = None if text is None else parse_netmask(text, protocol)
        except UsageError as err:
            readings[protocol] = err
    if isinstance(readings[1], UsageError) and isinstance(readings[2], UsageError):
        raise readings[1]
    return readings


def same_reading(readings: dict[int, Network | UsageError | None]) -> bool:
    """Whether 2.3 and 2.4 read the mask alike (then no server needs to say its generation)."""
    one, two = readings[1], readings[2]
    if one is None or two is None or isinstance(one, UsageError) or isinstance(two, UsageError):
        return one is two
    return (one.family, one.network, one.bits, one.scope) == (two.family, two.network, two.bits, two.scope)


def penalty_rows(
    records: Iterable[PenaltyRecord], in_network: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, str, str, str]]:
    """doveadm's columns for each record whose ident is in the network (``None``: every record)."""
    for record in records:
        if in_network is not None and not in_network(record.ident):
            continue
        yield (
            canonical_ip(record.ident),
            str(record.penalty),
            local_time(LAST_PENALTY_FORMAT, record.last_penalty),
            local_time(LAST_UPDATE_FORMAT, record.last_update),
        )


def local_time(fmt: str, timestamp: int) -> str:
    """``strftime`` in local time; a time beyond the platform's range prints as the raw number."""
    try:
        return time.strftime(fmt, time.localtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return str(timestamp)
