"""Dovecot tab escaping (reference section 2, ``strescape.c``), byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from doveadm_py.anvil.escape import join_tabescaped, split_tabescaped, tabescape, tabunescape


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        (b"plain", b"plain"),
        (b"", b""),
        (b"a\tb", b"a\x01tb"),
        (b"\x01", b"\x011"),
        (b"\r\n", b"\x01r\x01n"),
        (b"x\x01t", b"x\x011t"),  # an escape char followed by 't' is not a TAB
        (b"nul\x00kept", b"nul\x00kept"),  # NUL is copied unchanged
        (b"\t\x01\r\n", b"\x01t\x011\x01r\x01n"),
        ("jöhn/ü".encode(), "jöhn/ü".encode()),
    ],
)
def test_tabescape_examples(raw: bytes, escaped: bytes) -> None:
    assert tabescape(raw) == escaped
    assert tabunescape(escaped) == raw


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        (b"\x010", b"\x00"),  # 0 -> NUL
        (b"a\x01xb", b"axb"),  # any other byte -> that byte
        (b"a\x01\x01b", b"a\x01b"),
        (b"abc\x01", b"abc"),  # a lone trailing escape char is dropped
        (b"\x01", b""),
        (b"\x01t\x01", b"\t"),
        (b"\x01\xffz", b"\xffz"),
    ],
)
def test_tabunescape_lenient_rules(escaped: bytes, raw: bytes) -> None:
    assert tabunescape(escaped) == raw


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        (b"", []),  # zero fields, not one empty field
        (b"\t", [b"", b""]),
        (b"a", [b"a"]),
        (b"a\x01tb\tc", [b"a\tb", b"c"]),  # an escaped TAB does not split
        (b"a\x01\tb", [b"a", b"b"]),  # split on raw TAB first: the field's trailing \x01 is dropped
        (b"VERSION\tanvil-server\t2\t0", [b"VERSION", b"anvil-server", b"2", b"0"]),
        (b"user_alias", [b"user_alias"]),  # a 2.4 dump header with one alt field (section 10)
        (
            b"6427\tfoo\timap\t127.0.0.5\tcdca6138f29e056b1b19000083ecc375\t\tfoo-alias",
            [b"6427", b"foo", b"imap", b"127.0.0.5", b"cdca6138f29e056b1b19000083ecc375", b"", b"foo-alias"],
        ),
        (b"imap/127.0.0.6/foo\t7267\t1", [b"imap/127.0.0.6/foo", b"7267", b"1"]),
    ],
)
def test_split_tabescaped(line: bytes, fields: list[bytes]) -> None:
    assert split_tabescaped(line) == fields


def test_join_tabescaped_builds_one_line() -> None:
    line = join_tabescaped([b"KICK-USER", b"evil\nKICK-USER\troot"])
    assert line == b"KICK-USER\tevil\x01nKICK-USER\x01troot"
    assert b"\n" not in line
    assert split_tabescaped(line) == [b"KICK-USER", b"evil\nKICK-USER\troot"]


@given(st.binary())
def test_roundtrip_any_bytes(raw: bytes) -> None:
    escaped = tabescape(raw)
    assert tabunescape(escaped) == raw
    assert not any(c in escaped for c in b"\t\r\n")


@given(st.lists(st.binary(), min_size=1).filter(lambda f: f != [b""]))
def test_split_join_roundtrip(fields: list[bytes]) -> None:
    assert split_tabescaped(join_tabescaped(fields)) == fields


@given(st.binary())
def test_unescape_never_fails_and_matches_reference(data: bytes) -> None:
    """Compare with a direct transcription of ``str_tabunescape`` (plus \\x01 '0' -> NUL)."""
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] != 1:
            out.append(data[i])
        else:
            i += 1
            if i == len(data):
                break
            out.append(
                {ord("0"): 0, ord("1"): 1, ord("t"): 9, ord("r"): 13, ord("n"): 10}.get(data[i], data[i])
            )
        i += 1
    assert tabunescape(data) == bytes(out)
