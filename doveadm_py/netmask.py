"""IP addresses and ranges parsed and matched the way doveadm does it (``src/lib/net.c``).

This is dvadm's one IP parser: masks, ``-h``, penalty netmasks and the IPs of dump lines all
go through :func:`parse_ip`. ``net_addr2ip`` first reads a decimal number or dotted quad
(leading zeros are decimal: ``09.1.1.1`` is 9.1.1.1, which plain ``inet_aton`` rejects as
bad octal); otherwise:

- 2.3 (``protocol=1``): ``inet_pton`` for text with a ``:`` (``[v6]`` brackets allowed),
  else ``inet_aton`` (``1.2`` = 1.0.0.2, ``0x7f.1``, a single number, trailing whitespace
  followed by anything).
- 2.4 (``protocol=2``): ``getaddrinfo`` with ``AI_NUMERICHOST``: the same forms without
  trailing junk, and IPv6 link-local addresses with a ``%scope`` (``fe80::1%eth0``).

``net_is_in_network`` turns an IPv4-mapped *client* address into IPv4 first, never the network, so a
``::ffff:a.b.c.d/n`` network can never match an IPv4-mapped client (upstream behaviour, kept). A
network with a scope (2.4) matches only clients with the same scope.

The socket module wraps the C functions, so glibc's rules apply; the ``ipaddress`` module is slower to
import and use, and is stricter than doveadm.
"""

from __future__ import annotations

import socket

from doveadm_py.errors import UsageError

_MAX_BITS = {4: 32, 6: 128}
_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_C_SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_CACHE_LIMIT = 1 << 16  # cached client IPs per network; cleared (not evicted) when full

IPAddress = tuple[int, bytes, int]
"""(family 4 or 6, packed address bytes in network order, IPv6 scope id or 0)."""


