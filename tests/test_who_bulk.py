"""The bulk dump parser and ``who``'s column-wise paths against the record-by-record reference.

:mod:`doveadm_py.anvil.bulk` promises exactly the sessions of ``parse_v1_line`` / ``parse_v2_line``, in dump
order, with the same invalid-line handling; ``who``'s fast paths (column blocks, compact groups, the table
printer's column path) promise the bytes of the plain row code. Seeded random dumps mix plain lines with
every case the bulk checks must hand to the reference parsers (no IP, '/' in a 2.3 username, escapes,
extra and missing fields, odd refcounts, non-canonical and out-of-range numbers, invalid IPs and GUIDs,
empty and non-UTF-8 names, invalid lines) and cut them into blocks at random; hypothesis adds arbitrary
bytes. Every loop is bounded: a fixed number of seeds, dumps of at most a few hundred lines.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from who_helpers import FakeDump, reference_aggregate

from doveadm_py.aggregation import Groups
from doveadm_py.anvil import AnvilProtocolError, parse_v1_line
from doveadm_py.anvil.bulk import SMALL, BulkParser, V1Columns, V2Columns
from doveadm_py.anvil.dump import DumpGuard
from doveadm_py.anvil.escape import join_tabescaped
from doveadm_py.commands.who import aggregated, separate
from doveadm_py.masks import Filter, parse_masks
from doveadm_py.output import ColumnBlocks, Header, batched
from doveadm_py.output.tab import TabFormatter
from doveadm_py.output.table import TableFormatter
from doveadm_py.sessionview import (
    AGGREGATED_V1,
    AGGREGATED_V2,
    select_sessions,
    separate_headers,
    separate_rows,
)

SEEDS = range(120)

# -- random dumps -------------------------------------------------------------------------------------------

GOOD_IPS = [
    b"10.0.0.1",
    b"192.0.2.255",
    b"2001:db8::5",
    b"::ffff:10.1.2.3",
    b"fe80::1%eth0",
    b"1.2",
    b"[::1]",
]
ODD_IPS = [b"fe80::1%a b", b"999.1.1.1", b"abc", b"1.2.3.4.5", b"::g", b"\xff", b"0x1", b"09.1.1.1"]
USERS = [b"alice", b"bob@example.com", b"user1@example.org", b"user12@example.org", b"carol"]
ODD_USERS = [
    b"",
    b"j\xc3\xbcrgen",
    b"\xff\xfe",
    b"us/er",
    b"a\tb",
    b"x y",
    b"*",
    b"Alice",
    b"a\x01b",
    b"c\rd",
]
SERVICES = [b"imap", b"imap", b"pop3", b"lmtp", b"submission"]
ODD_SERVICES = [b"", b"sm\xc3\xa9", b"x\ty", b"im/ap"]
ODD_PIDS = [b"0", b"007", b"2147483647", b"2147483648", b"999999999", b"1000000000", b"", b"12a", b"-1"]
ODD_PIDS += ["\u0661".encode(), b"1" * 700, b" 5", b"+5"]
ODD_REFS = [b"0", b"2", b"01", b"1025", b"", b"x", b"3"]
HUGE_REFS = [
    b"4294967295",
    b"4294967296",
    b"999999999",
    b"1000000000",
]  # `who -1` would print each that often
GUID_CHARS = "0123456789abcdef"


def _pick(rng: random.Random, usual: Sequence[bytes], odd: Sequence[bytes], p_odd: float) -> bytes:
    return rng.choice(odd) if rng.random() < p_odd else rng.choice(usual)


def _pid(rng: random.Random, p_odd: float) -> bytes:
    return rng.choice(ODD_PIDS) if rng.random() < p_odd else b"%d" % rng.randrange(1, 4_000_000)


def v1_line(rng: random.Random, odd: float, refcounts: Sequence[bytes] = ODD_REFS) -> bytes:
    """A 2.3 line ``service/ip/user\\tpid\\trefcount`` or one of its odd variants."""
    service = _pick(rng, SERVICES, ODD_SERVICES, odd)
    user = _pick(rng, USERS, ODD_USERS, odd)
    ip = _pick(rng, GOOD_IPS, ODD_IPS, odd)
    no_ip = service == b"lmtp" or rng.random() < odd
    ident = [service, user] if no_ip else [service, ip, user]
    fields = [b"/".join(ident), _pid(rng, odd), _pick(rng, [b"1"], refcounts, odd / 2 + 0.02)]
    kind = rng.random()
    if kind < odd / 4:
        fields.append(rng.choice([b"extra", b"", b"x\ty"]))
    elif kind < odd / 2:
        fields = fields[: rng.randrange(0, 3)]
    elif kind < odd * 0.6:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(12))).replace(b"\n", b"")
    return join_tabescaped(fields)


def _guid(rng: random.Random, odd: float) -> bytes:
    guid = "".join(rng.choice(GUID_CHARS) for _ in range(32))
    if rng.random() < odd:
        guid = rng.choice(
            [guid.upper(), guid[:31], guid + "0", guid[:30] + "g0", guid[:15] + " " + guid[16:], ""]
        )
    return guid.encode()


def v2_line(rng: random.Random, odd: float, n_alt: int) -> bytes:
    """A 2.4 line ``pid user service ip guid dest_ip [alt...]`` or one of its odd variants."""
    ip = b"" if rng.random() < 0.1 else _pick(rng, GOOD_IPS, ODD_IPS[:1], odd)
    dest = b"" if rng.random() < 0.8 else _pick(rng, GOOD_IPS, ODD_IPS[:1], odd)
    fields = [
        _pid(rng, odd / 8),
        _pick(rng, USERS, ODD_USERS, odd),
        _pick(rng, SERVICES, ODD_SERVICES, odd),
        ip if rng.random() >= odd / 8 else rng.choice(ODD_IPS),
        _guid(rng, odd / 8),
        dest if rng.random() >= odd / 8 else rng.choice(ODD_IPS),
    ]
    n_values = rng.randrange(0, n_alt + 1)
    if rng.random() < odd / 2:
        n_values = n_alt + rng.randrange(1, 3)  # more than the header names
    fields += [rng.choice([b"", b"alias1", b"a\xc3\xa9", b"acct-1", b"x\ty"]) for _ in range(n_values)]
    if rng.random() < odd / 16:
        fields = fields[: rng.randrange(0, 6)]
    return join_tabescaped(fields)


def random_dump(
    seed: int, protocol: int, refcounts: Sequence[bytes] = ODD_REFS + HUGE_REFS
) -> tuple[tuple[str, ...], list[list[bytes]]]:
    """(alt fields, blocks of lines) of a random dump: mostly plain lines, now and then odd ones."""
    rng = random.Random(seed)
    odd = rng.choice([0.0, 0.01, 0.05, 0.2, 0.6])
    n_alt = rng.randrange(0, 3) if protocol == 2 else 0
    alt_fields = tuple(f"f{i}" for i in range(n_alt))
    n = rng.choice([0, 1, 5, 40, 150, 400])
    if protocol == 1:
        lines = [v1_line(rng, odd, refcounts) for _ in range(n)]
    else:
        lines = [v2_line(rng, odd, n_alt) for _ in range(n)]
    lines = [line for line in lines if line]  # an empty line ends a dump
    blocks: list[list[bytes]] = []
    while lines:
        size = rng.choice([1, 2, SMALL, SMALL + 1, 100, 1000])
        blocks.append(lines[:size])
        lines = lines[size:]
    return alt_fields, blocks


def _plain_v1(rng: random.Random, i: int) -> list[bytes]:
    user = rng.choice(USERS)
    service = rng.choice(SERVICES)
    ident = [service, user] if service == b"lmtp" else [service, rng.choice(GOOD_IPS), user]
    return [b"/".join(ident), b"%d" % (100 + i), b"1"]


def _plain_v2(rng: random.Random, i: int) -> list[bytes]:
    guid = "".join(rng.choice(GUID_CHARS) for _ in range(32)).encode()
    ip = rng.choice([b"", *GOOD_IPS])
    return [b"%d" % (100 + i), rng.choice(USERS), rng.choice(SERVICES), ip, guid, b"", b"alias"]


def _anomalies(protocol: int) -> list[tuple[int, bytes | None]]:
    """(field index, replacement) pairs; None as the value drops the field, index -1 adds one."""
    if protocol == 1:
        return [
            *((1, pid) for pid in ODD_PIDS),
            *((2, refcount) for refcount in ODD_REFS + HUGE_REFS),
            *((0, b"imap/" + ip + b"/u") for ip in ODD_IPS),
            *((0, b"imap/10.0.0.1/" + user) for user in ODD_USERS),
            *((0, service + b"/u") for service in ODD_SERVICES),
            (0, b"noslash"),
            (0, b"a/b/c/d"),
            (2, None),
            (-1, b"extra"),
        ]
    guids = [b"0" * 31, b"0" * 33, b"0" * 30 + b"g0", b"0" * 15 + b" " + b"0" * 16, b"", b"A" * 32]
    return [
        *((0, pid) for pid in ODD_PIDS),
        *((1, user) for user in ODD_USERS),
        *((2, service) for service in ODD_SERVICES),
        *((3, ip) for ip in ODD_IPS),
        *((4, guid) for guid in guids),
        *((5, ip) for ip in ODD_IPS),
        (6, None),
        (5, None),
        (-1, b"extra"),
    ]


# Two odd lines whose lengths make up for each other, against checks on a joined column's length.
PAIRS = {
    1: [((2, b""), (2, b"01")), ((2, b"11"), (2, b""))],
    2: [((4, b"0" * 31), (4, b"0" * 33)), ((4, b"0" * 30), (4, b"0" * 34))],
}


def anomaly_dumps(protocol: int) -> Iterator[tuple[str, tuple[str, ...], list[list[bytes]]]]:
    """Plain dumps with one odd line (or a pair) each: every odd case on its own, in a bulk-sized block."""
    rng = random.Random(protocol)
    plain = _plain_v1 if protocol == 1 else _plain_v2
    alt_fields = ("f0",) if protocol == 2 else ()
    for changes in [[change] for change in _anomalies(protocol)] + PAIRS[protocol]:
        lines = [plain(rng, i) for i in range(300)]
        for index, value in changes:
            odd = lines[rng.randrange(len(lines))]
            if index == -1:
                odd.append(value or b"")
            elif value is None:
                del odd[index:]
            else:
                odd[index] = value
        yield f"changes {changes!r}", alt_fields, [[join_tabescaped(fields) for fields in lines]]


# -- the reference: record by record, as ConnectDump iterates ----------------------------------------------


def normalized(protocol: int, n_alt: int, piece: Any) -> list[tuple[Any, ...]]:
    """A piece's sessions as comparable tuples (the text of every value who shows)."""
    if isinstance(piece, V1Columns):
        refcounts = dict(piece.odd_refcounts)
        return [
            (piece.services[i], piece.ips[i], piece.users[i], piece.pids[i], refcounts.get(i, 1))
            for i in range(len(piece.users))
        ]
    if isinstance(piece, V2Columns):
        return [
            (piece.pids[i], piece.users[i], piece.services[i], piece.ips[i], piece.dest_ips[i], *alts)
            for i in range(len(piece.users))
            for alts in [[column[i] for column in piece.alts]]
        ]
    assert isinstance(piece, list) and piece
    if protocol == 1:
        return [(s.service, s.ip, s.username, str(s.pid), s.refcount) for s in piece]
    return [
        (str(s.pid), s.username, s.service, s.ip, s.dest_ip, *(s.alt + ("",) * n_alt)[:n_alt]) for s in piece
    ]


