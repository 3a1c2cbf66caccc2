"""Anvil dump records, their parsers, and the errors for bad anvil data.

The parsers follow doveadm's ``who_parse_line`` (2.3 and 2.4) and
``penalty_parse_line`` exactly, so a line doveadm accepts is accepted here and a
line it rejects raises :class:`AnvilProtocolError`. Whether a rejected line is
fatal is the caller's decision (2.3 ``who`` skips it, 2.4 ``who`` stops).

They are on the hot path of a million-session dump: lines without ``\\x01``
(nearly all of them) are decoded once and split as ``str``; only escaped lines
go through :func:`~doveadm_py.anvil.escape.split_tabescaped`. Strings are UTF-8
with ``surrogateescape`` so any byte survives a round trip back to the wire.
"""

from __future__ import annotations

from typing import NamedTuple

from doveadm_py.anvil.escape import split_tabescaped
from doveadm_py.errors import TempFailError
from doveadm_py.netmask import parse_client_ip

ENCODING = "utf-8"
ERRORS = "surrogateescape"

_PID_MAX = 2**31 - 1  # pid_t
_UINT_MAX = 2**32 - 1  # unsigned int (str_to_uint)
_TIME_MAX = 2**63 - 1  # time_t
REFCOUNT_MAX = 10**6 - 1
"""The largest 2.3 refcount taken as real: the connections of one user from one IP in one process.
A million is beyond any server (and ``who -1`` prints one row per connection); more is bad data."""
EXCERPT_BYTES = 120
"""At most this much of a line from anvil goes into a message (see :func:`excerpt`)."""
_MAX_DIGITS = 640  # int() may refuse longer digit strings (sys.int_max_str_digits is at least 640)


class AnvilError(TempFailError):
    """Any failure talking to anvil: socket missing or refused, timeout, EOF, bad data (exit 75)."""


class AnvilProtocolError(AnvilError):
    """Anvil sent something doveadm would reject: malformed line, bad VERSION line, early EOF."""


class SessionV1(NamedTuple):
    """One 2.3 CONNECT-DUMP line: a (service/ip/user ident, pid) pair and its connection count."""

    service: str
    ip: str  # '' when the ident has no IP (lmtp) or the IP does not parse
    username: str
    pid: int
    refcount: int


class SessionV2(NamedTuple):
    """One 2.4 CONNECT-DUMP line: one connection, identified by its GUID."""

    pid: int
    username: str
    service: str
    ip: str  # '' when none (lmtp)
    guid: str  # 32 lowercase hex digits
    dest_ip: str  # '' unless a proxied session
    alt: tuple[str, ...]  # values for the header's fields; may be shorter than the header


class PenaltyRecord(NamedTuple):
    """One PENALTY-DUMP line (same format in 2.3 and 2.4)."""

    ident: str  # the client IP as auth gave it; not validated (doveadm prints '' if it is no IP)
    penalty: int
    last_penalty: int  # unix time
    last_update: int  # unix time


# C0 controls but TAB (harmless, and doveadm prints dump lines with their TABs), DEL, C1 controls.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(9), *range(10, 32), *range(127, 160))}


def excerpt(data: bytes, limit: int = EXCERPT_BYTES) -> str:
    """Server data for a message: at most ``limit`` bytes, invalid UTF-8 and control characters
    escaped (``\\xNN``), so no reply can flood or drive the terminal; a cut says the full size.

    Every message quoting what anvil sent goes through here.
    """
    text = data[:limit].decode(ENCODING, "backslashreplace").translate(_CONTROLS)
    if len(data) > limit:
        text += f"… ({len(data)} bytes)"
    return text


_ip_cache: dict[str, bool] = {}


def is_valid_ip(text: str) -> bool:
    """Whether Dovecot's ``net_addr2ip`` accepts ``text``.

    dvadm's one IP parser (:func:`doveadm_py.netmask.parse_client_ip`): IPv6 may be
    bracketed and may carry a ``%scope`` (2.4 prints one for link-local addresses), IPv4
    takes doveadm's forms (``09.1.1.1``, ``1.2``, ``0x1``). Results are cached because a
    dump repeats the same few client IPs many times.
    """
    ok = _ip_cache.get(text)
    if ok is None:
        ok = _check_ip(text)
        if len(_ip_cache) >= 65536:
            _ip_cache.clear()
        _ip_cache[text] = ok
    return ok


def _check_ip(text: str) -> bool:
    return parse_client_ip(text) is not None