def _decimal_uint(text: str) -> int | None:
    """str_to_uint: non-empty ASCII digits, no sign; None when not a plain decimal (or beyond 32 bits)."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0")
    if len(digits) > 10:  # also keeps int() clear of its 4300-digit limit
        return None
    value = int(digits or "0")
    return value if value <= 0xFFFFFFFF else None


def _inet4_fast(text: str, protocol: int) -> bytes | None:
    """net_addr2ip_inet4_fast: four decimal parts < 256 (leading zeros allowed), or (2.3) one number."""
    parts = text.split(".")
    if len(parts) == 1:
        if protocol != 1:
            return None
        value = _decimal_uint(text)
        return None if value is None else value.to_bytes(4, "big")
    if len(parts) != 4:
        return None
    octets = bytearray()
    for part in parts:
        octet = _decimal_uint(part)
        if octet is None or octet > 255:
            return None
        octets.append(octet)
    return bytes(octets)


def _inet_aton(text: str) -> bytes | None:
    """glibc inet_aton: the address may be followed by whitespace and then anything at all."""
    for index, char in enumerate(text):
        if char in _C_SPACE:
            text = text[:index]
            break
    if not text or not text.isascii():
        return None
    try:
        return socket.inet_aton(text)
    except (OSError, ValueError):
        return None


def _getaddrinfo(text: str) -> IPAddress | None:
    """2.4's net_addr2ip after its fast path: getaddrinfo(AI_NUMERICHOST), scope included."""
    if not text or not text.isascii() or "\0" in text:
        return None
    try:  # bytes: no IDNA encoding (which fails on long labels), as C sees the text
        info = socket.getaddrinfo(text.encode("ascii"), None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    entry = info[0]  # (family, type, proto, canonname, sockaddr): indexed so that the family narrows sockaddr
    if entry[0] == socket.AF_INET:
        return 4, socket.inet_pton(socket.AF_INET, entry[4][0]), 0
    if entry[0] == socket.AF_INET6 and len(entry[4]) == 4:  # (host, port, flowinfo, scope_id)
        return 6, socket.inet_pton(socket.AF_INET6, entry[4][0].partition("%")[0]), entry[4][3]
    return None


def parse_ip(text: str, protocol: int = 1) -> IPAddress | None:
    """doveadm's net_addr2ip of Dovecot 2.3 (``protocol=1``) or 2.4 (``2``); None when not an address."""
    try:  # the common canonical dotted quad: a strict subset of what _inet4_fast accepts, same result
        return 4, socket.inet_pton(socket.AF_INET, text), 0
    except (OSError, ValueError):
        pass
    packed = _inet4_fast(text, protocol)
    if packed is not None:
        return 4, packed, 0
    if ":" in text and text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if protocol != 1:
        return _getaddrinfo(text)
    if ":" in text:
        try:
            return 6, socket.inet_pton(socket.AF_INET6, text), 0
        except (OSError, ValueError):
            return None
    packed = _inet_aton(text)
    return None if packed is None else (4, packed, 0)


def parse_client_ip(text: str) -> IPAddress | None:
    """A session's IP as compared with a network: IPv4-mapped IPv6 becomes IPv4.

    A ``%scope`` suffix (2.4 dumps, link-local addresses) is read as 2.4 reads it.
    """
    parsed = parse_ip(text, 2 if "%" in text and ":" in text else 1)
    if parsed is not None and parsed[0] == 6 and parsed[1][:12] == _MAPPED_PREFIX:
        return 4, parsed[1][12:], 0
    return parsed


def canonical_ip(text: str, protocol: int = 1) -> str:
    """net_ip2addr(net_addr2ip(text)): inet_ntop text, or "" when the text is not an address."""
    parsed = parse_ip(text, protocol)
    if parsed is None:
        return ""
    return socket.inet_ntop(socket.AF_INET if parsed[0] == 4 else socket.AF_INET6, parsed[1])


class Network:
    """An address and prefix length; ``contains`` is net_is_in_network with a per-network result cache."""

    __slots__ = ("_cache", "_prefix", "_shift", "bits", "family", "network", "scope")

    family: int
    network: bytes
    bits: int
    scope: int  # IPv6 scope id (2.4 ``fe80::1%eth0``), 0 for none
    _shift: int
    _prefix: int
    _cache: dict[str, bool]

    def __init__(self, family: int, network: bytes, bits: int, scope: int = 0) -> None:
        max_bits = _MAX_BITS.get(family)
        if max_bits is None or len(network) * 8 != max_bits or not 0 <= bits <= max_bits:
            raise ValueError(f"bad network: family={family!r} network={network!r} bits={bits!r}")
        shift = max_bits - bits
        for name, value in (
            ("family", family),
            ("network", bytes(network)),
            ("bits", bits),
            ("scope", scope),
            ("_shift", shift),
            ("_prefix", int.from_bytes(network, "big") >> shift),
            ("_cache", {}),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Network):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[int, bytes, int, int]:
        return self.family, self.network, self.bits, self.scope

    def __repr__(self) -> str:
        scope = f", scope={self.scope}" if self.scope else ""
        return f"Network({self.family}, {self.network!r}, {self.bits}{scope})"

    def __str__(self) -> str:
        family = socket.AF_INET if self.family == 4 else socket.AF_INET6
        scope = f"%{self.scope}" if self.scope else ""
        return f"{socket.inet_ntop(family, self.network)}{scope}/{self.bits}"

    @property
    def max_bits(self) -> int:
        return _MAX_BITS[self.family]

    def contains(self, ip: str) -> bool:
        """Whether the session IP text is inside; empty, unparsable or other-family IPs never are."""
        result = self._cache.get(ip)
        if result is None:
            result = self._compute(ip)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[ip] = result
        return result

    def _compute(self, ip: str) -> bool:
        parsed = parse_client_ip(ip)
        if parsed is None or parsed[0] != self.family:
            return False
        if self.scope and parsed[2] != self.scope:  # 2.4: %iface1 != %iface2 never matches
            return False
        return int.from_bytes(parsed[1], "big") >> self._shift == self._prefix


def parse_net_range(text: str, protocol: int = 1) -> Network | None:
    """doveadm's net_parse_range: ``addr[/bits]``, bits a plain decimal <= 32/128; None if invalid."""
    address, slash, bits_text = text.partition("/")
    parsed = parse_ip(address, protocol)
    if parsed is None:
        return None
    family, packed, scope = parsed
    max_bits = _MAX_BITS[family]
    bits = _decimal_uint(bits_text) if slash else max_bits
    if bits is None or bits > max_bits:
        return None
    return Network(family, packed, bits, scope)


def parse_netmask(text: str, protocol: int = 1) -> Network | None:
    """``doveadm penalty``'s mask as Dovecot 2.3 (``protocol=1``) or 2.4 (``2``) reads it: a range or
    UsageError; None for ``/0``, which disables filtering."""
    network = parse_net_range(text, protocol)
    if network is None:
        raise UsageError(f"Invalid netmask '{text}' given")
    return network if network.bits else None