def collect(protocol: int, n_alt: int, pieces: Iterator[Any]) -> tuple[list[tuple[Any, ...]], str | None]:
    sessions: list[tuple[Any, ...]] = []
    try:
        for piece in pieces:
            sessions += normalized(protocol, n_alt, piece)
    except AnvilProtocolError as e:
        return sessions, str(e)
    return sessions, None


def render(headers: Sequence[Header], rows: Any, protocol: int, printer: str = "table") -> str:
    out = io.StringIO()
    if printer == "table":
        TableFormatter(out, generation=protocol, width=80).write(headers, rows)
    else:
        TabFormatter(out, generation=protocol).write(headers, rows)
    return out.getvalue()


# -- the parser ---------------------------------------------------------------------------------------------


def all_dumps(protocol: int) -> Iterator[tuple[str, tuple[str, ...], list[list[bytes]]]]:
    yield from anomaly_dumps(protocol)
    for seed in SEEDS:
        yield f"seed {seed}", *random_dump(seed, protocol)


@pytest.mark.parametrize("protocol", [1, 2])
def test_bulk_pieces_are_the_reference_sessions(protocol: int) -> None:
    bulk_pieces = 0
    for seed, alt_fields, blocks in all_dumps(protocol):
        n_alt = len(alt_fields)
        reference_dump = FakeDump(protocol, alt_fields, blocks)
        want = collect(protocol, n_alt, _guarded(reference_dump))
        bulk_dump = FakeDump(protocol, alt_fields, blocks)
        pieces = list(_until_error(bulk_dump.pieces()))
        bulk_pieces += sum(isinstance(p, (V1Columns, V2Columns)) for p in pieces)
        got = collect(protocol, n_alt, _replay(pieces))
        assert got == want, seed
        assert bulk_dump.invalid == reference_dump.invalid, seed
    assert bulk_pieces > len(SEEDS) // 2  # the bulk path itself was exercised, not only the fallback


