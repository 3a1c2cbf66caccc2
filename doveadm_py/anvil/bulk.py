"""Bulk parsing of CONNECT-DUMP blocks into columns, for ``who`` on big servers.

Why: parsing line by line costs about 1 µs per session in CPython (``who -1`` took 1.8 s for a million
2.3 sessions, doveadm 0.5 s). Here a whole block of lines (one socket read, thousands of lines) is
joined, checked, split and sliced into columns with a handful of C-level string operations: about
0.25 µs per session.

Exactness comes first. A block takes the bulk path only if bulk checks prove that every line has the
plain layout and canonical values; then the columns hold exactly what the reference parsers
(:func:`~doveadm_py.anvil.records.parse_v1_line`, :func:`~doveadm_py.anvil.records.parse_v2_line`)
would give. A block that fails is cut in halves until the parts pass or are small, and small parts go
through the reference parsers line by line. So lines with escapes, extra or missing fields, a '/' in a
2.3 username, a pid with a leading zero, or invalid lines cost what they did, and the output is the
same, in dump order: :meth:`BulkParser.pieces` yields column blocks (:class:`V1Columns`,
:class:`V2Columns`) and lists of records, which together are the reference parsers' records.

Invalid lines behave as in :class:`~doveadm_py.anvil.dump.ConnectDump`: 2.3 reports them to
``on_invalid`` and goes on; 2.4 yields what came before and raises :class:`AnvilProtocolError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate, compress, count, repeat
from operator import add, sub
from socket import AF_INET, AF_INET6, inet_pton

from doveadm_py.anvil.records import (
    ENCODING,
    ERRORS,
    REFCOUNT_MAX,
    AnvilProtocolError,
    SessionV1,
    SessionV2,
    is_valid_ip,
    parse_v1_line,
    parse_v2_line,
)


class V1Columns:
    """Consecutive 2.3 dump lines, column-wise: row i is the line's SessionV1, values as text.

    (A plain class: a NamedTuple costs 0.1 ms of start-up each.)
    """

    __slots__ = ("ips", "odd_refcounts", "pids", "services", "users")

    def __init__(
        self,
        services: list[str],
        ips: list[str],
        users: list[str],
        pids: list[str],
        odd_refcounts: list[tuple[int, int]],
    ) -> None:
        self.services = services
        self.ips = ips  # '' when none or not an IP, as SessionV1.ip
        self.users = users
        self.pids = pids  # str(SessionV1.pid): the bulk path takes canonical pids only
        self.odd_refcounts = odd_refcounts  # (row, refcount) for each refcount other than 1, by row


class V2Columns:
    """Consecutive 2.4 dump lines, column-wise: row i is the line's SessionV2, values as text."""

    __slots__ = ("alts", "dest_ips", "ips", "pids", "services", "users")

    def __init__(
        self,
        pids: Sequence[str],
        users: Sequence[str],
        services: Sequence[str],
        ips: Sequence[str],
        dest_ips: Sequence[str],
        alts: Sequence[Sequence[str]],
    ) -> None:
        self.pids = pids  # str(SessionV2.pid)
        self.users = users
        self.services = services
        self.ips = ips
        self.dest_ips = dest_ips
        self.alts = alts  # one column per header field; '' also where a line has no value


Piece = V1Columns | V2Columns | list[SessionV1] | list[SessionV2]

# 2.3: a line's separators, in order, once everything else is deleted: plain "service/ip/user\tpid\tref",
# or without an IP "service/user\tpid\tref" (lmtp), which parses exactly as "service//user\tpid\tref".
_V1_DELETE = bytes(sorted(set(range(256)) - set(b"\t\n/")))
_V1_PLAIN = b"\n//\t\t"  # prefixed with the LF that ends the line before (one is added before the first)
_V1_NO_IP = b"\n/\t\t"
# Canonical pids only, so that the text is str(int(text)); 9 digits stay below PID_MAX (2^31 - 1).
_PIDS = re.compile(r"[1-9][0-9]{0,8}(?:\t[1-9][0-9]{0,8})*")
# Up to REFCOUNT_MAX (all nines: its number of digits), as parse_v1_line.
_REFCOUNT = re.compile(f"[0-9]{{1,{len(str(REFCOUNT_MAX))}}}")
_NOT_ONE = re.compile(r"[^1]")
_GUID_LENGTH = 32
SMALL = 32
"""A part of a block this short that fails the bulk checks is parsed line by line."""