def _decode_fields(line: bytes) -> list[str]:
    if 1 in line:  # b"\x01" (an int membership test is a plain memchr)
        return [f.decode(ENCODING, ERRORS) for f in split_tabescaped(line)]
    if not line:
        return []
    return line.decode(ENCODING, ERRORS).split("\t")


def _uint(text: str, limit: int) -> int | None:
    """``str_to_uint``-style: ASCII digits only (no sign, space or '_'), within ``limit``."""
    if text.isdigit() and text.isascii() and len(text) < _MAX_DIGITS:
        n = int(text)
        if n <= limit:
            return n
    return None


_new = tuple.__new__


def parse_v1_line(line: bytes) -> SessionV1:
    """Parse a 2.3 dump line ``<esc service/ip/user>\\t<pid>\\t<refcount>`` like doveadm 2.3.

    Service is the text before the first '/'; if the rest has another '/', the part
    before it is the IP, else the rest is the username and there is no IP (so an
    lmtp username with '/' is split wrongly, as upstream). An IP that does not parse
    becomes ''; the line is still valid. Fewer than 3 fields is invalid (upstream
    crashes), and so is a refcount above :data:`REFCOUNT_MAX`; extra fields are ignored.
    """
    # Hand-inlined: this runs once per session of a dump that can hold millions.
    parts = split_tabescaped(line) if 1 in line else line.split(b"\t")
    if len(parts) >= 3:
        pid_b = parts[1]
        ref_b = parts[2]
        if pid_b.isdigit() and ref_b.isdigit() and len(pid_b) + len(ref_b) < _MAX_DIGITS:  # ASCII-only
            pid = int(pid_b)
            refcount = int(ref_b)
            if pid <= _PID_MAX and refcount <= REFCOUNT_MAX:
                service, sep, rest = parts[0].decode(ENCODING, ERRORS).partition("/")
                if sep:
                    ip, sep, username = rest.partition("/")
                    if not sep:
                        ip, username = "", rest
                    elif ip and not is_valid_ip(ip):
                        ip = ""
                    return _new(SessionV1, (service, ip, username, pid, refcount))
    raise AnvilProtocolError(f"Invalid input: {excerpt(line)}")


def parse_v2_line(line: bytes, n_alt_fields: int) -> SessionV2:
    """Parse a 2.4 dump line ``<pid> <user> <service> <ip> <guid> <dest-ip> [alt…]`` like doveadm 2.4.

    Invalid: fewer than 6 fields, a bad pid, a non-empty IP or dest-ip that does not
    parse, or a GUID that is not 32 hex digits. Alt values beyond ``n_alt_fields``
    (the header's length) are dropped (upstream would underflow); fewer are kept as
    they are, so a missing value means the session does not use that field.
    """
    fields = _decode_fields(line)
    if len(fields) >= 6:
        pid_s = fields[0]
        ip = fields[3]
        guid = fields[4]
        dest_ip = fields[5]
        if (
            pid_s.isdigit()
            and pid_s.isascii()
            and len(pid_s) < _MAX_DIGITS
            and int(pid_s) <= _PID_MAX
            and (not ip or is_valid_ip(ip))
            and (not dest_ip or is_valid_ip(dest_ip))
            and _is_guid(guid)
        ):
            alt = tuple(fields[6 : 6 + n_alt_fields])
            return _new(SessionV2, (int(pid_s), fields[1], fields[2], ip, guid.lower(), dest_ip, alt))
    raise AnvilProtocolError(f"Invalid input: {excerpt(line)}")


def _is_guid(text: str) -> bool:
    """``guid_128_from_string``: exactly 32 hex digits, either case."""
    if len(text) != 32:
        return False
    try:
        return len(bytes.fromhex(text)) == 16  # fromhex skips spaces, hence the length check
    except ValueError:
        return False


def parse_penalty_line(line: bytes) -> PenaltyRecord:
    """Parse ``<esc ident>\\t<penalty>\\t<last_penalty>\\t<last_update>`` like doveadm's penalty."""
    fields = _decode_fields(line)
    if len(fields) >= 4:
        penalty = _uint(fields[1], _UINT_MAX)
        last_penalty = _uint(fields[2], _TIME_MAX)
        last_update = _uint(fields[3], _TIME_MAX)
        if penalty is not None and last_penalty is not None and last_update is not None:
            return _new(PenaltyRecord, (fields[0], penalty, last_penalty, last_update))
    raise AnvilProtocolError(f"Read invalid penalty line: {excerpt(line)}")