def _guarded(dump: FakeDump) -> Iterator[list[Any]]:
    for record in dump:
        yield [record]


def _until_error(pieces: Iterator[Any]) -> Iterator[Any]:
    """The pieces, and the error (as a last item) if the dump ends with one."""
    try:
        yield from pieces
    except AnvilProtocolError as e:
        yield e


def _replay(pieces: list[Any]) -> Iterator[Any]:
    for piece in pieces:
        if isinstance(piece, AnvilProtocolError):
            raise piece
        yield piece


@pytest.mark.parametrize("protocol", [1, 2])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_bulk_parser_agrees_on_arbitrary_lines(protocol: int, data: st.DataObject) -> None:
    """Arbitrary bytes, alone or among plain lines, in blocks of any size."""
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    noise = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"") or b"x")
    plain = (lambda: v1_line(rng, 0.0)) if protocol == 1 else (lambda: v2_line(rng, 0.0, 1))
    lines = [
        data.draw(noise) if data.draw(st.booleans()) else plain()
        for _ in range(data.draw(st.integers(0, 80)))
    ]
    size = data.draw(st.integers(1, 90))
    blocks = [lines[i : i + size] for i in range(0, len(lines), size)]
    alt_fields = ("f0",) if protocol == 2 else ()
    reference_dump = FakeDump(protocol, alt_fields, blocks)
    want = collect(protocol, len(alt_fields), _guarded(reference_dump))
    bulk_dump = FakeDump(protocol, alt_fields, blocks)
    got = collect(protocol, len(alt_fields), bulk_dump.pieces())
    assert got == want
    assert bulk_dump.invalid == reference_dump.invalid