def invalid_ips(column: Sequence[str]) -> set[str]:
    """The values of ``column`` that are neither '' nor a valid IP (:func:`is_valid_ip`).

    Checked in C-level passes whether the IPs repeat or not: ``inet_pton`` over the texts without
    ':' as dotted quads, over the others as IPv6 (both strict subsets of what :func:`is_valid_ip`
    accepts); only a column where one fails (an invalid IP, or another form: ``1.2``, brackets, a
    scope) is checked value by value.
    """
    try:  # every IP a dotted quad (or none): one pass
        all(map(inet_pton, repeat(AF_INET), filter(None, column)))
        return set()
    except (OSError, ValueError):
        pass
    try:
        all(map(inet_pton, repeat(AF_INET6), [ip for ip in column if ":" in ip]))
        all(map(inet_pton, repeat(AF_INET), [ip for ip in column if ip and ":" not in ip]))
    except (OSError, ValueError):
        return {ip for ip in set(column) if ip and not is_valid_ip(ip)}
    return set()


class BulkParser:
    """Turns a dump's blocks of raw lines into pieces: column blocks and lists of records.

    ``protocol`` 1 or 2; ``n_alt`` is the 2.4 header's length; ``on_invalid`` gets each invalid 2.3
    line; ``label`` prefixes the error of an invalid 2.4 line (the socket path).
    """

    def __init__(
        self,
        protocol: int,
        *,
        n_alt: int = 0,
        on_invalid: Callable[[bytes], None] | None = None,
        label: str = "",
    ) -> None:
        self.protocol = protocol
        self.n_alt = n_alt
        self.on_invalid = on_invalid
        self.label = label
        self._columns = self._v1_columns if protocol == 1 else self._v2_columns
        self._records = self._v1_records if protocol == 1 else self._v2_records

    def pieces(self, blocks: Iterable[list[bytes]]) -> Iterator[Piece]:
        """Every session of ``blocks``, in order, as column blocks and lists of records."""
        for lines in blocks:
            yield from self.block(lines)

    def block(self, lines: list[bytes]) -> Iterator[Piece]:
        """One block: its columns if it passes the bulk checks, else its halves, or records if small."""
        if not lines:
            return
        columns = self._columns(lines)
        if columns is not None:
            yield columns
        elif len(lines) <= SMALL:
            yield from self._records(lines)
        else:
            middle = len(lines) // 2
            yield from self.block(lines[:middle])
            yield from self.block(lines[middle:])

    # -- 2.3 ---------------------------------------------------------------------------------------

    def _v1_columns(self, lines: list[bytes]) -> V1Columns | None:
        data = b"\n".join(lines)
        if 1 in data:  # b"\x01": an escape, for the reference parser
            return None
        separators = b"\n" + data.translate(None, _V1_DELETE)
        if separators.replace(_V1_NO_IP, _V1_PLAIN) != _V1_PLAIN * len(lines):
            return None  # some line has other separators than the two layouts
        if len(separators) == len(_V1_NO_IP) * len(lines):  # no line has an IP (lmtp)
            data = data.replace(b"/", b"//")
        elif len(separators) != len(_V1_PLAIN) * len(lines):
            data = b"\n".join(_with_empty_ips(lines, separators))
        text = data.decode(ENCODING, ERRORS)
        fields = text.replace("\n", "\t").replace("/", "\t").split("\t")
        services, ips, users, pids, refcounts = (fields[i::5] for i in range(5))
        if not _PIDS.fullmatch("\t".join(pids)):
            return None
        odd_refcounts = _odd_refcounts(refcounts)
        if odd_refcounts is None:
            return None
        invalid = invalid_ips(ips)
        if invalid:  # a 2.3 line with an invalid IP is valid, shown without IP
            ips = ["" if ip in invalid else ip for ip in ips]
        return V1Columns(services, ips, users, pids, odd_refcounts)

    def _v1_records(self, lines: list[bytes]) -> Iterator[list[SessionV1]]:
        records = []
        for line in lines:
            try:
                records.append(parse_v1_line(line))
            except AnvilProtocolError:
                if self.on_invalid is not None:
                    self.on_invalid(line)
        if records:
            yield records

    # -- 2.4 ---------------------------------------------------------------------------------------

    def _v2_columns(self, lines: list[bytes]) -> V2Columns | None:
        width = 6 + self.n_alt
        # A line may leave out trailing alt values: one TAB per missing field makes them '', so that
        # every line has `width` fields and one split of the whole block gives the columns by slicing.
        tabs = list(map(bytes.count, lines, repeat(b"\t")))
        fewest, most = min(tabs), max(tabs)
        if fewest < 5 or most >= width:  # missing fixed fields, or more fields than the header names
            return None
        if fewest < width - 1:  # pad only the short lines (a quarter in the benchmark's shapes)
            lines = list(lines)
            short = list(compress(count(), map((width - 1).__gt__, tabs)))
            padding = map(b"\t".__mul__, map(sub, repeat(width - 1), map(tabs.__getitem__, short)))
            # list.__setitem__ returns None: any() runs every assignment
            any(map(lines.__setitem__, short, map(bytes.__add__, map(lines.__getitem__, short), padding)))
        text = b"\n".join(lines).decode(ENCODING, ERRORS)
        if "\x01" in text:
            return None
        fields = text.replace("\n", "\t").split("\t")
        pids, users, services, ips, guids, dest_ips, *alts = (fields[i::width] for i in range(width))
        if not _PIDS.fullmatch("\t".join(pids)) or not _all_guids(guids):
            return None
        if invalid_ips(ips) or invalid_ips(dest_ips):
            return None
        return V2Columns(pids, users, services, ips, dest_ips, alts)

    def _v2_records(self, lines: list[bytes]) -> Iterator[list[SessionV2]]:
        records = []
        for line in lines:
            try:
                records.append(parse_v2_line(line, self.n_alt))
            except AnvilProtocolError as e:
                if records:
                    yield records
                raise AnvilProtocolError(f"{self.label}: {e}") from None
        if records:
            yield records


