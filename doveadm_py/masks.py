"""Positional masks of ``who``/``kick``: doveadm's classification into username masks and one network.

Upstream (``who_parse_masks`` in doveadm-who.c): an argument that is not all digits and parses as
``ip[/bits]`` is the network mask, anything else a username mask. Username masks are OR-ed (2.4.2; dvadm
allows several on 2.3 too). A network mask while one with non-zero bits is already set is an error;
``/0`` means no network filter and may repeat.

The generations parse IPs differently (:mod:`doveadm_py.netmask`): ``fe80::1%eth0`` is a network
to 2.4 and a username to 2.3, ``1.2.3.4 x`` the reverse. The generation is known only once
connected, so :func:`parse_masks` keeps both readings when they differ and
:meth:`Filter.for_protocol` picks the server's; a reading that is an error fails only there.
When both readings are errors worded apart, :func:`parse_masks` raises :class:`ReadingsError`,
whose :meth:`~ReadingsError.for_protocol` gives the server's wording. doveadm 2.4 logs the
"Multiple ... masks" errors on the command's event (``cmd who: ...``): :class:`CommandEventError`.

Deliberate differences, both for ``kick`` safety: an argument whose address parses but whose bits do not
(``10.0.0.0/33``) is an error instead of a username mask that silently matches nobody, and an empty mask
is an error instead of matching only empty usernames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from doveadm_py.errors import UsageError
from doveadm_py.netmask import Network, parse_ip, parse_net_range
from doveadm_py.wildcard import compile_user_masks, wildcard_match_icase

__all__ = [
    "CommandEventError",
    "Filter",
    "Network",
    "ReadingsError",
    "compile_user_masks",
    "parse_masks",
    "parse_net_range",
    "wildcard_match_icase",
]


class CommandEventError(UsageError):
    """A mask error doveadm 2.4 logs with its command's prefix: :meth:`for_command` words it so."""

    def for_command(self, command: str) -> UsageError:
        return UsageError(f"cmd {command}: {self.message}")


class ReadingsError(UsageError):
    """Masks that are wrong to both generations, in different words; the message is 2.3's."""

    def __init__(self, readings: dict[int, UsageError]) -> None:
        super().__init__(readings[1].message)
        self.readings = readings

    def for_protocol(self, protocol: int, command: str) -> UsageError:
        """The error as the server's own doveadm words it (protocol 1: 2.3, 2: 2.4) for ``command``."""
        error = self.readings[protocol]
        return error.for_command(command) if isinstance(error, CommandEventError) else error


class Filter:
    """The username masks (OR-ed) AND the network a session or user must match."""

    __slots__ = ("_readings", "_user_match", "network", "user_masks")

    user_masks: tuple[str, ...]
    network: Network | None
    _user_match: Callable[[str], bool] | None
    _readings: dict[int, Filter | UsageError] | None  # per generation, when 2.3 and 2.4 read the masks apart

    def __init__(self, user_masks: Iterable[str] = (), network: Network | None = None) -> None:
        masks = tuple(user_masks)
        object.__setattr__(self, "user_masks", masks)
        object.__setattr__(self, "network", network if network is not None and network.bits else None)
        object.__setattr__(self, "_user_match", compile_user_masks(masks) if masks else None)
        object.__setattr__(self, "_readings", None)

    def for_protocol(self, protocol: int) -> Filter:
        """The masks as the server's generation reads them (1: 2.3, 2: 2.4); UsageError if wrong there."""
        readings = self._readings
        if readings is None:
            return self
        reading = readings[protocol]
        if isinstance(reading, UsageError):
            raise reading
        return reading

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Filter):
            return NotImplemented
        return (self.user_masks, self.network) == (other.user_masks, other.network)

    def __hash__(self) -> int:
        return hash((self.user_masks, self.network))

    def __repr__(self) -> str:
        return f"Filter(user_masks={self.user_masks!r}, network={self.network!r})"

    @property
    def has_wildcards(self) -> bool:
        """Any ``*`` or ``?`` in a username mask (2.4 kick then needs the dump, not KICK-USER)."""
        return any("*" in mask or "?" in mask for mask in self.user_masks)

    @property
    def is_empty(self) -> bool:
        return not self.user_masks and self.network is None

    def match_user(self, name: str) -> bool:
        user_match = self._user_match
        return user_match is None or user_match(name)

    def match_ip(self, ip: str) -> bool:
        network = self.network
        return network is None or network.contains(ip)

    def match(self, name: str, ip: str) -> bool:
        """A dump line: username AND network."""
        return self.match_user(name) and self.match_ip(ip)

    def match_any_ip(self, ips: Iterable[str]) -> bool:
        """Aggregated ``who``: any of the user's IPs is in the network (none => no match)."""
        network = self.network
        if network is None:
            return True
        contains = network.contains
        return any(contains(ip) for ip in ips)


def _is_numeric(text: str) -> bool:
    """str_is_numeric: non-empty and only ASCII 0-9."""
    return text.isascii() and text.isdigit()


def _bad_bits_error(arg: str, protocol: int) -> UsageError | None:
    """The error for ``ip/bits`` whose address parses but whose bits do not, else None."""
    address, slash, _ = arg.partition("/")
    parsed = parse_ip(address, protocol) if slash else None
    if parsed is None:
        return None
    limit = "0-32 for an IPv4" if parsed[0] == 4 else "0-128 for an IPv6"
    return UsageError(f"Invalid network mask '{arg}': bits must be a decimal number {limit} address")


def parse_masks(args: Sequence[str], protocol: int | None = None) -> Filter:
    """Classify positional masks as doveadm does; UsageError (exit 64) for the cases above.

    Without ``protocol`` the result reads the masks as 2.3 does; when 2.4 reads them
    differently, :meth:`Filter.for_protocol` gives that reading (an error in both is raised now).
    """
    if protocol is not None:
        return _classify(args, protocol)
    readings: dict[int, Filter | UsageError] = {}
    for generation in (1, 2):
        try:
            readings[generation] = _classify(args, generation)
        except UsageError as err:
            readings[generation] = err
    first, second = readings[1], readings[2]
    if isinstance(first, UsageError) and isinstance(second, UsageError):
        if type(first) is type(second) and first.message == second.message:
            raise first
        raise ReadingsError({1: first, 2: second})
    if isinstance(first, Filter) and isinstance(second, Filter) and first == second:
        return first
    chosen = first if isinstance(first, Filter) else second
    assert isinstance(chosen, Filter)
    result = Filter(chosen.user_masks, chosen.network)
    object.__setattr__(result, "_readings", readings)
    return result


def _classify(args: Sequence[str], protocol: int) -> Filter:
    user_masks: list[str] = []
    network: Network | None = None
    for arg in args:
        if not _is_numeric(arg):
            candidate = parse_net_range(arg, protocol)
            if candidate is not None:
                if network is not None and network.bits:
                    kind = CommandEventError if protocol == 2 else UsageError
                    raise kind("Multiple network masks not supported")
                network = candidate
                continue
            error = _bad_bits_error(arg, protocol)
            if error is not None:
                raise error
        if not arg:
            raise UsageError("Empty user mask: an empty string is not a valid username mask")
        user_masks.append(arg)
    return Filter(user_masks, network)