def test_plain_blocks_take_the_bulk_path() -> None:
    """No-IP lines, odd refcounts and short alt lists are bulk cases, not fallbacks."""
    v1 = [
        b"imap/10.0.0.1/alice\t100\t1",
        b"lmtp/bob\t101\t1",
        b"pop3/::1/carol\t102\t2",
        b"imap/1.2/d\t103\t0",
    ]
    (piece,) = BulkParser(1).pieces([v1])
    assert isinstance(piece, V1Columns)
    assert piece.users == ["alice", "bob", "carol", "d"] and piece.ips == ["10.0.0.1", "", "::1", "1.2"]
    assert piece.odd_refcounts == [(2, 2), (3, 0)]
    guid = b"0123456789abcdef0123456789ABCDEF"
    v2 = [b"5\tu\timap\t10.0.0.1\t" + guid + b"\t\ta1", b"6\tv\tlmtp\t\t" + guid + b"\t10.0.0.2"]
    (piece,) = BulkParser(2, n_alt=2).pieces([v2])
    assert isinstance(piece, V2Columns)
    assert [list(c) for c in piece.alts] == [["a1", ""], ["", ""]] and list(piece.dest_ips) == [
        "",
        "10.0.0.2",
    ]


def test_an_odd_line_costs_only_its_own_small_part() -> None:
    """One escaped line among many: the rest still comes in bulk pieces, in order."""
    lines = [b"imap/10.0.0.1/u%d\t%d\t1" % (i, 100 + i) for i in range(1000)]
    lines[600] = b"imap/10.0.0.1/a\x01tb\t700\t1"
    pieces = list(BulkParser(1).pieces([lines]))
    records = [p for p in pieces if isinstance(p, list)]
    assert sum(len(p) for p in records) <= SMALL
    users = [u for p in pieces for u in (p.users if isinstance(p, V1Columns) else [s.username for s in p])]
    assert users[600] == "a\tb" and users[:600] + users[601:] == [f"u{i}" for i in range(1000) if i != 600]


