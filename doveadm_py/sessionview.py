"""Session rows as ``doveadm who`` shows them, shared by ``who`` and ``kick --dry-run``.

Titles follow the server's generation: protocol 1 is Dovecot 2.3 (``proto``), protocol 2
is Dovecot 2.4 (``service``, plus ``dest_ip`` and one column per alt-username field).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from typing import Any

from .masks import Filter
from .output import Header

AGGREGATED_V1 = (
    Header("username", "username"),
    Header("connections", "#", right=True),
    Header("service", "proto"),
    Header("pids", "(pids)"),
    Header("ips", "(ips)"),
)
AGGREGATED_V2 = (*AGGREGATED_V1[:2], Header("service", "service"), *AGGREGATED_V1[3:])
SEPARATE_V1 = (
    Header("username", "username", expand=True),
    Header("service", "proto"),
    Header("pid", "pid"),
    Header("ip", "ip"),
)
SEPARATE_V2 = (SEPARATE_V1[0], Header("service", "service"), *SEPARATE_V1[2:], Header("dest_ip", "dest_ip"))


def add_socket_path_argument(parser: argparse.ArgumentParser) -> None:
    """``-a anvil_socket_path``, as every anvil command has it."""
    parser.add_argument(
        "-a", "--socket-path", metavar="anvil_socket_path", help="anvil socket (default <base_dir>/anvil)"
    )


def separate_headers(protocol: int, alt_fields: tuple[str, ...] = ()) -> tuple[Header, ...]:
    if protocol == 1:
        return SEPARATE_V1
    return SEPARATE_V2 + tuple(Header(name, name) for name in alt_fields)


def separate_rows(protocol: int, sessions: Iterable[Any], n_alt: int = 0) -> Iterator[tuple[str, ...]]:
    """``who -1`` rows: 2.3 repeats a line refcount times; 2.4 pads missing alt values."""
    if protocol == 1:
        for s in sessions:
            row = (s.username, s.service, str(s.pid), s.ip)
            for _ in range(s.refcount):
                yield row
        return
    for s in sessions:
        alt = s.alt if len(s.alt) == n_alt else (s.alt + ("",) * n_alt)[:n_alt]
        yield (s.username, s.service, str(s.pid), s.ip, s.dest_ip, *alt)


def select_sessions(sessions: Iterable[Any], filter_: Filter, alt_index: int | None = None) -> Iterator[Any]:
    """Sessions whose name (the username, or the alt value at ``alt_index``) and IP match."""
    match_user, match_ip = filter_.match_user, filter_.match_ip
    for s in sessions:
        if alt_index is None:
            name = s.username
        elif alt_index < len(s.alt):
            name = s.alt[alt_index]
        else:
            continue
        if match_user(name) and match_ip(s.ip):
            yield s


class DumpGuard:
    """Iterates a dump and keeps a mid-dump failure for after the rows read so far are shown.

    doveadm 2.4 prints what it read before a malformed line or an early EOF, then exits 75.
    """

    def __init__(self, dump: Iterable[Any]) -> None:
        self.dump = dump
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[Any]:
        from .anvil import AnvilError

        try:
            yield from self.dump
        except AnvilError as err:
            self.error = err

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error
