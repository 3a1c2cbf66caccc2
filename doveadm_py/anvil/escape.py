"""Dovecot's tab escaping (``src/lib/strescape.c``), byte for byte.

Anvil lines are TAB-separated fields; a field escapes 0x01, TAB, CR and LF as
``\\x01`` followed by ``1``, ``t``, ``r`` or ``n``. Decoding must match Dovecot
exactly, including its leniency (``\\x01`` + any other byte gives that byte, a
lone trailing ``\\x01`` is dropped, ``\\x01 0`` gives NUL), because anvil data
comes from many processes that do not all escape (2.3 lmtp, for one).
"""

from __future__ import annotations

_UNESCAPES = {ord("0"): 0, ord("1"): 1, ord("t"): 9, ord("r"): 13, ord("n"): 10}


def tabescape(s: bytes) -> bytes:
    """Escape one field the way ``str_append_tabescaped`` does (NUL is copied as is)."""
    if b"\x01" in s:
        s = s.replace(b"\x01", b"\x011")
    if b"\t" in s:
        s = s.replace(b"\t", b"\x01t")
    if b"\r" in s:
        s = s.replace(b"\r", b"\x01r")
    if b"\n" in s:
        s = s.replace(b"\n", b"\x01n")
    return s


def tabunescape(s: bytes) -> bytes:
    """Unescape one field (already split on TAB) like ``str_tabunescape``."""
    i = s.find(b"\x01")
    if i < 0:
        return s
    out = bytearray(s[:i])
    n = len(s)
    while True:
        if i + 1 >= n:  # a lone trailing 0x01 is dropped
            break
        c = s[i + 1]
        out.append(_UNESCAPES.get(c, c))
        start = i + 2
        i = s.find(b"\x01", start)
        if i < 0:
            out += s[start:]
            break
        out += s[start:i]
    return bytes(out)


def split_tabescaped(line: bytes) -> list[bytes]:
    """Split a line on raw TAB and unescape every field; ``b''`` is zero fields, not one."""
    if not line:
        return []
    fields = line.split(b"\t")
    if b"\x01" in line:
        return [tabunescape(f) for f in fields]
    return fields


def join_tabescaped(fields: list[bytes] | tuple[bytes, ...]) -> bytes:
    """Escape every field and join them with TAB (the inverse of :func:`split_tabescaped`,
    except that ``[b'']`` and ``[]`` both give ``b''``)."""
    return b"\t".join([tabescape(f) for f in fields])