# -- who and who -1 -----------------------------------------------------------------------------------------

MASKS = [[], ["*"], ["user1*"], ["ALICE", "bob@example.com"], ["?"], ["10.0.0.0/8"], ["2001:db8::/32"]]
MASKS += [["::ffff:10.0.0.0/104"], ["u*", "10.0.0.0/8"], ["j*"], ["*", "fe80::/10"]]


@pytest.mark.parametrize("protocol", [1, 2])
def test_who_output_is_the_reference_output(protocol: int) -> None:
    headers = AGGREGATED_V1 if protocol == 1 else AGGREGATED_V2
    for n, (seed, alt_fields, blocks) in enumerate(all_dumps(protocol)):
        for masks in ([], MASKS[n % len(MASKS)]):
            filter_ = parse_masks(masks)
            guard = DumpGuard(FakeDump(protocol, alt_fields, blocks))
            rows = list(reference_aggregate(protocol, guard, filter_))
            want = [render(headers, rows, protocol), str(guard.error)]
            _, got_rows, guard = aggregated(FakeDump(protocol, alt_fields, blocks), filter_)
            assert isinstance(got_rows, ColumnBlocks)
            got = [render(headers, got_rows, protocol), str(guard.error)]
            assert got == want, f"{seed}, masks {masks}"


@pytest.mark.parametrize("protocol", [1, 2])
def test_who_1_output_is_the_reference_output(protocol: int) -> None:
    for n, (seed, alt_fields, blocks) in enumerate(all_dumps(protocol)):
        if protocol == 1:  # a refcount of 10^9 is 10^9 rows: see test_who_1_streams_a_huge_refcount...
            blocks = [[line for line in block if _few_rows(line)] for block in blocks]
        for masks in ([], MASKS[n % len(MASKS)]):
            field = "f0" if protocol == 2 and n % 3 == 0 else None
            printer = "tab" if n % 5 == 0 else "table"
            want = _reference_who_1(protocol, alt_fields, blocks, parse_masks(masks), field, printer)
            dump = FakeDump(protocol, alt_fields, blocks)
            headers, rows, guard = separate(dump, parse_masks(masks), field)
            got = [render(headers, rows, protocol, printer), str(guard.error), dump.invalid]
            assert got == want, f"{seed}, masks {masks}, -f {field}"


def _reference_who_1(
    protocol: int,
    alt_fields: tuple[str, ...],
    blocks: list[list[bytes]],
    filter_: Filter,
    field: str | None,
    printer: str,
) -> list[Any]:
    """``who -1`` as it was before the bulk path: records, select_sessions, separate_rows."""
    dump = FakeDump(protocol, alt_fields, blocks)
    guard = DumpGuard(dump)
    headers = separate_headers(protocol, alt_fields)
    if field is not None and filter_.user_masks and field not in alt_fields:
        rows: Any = []
    else:
        alt_index = alt_fields.index(field) if field is not None and filter_.user_masks else None
        rows = list(separate_rows(protocol, select_sessions(guard, filter_, alt_index), len(alt_fields)))
    return [render(headers, rows, protocol, printer), str(guard.error), dump.invalid]


def _few_rows(line: bytes) -> bool:
    try:
        return parse_v1_line(line).refcount <= 5000
    except AnvilProtocolError:
        return True


