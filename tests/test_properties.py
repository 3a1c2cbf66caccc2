"""Property tests for what anvil data and user input can throw at dvadm's parsers.

Already covered elsewhere, so not repeated here: tab escaping round trips for any bytes and the split of a
joined list (tests/test_anvil_escape.py), the wildcard matcher against a reference glob over a small
alphabet and ``Network.contains`` against :mod:`ipaddress` including IPv4-mapped clients
(tests/test_masks.py). Added here: whole dump records round-trip through escaping for any field bytes;
the record parsers and :class:`ConnectDump` fail only with the project's own errors on arbitrary bytes;
mask classification never fails with anything but a usage error; and the wildcard matcher agrees with
the reference over every byte value and stays fast on pathological masks.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from reference_glob import as_bytes, reference_match

from doveadm_py.anvil import (
    AnvilError,
    AnvilProtocolError,
    parse_penalty_line,
    parse_v1_line,
    parse_v2_line,
)
from doveadm_py.anvil.bulk import BulkParser
from doveadm_py.anvil.connection import Connection
from doveadm_py.anvil.dump import ConnectDump
from doveadm_py.anvil.escape import join_tabescaped, tabescape
from doveadm_py.anvil.records import ENCODING, ERRORS, REFCOUNT_MAX, is_valid_ip
from doveadm_py.errors import UsageError
from doveadm_py.masks import parse_masks, parse_net_range
from doveadm_py.wildcard import compile_user_masks, wildcard_match_icase

PROPERTY = settings(max_examples=300, deadline=None)
SLOW_PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PID_MAX = 2**31 - 1
IPS = ["", "10.0.0.1", "192.0.2.255", "::1", "2001:db8::5", "::ffff:10.1.2.3", "fe80::1%eth0", "1.2"]
GUIDS = st.binary(min_size=16, max_size=16).map(bytes.hex)


def text(raw: bytes) -> str:
    return raw.decode(ENCODING, ERRORS)


# -- records round-trip through Dovecot's escaping ------------------------------------------------------


@PROPERTY
@given(
    pid=st.integers(0, PID_MAX),
    user=st.binary(max_size=40),
    service=st.binary(max_size=12),
    ip=st.sampled_from(IPS),
    guid=GUIDS,
    upper=st.booleans(),
    dest_ip=st.sampled_from(IPS),
    alts=st.lists(st.binary(max_size=10), max_size=4),
    extra_header=st.integers(0, 2),
)
def test_v2_record_round_trips_any_field_bytes(
    pid: int,
    user: bytes,
    service: bytes,
    ip: str,
    guid: str,
    upper: bool,
    dest_ip: str,
    alts: list[bytes],
    extra_header: int,
) -> None:
    wire_guid = guid.upper() if upper else guid
    fields = [b"%d" % pid, user, service, ip.encode(), wire_guid.encode(), dest_ip.encode(), *alts]
    line = join_tabescaped(fields)
    assert b"\n" not in line and b"\r" not in line
    n_alt = len(alts) + extra_header  # the header may name more fields than this session uses
    record = parse_v2_line(line, n_alt)
    assert record == (pid, text(user), text(service), ip, guid, dest_ip, tuple(text(a) for a in alts))
    # A header shorter than the values: the extra values are dropped, never an error.
    assert parse_v2_line(line, 1).alt == tuple(text(a) for a in alts[:1])


@PROPERTY
@given(
    service=st.binary(max_size=10).filter(lambda s: b"/" not in s),
    ip=st.sampled_from([ip for ip in IPS if ip and "%" not in ip]),
    user=st.binary(max_size=40),
    pid=st.integers(0, PID_MAX),
    refcount=st.integers(0, REFCOUNT_MAX),
)
def test_v1_record_round_trips_any_username_after_an_ip(
    service: bytes, ip: str, user: bytes, pid: int, refcount: int
) -> None:
    ident = service + b"/" + ip.encode() + b"/" + user  # the username may contain '/' after an IP
    line = b"%s\t%d\t%d" % (tabescape(ident), pid, refcount)
    assert parse_v1_line(line) == (text(service), ip, text(user), pid, refcount)


@PROPERTY
@given(refcount=st.integers(REFCOUNT_MAX + 1, 2**32 - 1) | st.sampled_from([REFCOUNT_MAX + 1, 2**32 - 1]))
def test_huge_v1_refcounts_are_bad_data_to_both_parsers(refcount: int) -> None:
    """A 37-byte line must not become 4 billion ``who -1`` rows: line and bulk parser agree it is invalid."""
    bad = b"imap/10.0.0.1/u\t7\t%d" % refcount
    with pytest.raises(AnvilProtocolError, match="Invalid input"):
        parse_v1_line(bad)
    lines = [b"imap/10.0.0.1/u\t7\t1", b"imap/10.0.0.1/u\t7\t%d" % REFCOUNT_MAX] * 40
    lines[50:50] = [bad]
    invalid: list[bytes] = []
    pieces = BulkParser(1, on_invalid=invalid.append).block(lines)
    rows = sum(len(p) if isinstance(p, list) else len(p.users) for p in pieces)
    assert invalid == [bad] and rows == 80


@PROPERTY
@given(user=st.binary(max_size=40).filter(lambda u: b"/" not in u), pid=st.integers(0, PID_MAX))
def test_v1_record_without_ip_keeps_a_slashless_username(user: bytes, pid: int) -> None:
    line = b"%s\t%d\t1" % (tabescape(b"lmtp/" + user), pid)
    assert parse_v1_line(line) == ("lmtp", "", text(user), pid, 1)


# -- the parsers on arbitrary bytes: a record that keeps its invariants, or AnvilProtocolError ----------

IDENTS = st.builds(
    lambda a, b, c: a + b"/" + b + b"/" + c,
    st.binary(max_size=4),
    st.sampled_from([ip.encode() for ip in IPS]) | st.binary(max_size=6),
    st.binary(max_size=6),
)
FIELD = st.one_of(
    st.binary(max_size=12),
    st.integers(-5, 2**40).map(lambda n: b"%d" % n),
    st.builds(lambda zeros, n: b"0" * zeros + b"7" * n, st.integers(0, 700), st.integers(0, 5000)),  # long
    GUIDS.map(str.encode),
    st.sampled_from([*(ip.encode() for ip in IPS), b"", b"\x01", b"\x01t", b"0x10", b"\xd9\xa3", b"1e3"]),
    IDENTS,
)
VALID_V1 = st.builds(
    lambda ident, pid, ref: b"%s\t%d\t%d" % (tabescape(ident), pid, ref),
    IDENTS,
    st.integers(0, 99999),
    st.integers(1, 3),
)
VALID_V2 = st.builds(
    lambda pid, user, ip, guid, alts: join_tabescaped(
        [b"%d" % pid, user, b"imap", ip, guid.encode(), b"", *alts]
    ),
    st.integers(0, 99999),
    st.binary(max_size=8),
    st.sampled_from([ip.encode() for ip in IPS]),
    GUIDS,
    st.lists(st.binary(max_size=4), max_size=2),
)
LINES = st.one_of(st.binary(max_size=200), st.lists(FIELD, max_size=9).map(b"\t".join), VALID_V1, VALID_V2)


@PROPERTY
@given(line=LINES, n_alt=st.integers(0, 5))
def test_dump_parsers_fail_only_with_anvil_protocol_error(line: bytes, n_alt: int) -> None:
    try:
        v1 = parse_v1_line(line)
    except AnvilProtocolError as err:
        assert "Invalid input" in str(err)
    else:
        assert 0 <= v1.pid <= PID_MAX and 0 <= v1.refcount <= REFCOUNT_MAX
        assert v1.ip == "" or is_valid_ip(v1.ip)
        assert "/" not in v1.service
    try:
        v2 = parse_v2_line(line, n_alt)
    except AnvilProtocolError as err:
        assert "Invalid input" in str(err)
    else:
        assert 0 <= v2.pid <= PID_MAX
        assert len(v2.guid) == 32 and v2.guid == v2.guid.lower() and int(v2.guid, 16) >= 0
        assert v2.ip == "" or is_valid_ip(v2.ip)
        assert v2.dest_ip == "" or is_valid_ip(v2.dest_ip)
        assert len(v2.alt) <= n_alt
    try:
        penalty = parse_penalty_line(line)
    except AnvilProtocolError as err:
        assert "Read invalid penalty line" in str(err)
    else:
        assert penalty.penalty >= 0 and penalty.last_penalty >= 0 and penalty.last_update >= 0


@pytest.mark.parametrize("digits", [b"1" * 5000, b"0" * 4999 + b"1", b"9" * 700])
def test_huge_numbers_are_invalid_lines_not_crashes(digits: bytes) -> None:
    """int() refuses digit strings over sys.int_max_str_digits (ValueError): never let one escape."""
    guid = b"a" * 32
    for line in (b"imap/10.0.0.1/u\t" + digits + b"\t1", b"imap/10.0.0.1/u\t1\t" + digits):
        with pytest.raises(AnvilProtocolError):
            parse_v1_line(line)
    with pytest.raises(AnvilProtocolError):
        parse_v2_line(digits + b"\tu\timap\t\t" + guid + b"\t", 0)
    with pytest.raises(AnvilProtocolError):
        parse_penalty_line(b"10.0.0.1\t" + digits + b"\t1\t1")
    with pytest.raises(AnvilProtocolError):
        parse_penalty_line(b"10.0.0.1\t1\t1\t" + digits)


# -- ConnectDump over arbitrary byte streams ------------------------------------------------------------

STREAMS = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.one_of(LINES, st.just(b""), st.just(b"user_alias")), max_size=12).map(b"\n".join),
    st.lists(LINES, max_size=8).map(lambda lines: b"\n".join(lines) + b"\n\n"),  # terminated
    st.builds(  # a 2.4 reply: header, mostly valid records, terminator
        lambda header, lines: header + b"\n" + b"".join(line + b"\n" for line in lines) + b"\n",
        st.sampled_from([b"", b"user_alias", b"a\tb\x01t"]),
        st.lists(st.one_of(VALID_V2, VALID_V2, VALID_V2, LINES), max_size=6),
    ),
)


def feed(data: bytes, protocol: int) -> tuple[list[object], list[bytes], ConnectDump]:
    """Serve ``data`` (then EOF) over a socketpair to a ConnectDump; its records and invalid lines."""
    ours, theirs = socket.socketpair()
    writer = threading.Thread(target=lambda: (theirs.sendall(data), theirs.shutdown(socket.SHUT_WR)))
    writer.start()
    invalid: list[bytes] = []
    records: list[object] = []
    try:
        dump = ConnectDump(
            Connection(ours, "sockpair", None), protocol, timeout=2.0, on_invalid=invalid.append
        )
        records.extend(dump)
    finally:
        ours.close()
        writer.join(10)
        theirs.close()
    return records, invalid, dump


def split_reply(data: bytes, header: bool) -> tuple[list[bytes], bool, bytes]:
    """The record lines before the terminator, whether it came, and any cut-off last line."""
    *complete, partial = data.split(b"\n")
    if header:
        if not complete:
            return [], False, partial
        complete = complete[1:]
    if b"" in complete:
        return complete[: complete.index(b"")], True, b""
    return complete, False, partial


@SLOW_PROPERTY
@given(data=STREAMS, protocol=st.sampled_from([1, 2]))
def test_connect_dump_on_any_stream_raises_only_anvil_error(data: bytes, protocol: int) -> None:
    lines, terminated, cut = split_reply(data, header=protocol == 2)
    start = time.monotonic()
    try:
        records, invalid, dump = feed(data, protocol)
    except AnvilError as err:
        assert "sockpair" in str(err)  # every failure names the socket
        assert not terminated or protocol == 2  # 2.3 only fails on a cut line (invalid lines are skipped)
    else:
        assert dump.complete is terminated and not cut
        if protocol == 2:
            assert terminated and len(records) == len(lines) and invalid == []
        else:
            assert len(records) + len(invalid) == len(lines) == len(records) + dump.invalid_lines
    assert time.monotonic() - start < 5  # EOF is always noticed: never a wait for the timeout


@SLOW_PROPERTY
@given(data=STREAMS)
def test_v1_dump_records_are_exactly_the_valid_lines(data: bytes) -> None:
    lines, terminated, cut = split_reply(data, header=False)
    assume(not cut)
    records, invalid, dump = feed(data, 1)
    assert dump.complete is terminated
    expected_valid, expected_invalid = [], []
    for line in lines:
        try:
            expected_valid.append(parse_v1_line(line))
        except AnvilProtocolError:
            expected_invalid.append(line)
    assert records == expected_valid and invalid == expected_invalid


# -- masks: classification never fails with anything but a usage error ----------------------------------

ARGS = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="0123456789abcdefx.:/[]*?", max_size=24),
    st.sampled_from(["10.0.0.0/8", "::1/64", "1.2", "0x7f.1/8", "10.0.0.0/0", "/0", "", "12345", "::g/64"]),
)


@PROPERTY
@given(args=st.lists(ARGS, max_size=4))
def test_parse_masks_classifies_or_refuses(args: list[str]) -> None:
    try:
        result = parse_masks(args)
    except UsageError as err:
        assert err.exit_code == 64 and err.message and "\n" not in err.message.strip("\n")
        return
    assert all(args), "an empty mask must be refused"
    for mask in result.user_masks:
        assert mask in args
    networks = [a for a in args if not (a.isascii() and a.isdigit()) and parse_net_range(a) is not None]
    assert len(result.user_masks) + len(networks) == len(args)
    if result.network is not None:
        assert result.network.bits > 0
        assert result.network in [parse_net_range(a) for a in networks]


# -- wildcards over every byte value, and pathological masks -----------------------------------------------

ANY_BYTES_NAME = st.binary(max_size=12).map(text)
ANY_BYTES_MASK = st.lists(
    st.one_of(st.binary(max_size=3), st.sampled_from([b"*", b"?", b"**"])), max_size=5
).map(lambda parts: text(b"".join(parts)))


@PROPERTY
@given(name=ANY_BYTES_NAME, mask=ANY_BYTES_MASK, other=ANY_BYTES_MASK)
def test_wildcard_agrees_with_reference_on_every_byte(name: str, mask: str, other: str) -> None:
    expected = reference_match(as_bytes(name), as_bytes(mask))
    assert wildcard_match_icase(name, mask) is expected
    either = expected or reference_match(as_bytes(name), as_bytes(other))
    assert compile_user_masks([mask, other])(name) is either


@settings(max_examples=80, deadline=None)
@given(
    mask=st.text(alphabet="ab*?", min_size=1, max_size=24),
    name=st.builds(
        lambda n, tail: "a" * n + tail, st.integers(0, 300), st.sampled_from(["", "b", "ab", "c"])
    ),
)
def test_wildcard_is_fast_on_pathological_masks(mask: str, name: str) -> None:
    start = time.monotonic()
    got = wildcard_match_icase(name, mask)
    assert time.monotonic() - start < 0.5
    assert got is reference_match(name.encode(), mask.encode())


@pytest.mark.parametrize("stars", [10, 50])
def test_many_star_mask_on_a_long_name_is_fast(stars: int) -> None:
    mask = "*a" * stars + "*b"
    start = time.monotonic()
    assert wildcard_match_icase("a" * 5000, mask) is False
    assert compile_user_masks([mask])("a" * 5000 + "c") is False
    assert time.monotonic() - start < 1.0