def _with_empty_ips(lines: list[bytes], separators: bytes) -> list[bytes]:
    """``lines`` with every "service/user" ident written "service//user" (the same session, no IP).

    ``separators`` holds each line's separators after a LF; splitting it at the no-IP layout leaves
    between two such lines a piece with one LF per line in between, which locates them in C.
    """
    lines = list(lines)
    between = map(bytes.count, separators.split(_V1_NO_IP)[:-1], repeat(b"\n"))
    for row in map(add, accumulate(between), count()):
        lines[row] = lines[row].replace(b"/", b"//", 1)
    return lines


def _odd_refcounts(refcounts: list[str]) -> list[tuple[int, int]] | None:
    """(row, refcount) for the refcounts other than "1"; None if one is not a number below 10^6."""
    if refcounts.count("1") == len(refcounts):
        return []
    joined = "".join(refcounts)
    if len(joined) == len(refcounts) and all(refcounts):  # one character each: a row is its offset
        rows: Iterable[int] = (match.start() for match in _NOT_ONE.finditer(joined))
    else:
        rows = (row for row, refcount in enumerate(refcounts) if refcount != "1")
    odd = [(row, refcounts[row]) for row in rows]
    if not all(_REFCOUNT.fullmatch(refcount) for _, refcount in odd):
        return None
    return [(row, int(refcount)) for row, refcount in odd]


def _all_guids(column: Sequence[str]) -> bool:
    """Every value is 32 hex digits (``guid_128_from_string``), checked on the column at once.

    Joined with TABs (which no value holds), the values are all 32 long exactly if the text is
    33 * n - 1 long and has a TAB at every 33rd position; then fromhex checks the digits.
    """
    joined = "\t".join(column)
    n = len(column)
    step = _GUID_LENGTH + 1
    if len(joined) != step * n - 1 or joined[_GUID_LENGTH::step] != "\t" * (n - 1):
        return False
    try:  # fromhex skips whitespace (the TABs, and any space), hence the length check of its result
        return len(bytes.fromhex(joined)) == n * _GUID_LENGTH // 2
    except ValueError:
        return False