def test_who_1_streams_a_huge_refcount_in_small_blocks() -> None:
    lines = [b"imap/10.0.0.1/a\t100\t1", b"imap/10.0.0.2/b\t101\t100000", b"pop3/c\t102\t2"] * 3
    dump = FakeDump(1, (), [lines])
    _, rows, _ = separate(dump, Filter())
    assert isinstance(rows, ColumnBlocks)
    sizes = [len(columns[0]) for columns in rows.blocks]
    assert max(sizes) <= 4096 and sum(sizes) == 3 * (1 + 100000 + 2)
    reference = list(separate_rows(1, FakeDump(1, (), [lines]), 0))
    dump = FakeDump(1, (), [lines])
    assert list(separate(dump, Filter())[1]) == reference


def test_nameless_sessions_group_by_the_ip_shown() -> None:
    """2.3 shows an invalid IP as none: nameless sessions with invalid or no IPs are one group."""
    lines = [b"imap/999.1.1.1/\t10\t1", b"imap/abc/\t11\t2", b"imap//\t12\t1", b"imap/10.0.0.1/\t13\t1"]
    lines += [b"pop3/abc/\t14\t1", b"imap/10.0.0.1/x\t15\t1"] * 40  # past SMALL: a bulk block
    guard = DumpGuard(FakeDump(1, (), [lines]))
    want = list(reference_aggregate(1, guard, Filter()))
    assert want[0] == ("", "4", "imap", "(10 11 12)", "()")
    groups = Groups()
    for piece in FakeDump(1, (), [lines]).pieces():
        refcounts = dict(piece.odd_refcounts)
        sessions = [refcounts.get(row, 1) for row in range(len(piece.users))]
        groups.add_columns(piece.users, piece.services, piece.pids, piece.ips, sessions)
    assert [row for columns in groups.rows(Filter()) for row in zip(*columns, strict=True)] == want


class Session:
    def __init__(self, user: str, service: str, pid: int, ip: str, refcount: int = 1) -> None:
        self.username, self.service, self.pid, self.ip, self.refcount = user, service, pid, ip, refcount


def test_groups_of_two_sessions() -> None:
    """Every pair of (pid, IP) a two-session group can have, some without IP."""
    sessions = [
        Session(f"u{pid_a}{pid_b}{ip_a}{ip_b}", "imap", pid, ip)
        for pid_a in (1, 2)
        for pid_b in (1, 2)
        for ip_a in ("", "10.0.0.1", "::1")
        for ip_b in ("", "10.0.0.1", "::1")
        for pid, ip in ((pid_a, ip_a), (pid_b, ip_b))
    ]
    groups = Groups()
    columns = [[getattr(s, name) for s in sessions] for name in ("username", "service", "pid", "ip")]
    groups.add_columns(columns[0], columns[1], [str(p) for p in columns[2]], columns[3])
    want = list(reference_aggregate(2, sessions, Filter()))
    assert [row for columns in groups.rows(Filter()) for row in zip(*columns, strict=True)] == want


def test_groups_keep_first_seen_order_of_many_pids_and_ips() -> None:
    """A group with many sessions (past the pair fast path), repeats, pid 0, 10-digit pids, no IP."""
    rng = random.Random(7)
    sessions = []
    for i in range(300):
        pid = rng.choice([0, 1, 2, 2147483647, 1000 + i % 17])
        ip = rng.choice(["", "10.0.0.1", "::1", f"10.1.0.{i % 9}"])
        user = rng.choice(["a", "b", ""])
        sessions.append((user, rng.choice(["imap", "pop3"]), pid, ip, rng.choice([0, 1, 1, 2])))
    groups = Groups()
    for start in range(0, len(sessions), 37):
        part = sessions[start : start + 37]
        users, services, pids, ips, refcounts = map(list, zip(*part, strict=True))
        groups.add_columns(users, services, [str(p) for p in pids], ips, refcounts)

    want = list(reference_aggregate(1, [Session(*s) for s in sessions], Filter()))
    got = [row for columns in groups.rows(Filter()) for row in zip(*columns, strict=True)]
    assert got == want


