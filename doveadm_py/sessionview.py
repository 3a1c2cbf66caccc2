"""Session rows as ``doveadm who`` shows them, shared by ``who`` and ``kick --dry-run``.

Titles follow the server's generation: protocol 1 is Dovecot 2.3 (``proto``), protocol 2
is Dovecot 2.4 (``service``, plus ``dest_ip`` and one column per alt-username field).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import compress
from typing import Any

from .anvil.records import SessionV1
from .masks import Filter
from .output import Header, batched

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


MAX_REPEAT = 1024
"""A 2.3 refcount above this is printed row by row, in blocks of ROWS_PER_BLOCK (bounded memory)."""
ROWS_PER_BLOCK = 4096


def separate_columns(
    protocol: int, pieces: Iterable[Any], filter_: Filter, n_alt: int = 0
) -> Iterator[list[Sequence[str]]]:
    """``who -1`` rows as column blocks, from :meth:`ConnectDump.pieces`: the same rows as
    :func:`separate_rows` over :func:`select_sessions`, which the pieces that are records go through.

    Blocks stay small however big a 2.3 refcount is (each repeat is a row): a piece whose
    refcounts would repeat rows by more than ``MAX_REPEAT`` goes row by row too.
    """
    for piece in pieces:
        if isinstance(piece, list) or (protocol == 1 and _repeats_much(piece.odd_refcounts)):
            records = piece if isinstance(piece, list) else _v1_records(piece)
            rows = separate_rows(protocol, select_sessions(records, filter_), n_alt)
            for batch in batched(rows, ROWS_PER_BLOCK):
                yield list(map(list, zip(*batch, strict=True)))
            continue
        if protocol == 1:
            columns: list[Sequence[str]] = [piece.users, piece.services, piece.pids, piece.ips]
            if piece.odd_refcounts:
                columns = list(_repeat_rows(columns, piece.odd_refcounts))
        else:
            columns = [piece.users, piece.services, piece.pids, piece.ips, piece.dest_ips, *piece.alts]
        if not filter_.is_empty:  # users are column 0 and IPs column 3 in both generations
            keep = list(map(filter_.match, columns[0], columns[3]))
            if not all(keep):
                columns = [list(compress(column, keep)) for column in columns]
        if columns[0]:
            yield columns


def _repeats_much(odd_refcounts: list[tuple[int, int]]) -> bool:
    return any(refcount > MAX_REPEAT for _, refcount in odd_refcounts)


def _v1_records(piece: Any) -> Iterator[SessionV1]:
    refcounts = dict(piece.odd_refcounts)
    for row, fields in enumerate(zip(piece.services, piece.ips, piece.users, piece.pids, strict=True)):
        service, ip, user, pid = fields
        yield SessionV1(service, ip, user, int(pid), refcounts.get(row, 1))


def _repeat_rows(columns: list[Sequence[str]], odd_refcounts: list[tuple[int, int]]) -> list[list[str]]:
    """2.3 ``-1`` shows a line refcount times: rows with another refcount than 1 are repeated (or dropped).

    With few such rows (2% in the benchmark) each is widened in place, from the last, which moves
    memory in C and measured 30% faster; with many, each column is rebuilt once (linear).
    """
    if len(odd_refcounts) * 32 < len(columns[0]):
        result = [list(column) for column in columns]
        for row, refcount in reversed(odd_refcounts):
            for column in result:
                column[row : row + 1] = [column[row]] * refcount
        return result
    result = [[] for _ in columns]
    start = 0
    for row, refcount in odd_refcounts:
        for out, source in zip(result, columns, strict=True):
            out.extend(source[start:row])
            out.extend([source[row]] * refcount)
        start = row + 1
    for out, source in zip(result, columns, strict=True):
        out.extend(source[start:])
    return result


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