# -- the table printer's column path ------------------------------------------------------------------------


@pytest.mark.parametrize("generation", [1, 2])
def test_table_prints_column_blocks_like_rows(generation: int) -> None:
    rng = random.Random(generation)
    headers = [
        Header("a", "a", expand=True),
        Header("n", "#", right=True),
        Header("c", "c"),
        Header("d", "d"),
    ]
    values = ["", "x", "alice", "a much longer value than the others", "ü", "-", "%s"]
    for _ in range(60):
        sizes = [rng.choice([0, 1, 3, 50, 99, 100, 101, 250]) for _ in range(rng.randrange(0, 5))]
        blocks = [[[rng.choice(values) for _ in range(size)] for _ in headers] for size in sizes]
        rows = [row for block in blocks for row in zip(*block, strict=True)]
        buffer_rows = rng.choice([1, 7, 100])
        hide = rng.random() < 0.2
        width = rng.choice([30, 80])
        texts = []
        for given_rows in (rows, ColumnBlocks(blocks)):
            out = io.StringIO()
            formatter = TableFormatter(
                out,
                generation=generation,
                buffer_rows=buffer_rows,
                width=width,
                hide_titles=hide,
            )
            formatter.write(headers, given_rows)
            texts.append(out.getvalue())
        assert texts[0] == texts[1]


def test_column_blocks_are_rows_for_every_printer() -> None:
    blocks = [[["a", "b"], ["1", "2"]], [[], []], [["c"] * 1100, ["3"] * 1100]]
    rows = ColumnBlocks(blocks)
    want = [("a", "1"), ("b", "2")] + [("c", "3")] * 1100
    assert list(rows) == want
    assert [row for batch in batched(rows) for row in batch] == want
    assert max(len(batch) for batch in batched(ColumnBlocks(blocks))) <= 512


def test_groups_with_ips_a_text_cannot_hold() -> None:
    """A space in an IP's scope (or a TAB or LF from an escaped dump) keeps the group out of text form,
    so the IPs stay apart: ``fe80::1%a b`` then ``b`` is two IPs, not one seen twice."""
    ips = ["fe80::1%a b", "b", "fe80::1%a", "10.0.0.1", "x\ty", "c\nd", "", "b"]
    sessions = [Session(user, "imap", 100 + i % 3, ip) for i, ip in enumerate(ips) for user in ("u", "v")]
    want = list(reference_aggregate(2, sessions, Filter()))
    for by_columns in (True, False):
        groups = Groups()
        if by_columns:
            for start in range(0, len(sessions), 3):
                part = sessions[start : start + 3]
                columns = [[getattr(s, name) for s in part] for name in ("username", "service", "pid", "ip")]
                if any("\t" in ip or "\n" in ip for ip in columns[3]):  # bulk parsing never gives these
                    for s in part:
                        groups.add(s.username, s.service, str(s.pid), s.ip)
                    continue
                groups.add_columns(columns[0], columns[1], [str(p) for p in columns[2]], columns[3])
        else:
            for s in sessions:
                groups.add(s.username, s.service, str(s.pid), s.ip)
        assert [row for columns in groups.rows(Filter()) for row in zip(*columns, strict=True)] == want


def test_groups_tell_a_pid_or_ip_from_a_part_of_another() -> None:
    """A pid or IP that is a substring of one already listed (12 in 112, 10.0.0.1 in 10.0.0.12) is new."""
    pids = [112, 12, 1, 12, 2112]
    ips = ["10.0.0.12", "10.0.0.1", "0.0.1", "10.0.0.1", "::1"]
    sessions = [Session("u", "imap", pid, ip) for pid, ip in zip(pids, ips, strict=True)]
    groups = Groups()
    for s in sessions:  # one session per block: every later one is merged into the group's text
        groups.add_columns([s.username], [s.service], [str(s.pid)], [s.ip])
    got = [row for columns in groups.rows(Filter()) for row in zip(*columns, strict=True)]
    assert got == list(reference_aggregate(2, sessions, Filter()))
    assert got == [("u", "5", "imap", "(112 12 1 2112)", "(10.0.0.12 10.0.0.1 0.0.1 ::1)")]
