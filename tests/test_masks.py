"""Mask classification, wildcards and networks as doveadm defines them (reference sections 4, 9.6, 3)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_glob import as_bytes, reference_match

from doveadm_py import wildcard
from doveadm_py.errors import EX_USAGE, UsageError
from doveadm_py.masks import Filter, Network, compile_user_masks, parse_masks, wildcard_match_icase
from doveadm_py.netmask import canonical_ip, parse_client_ip, parse_ip, parse_net_range, parse_netmask
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.dovecot import tool_binary
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

PROPERTY = settings(max_examples=300, deadline=None)


def net(text: str) -> Network:
    network = parse_net_range(text) or parse_net_range(text, 2)
    assert network is not None, text
    return network


def packed4(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, text)


def packed6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


# --- net_addr2ip / net_parse_range -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3", (4, "10.1.2.3")),
        ("1.2", (4, "1.0.0.2")),  # inet_aton a.b
        ("1.2.3", (4, "1.2.0.3")),  # inet_aton a.b.c
        ("0x7f.1", (4, "127.0.0.1")),
        ("1.65536", (4, "1.1.0.0")),
        ("16909060", (4, "1.2.3.4")),  # one number
        ("010.0.0.1", (4, "10.0.0.1")),  # doveadm's fast path reads leading zeros as decimal ...
        ("010.1", (4, "8.0.0.1")),  # ... but inet_aton, used when that fails, reads them as octal
        ("037777777777", (4, "255.255.255.255")),  # too big as decimal, fine as octal
        ("1.2.3.4 anything", (4, "1.2.3.4")),  # glibc inet_aton: whitespace then anything
        ("1.2.3.4\t\udcff", (4, "1.2.3.4")),  # ... even bytes that are not UTF-8
        ("::1", (6, "::1")),
        ("[::1]", (6, "::1")),
        ("::FFFF:1.2.3.4", (6, "::ffff:1.2.3.4")),
        ("2001:DB8::", (6, "2001:db8::")),
    ],
)
def test_parse_ip_accepts_doveadm_forms(text: str, expected: tuple[int, str]) -> None:
    family, address = expected
    packed = packed4(address) if family == 4 else packed6(address)
    assert parse_ip(text) == (family, packed, 0)


@pytest.mark.parametrize(
    ("text", "v23", "v24"),
    [
        ("09.1.1.1", "9.1.1.1", "9.1.1.1"),  # the fast path reads decimal; inet_aton alone rejects 09
        ("010.1", "8.0.0.1", "8.0.0.1"),
        ("16909060", "1.2.3.4", "1.2.3.4"),  # 2.4: no one-number fast path, getaddrinfo agrees
        ("09", "0.0.0.9", None),  # ... except where only the 2.3 fast path reads decimal
        ("1.2.3.4 anything", "1.2.3.4", None),  # 2.4: getaddrinfo wants the whole text
        ("fe80::1%lo", None, "fe80::1%1"),  # 2.4: a scope, by name or number
        ("fe80::1%1", None, "fe80::1%1"),
        ("[fe80::1%1]", None, "fe80::1%1"),
        ("fe80::1%no-such-interface", None, None),
        ("2001:db8::1%lo", None, None),  # glibc: a scope name only for link-local addresses
        ("[::1]", "::1", "::1"),
    ],
)
def test_parse_ip_by_generation(text: str, v23: str | None, v24: str | None) -> None:
    for protocol, expected in ((1, v23), (2, v24)):
        if expected is None:
            assert parse_ip(text, protocol) is None, protocol
            continue
        address, _, scope = expected.partition("%")
        family = 6 if ":" in address else 4
        packed = packed4(address) if family == 4 else packed6(address)
        assert parse_ip(text, protocol) == (family, packed, int(scope or 0)), protocol


def test_one_ip_parser_for_masks_and_dump_lines() -> None:
    """``09.1.1.1`` was an IP to the masks and not to the dump parser: now both use parse_ip."""
    from doveadm_py.anvil.records import is_valid_ip, parse_v1_line, parse_v2_line

    for text in ["09.1.1.1", "1.2", "1.2.3.4 x", "fe80::1%lo", "::ffff:1.2.3.4", "jane", "1.2.3.256", "09"]:
        assert is_valid_ip(text) is (parse_client_ip(text) is not None), text
    assert parse_v1_line(b"imap/09.1.1.1/jane\t7\t1").ip == "09.1.1.1"
    guid = "0123456789abcdef0123456789abcdef"
    assert parse_v2_line(f"7\tjane\timap\t09.1.1.1\t{guid}\t".encode(), 0).ip == "09.1.1.1"
    assert net("9.0.0.0/8").contains("09.1.1.1")


@pytest.mark.parametrize(
    "text",
    ["", "jane", "1.2.3.256", "1.2.3.4.", " 1.2.3.4", "1.2.3.4x", "4294967296", "0x", "[1.2.3.4]", "::1 ",
     "[::1", "1::2::3", "fe80::1%eth0", "\u0661.\u0662.\u0663.\u0664", "1.2.3.4é"],
)  # fmt: skip
def test_parse_ip_rejects(text: str) -> None:
    assert parse_ip(text) is None


@pytest.mark.parametrize(
    ("text", "family", "address", "bits"),
    [
        ("10.0.0.0/8", 4, "10.0.0.0", 8),
        ("10.1.2.3/8", 4, "10.1.2.3", 8),  # host bits are kept, only the prefix is compared
        ("10.0.0.1", 4, "10.0.0.1", 32),
        ("1.2/16", 4, "1.0.0.2", 16),
        ("10.0.0.0/008", 4, "10.0.0.0", 8),
        ("10.0.0.0/0", 4, "10.0.0.0", 0),
        ("[::1]/64", 6, "::1", 64),
        ("2001:db8::/32", 6, "2001:db8::", 32),
        ("::1", 6, "::1", 128),
        ("::/128", 6, "::", 128),
    ],
)
def test_parse_net_range(text: str, family: int, address: str, bits: int) -> None:
    packed = packed4(address) if family == 4 else packed6(address)
    assert parse_net_range(text) == Network(family, packed, bits)


@pytest.mark.parametrize(
    "text",
    ["10.0.0.0/33", "::1/129", "10.0.0.0/x", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8",
     "10.0.0.0/8/8", "10.0.0.0/\u0668", "/8", "/0", "jane/8", "10.0.0.0/" + "9" * 5000],
)  # fmt: skip
def test_parse_net_range_rejects(text: str) -> None:
    assert parse_net_range(text) is None


def test_network_str_and_immutability() -> None:
    network = net("10.1.2.3/8")
    assert str(network) == "10.1.2.3/8"
    assert str(net("[::FFFF:1.2.3.4]/100")) == "::ffff:1.2.3.4/100"
    assert network.max_bits == 32
    with pytest.raises(AttributeError):
        network.bits = 9  # type: ignore[misc]
    assert hash(network) == hash(net("10.1.2.3/8"))
    assert network != net("10.0.0.0/8")
    with pytest.raises(ValueError):
        Network(4, packed4("1.2.3.4"), 33)
    with pytest.raises(ValueError):
        Network(6, packed4("1.2.3.4"), 8)


# --- net_is_in_network -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "ip", "expected"),
    [
        ("10.0.0.0/8", "10.0.0.1", True),
        ("10.0.0.0/8", "10.255.255.255", True),
        ("10.0.0.0/8", "11.0.0.0", False),
        ("10.0.0.0/8", "::ffff:10.0.0.1", True),  # IPv4-mapped client IPs become IPv4
        ("10.0.0.0/8", "::ffff:11.0.0.1", False),
        ("10.0.0.0/8", "::10.0.0.1", False),  # IPv4-compatible is not mapped: stays IPv6
        ("10.0.0.0/8", "[::ffff:10.0.0.1]", True),
        ("10.0.0.0/8", "::1", False),  # family mismatch
        ("10.0.0.0/8", "", False),  # no IP (lmtp, UNIX socket) never matches
        ("10.0.0.0/8", "garbage", False),
        ("10.0.0.0/9", "10.127.255.255", True),  # a prefix that is not byte aligned
        ("10.0.0.0/9", "10.128.0.0", False),
        ("10.0.0.1", "10.0.0.1", True),
        ("10.0.0.1", "10.0.0.2", False),
        ("10.0.0.0/0", "192.0.2.1", True),  # the Network itself; parse_masks drops /0 filters
        ("10.0.0.0/0", "::1", False),
        ("2001:db8::/32", "2001:db8:1::5", True),
        ("2001:db8::/32", "2001:DB9::", False),
        ("2001:db8::/32", "10.0.0.1", False),
        ("2001:db8::/33", "2001:db8:7fff::1", True),
        ("2001:db8::/33", "2001:db8:8000::1", False),
        ("fe80::/10", "fe80::1%lo", True),  # 2.4 dumps may carry a scope; a network without one ignores it
        ("fe80::1%lo/64", "fe80::5%lo", True),  # 2.4: a network with a scope wants the same scope
        ("fe80::1%lo/64", "fe80::5%1", True),
        ("fe80::1%lo/64", "fe80::5", False),
        ("fe80::1%lo/64", "fe80::5%2", False),
        ("::ffff:10.0.0.0/104", "::ffff:10.0.0.1", False),  # the network is not converted (upstream)
        ("::ffff:10.0.0.0/104", "10.0.0.1", False),
    ],
)
def test_network_contains(network: str, ip: str, expected: bool) -> None:
    subject = net(network)
    assert subject.contains(ip) is expected
    assert subject.contains(ip) is expected  # second answer comes from the cache


def test_network_cache_limit_keeps_answers_right(monkeypatch: pytest.MonkeyPatch) -> None:
    from doveadm_py import netmask

    monkeypatch.setattr(netmask, "_CACHE_LIMIT", 4)
    subject = net("10.0.0.0/24")
    for round_ in range(3):
        for host in range(0, 512, 7):
            ip = f"10.0.{host >> 8}.{host & 255}"
            assert subject.contains(ip) is (host < 256), (round_, ip)
    assert len(subject._cache) <= 4


# --- wildcards ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mask", "expected"),
    [
        ("jane", "jane", True),
        ("JANE", "jane", True),
        ("jane", "J*", True),
        ("jane", "ja", False),  # the whole name must match
        ("jane", "*an*", True),
        ("jane", "jan?", True),
        ("jan", "jan?", False),
        ("jane", "*", True),
        ("jane", "j*e*", True),
        ("jane", "?*?*?*?", True),
        ("jane", "?*?*?*?*?", False),
        ("É", "é", False),  # case folding is ASCII only
        ("é", "é", True),
        ("jé", "j?", False),  # '?' is one byte; é is two in UTF-8
        ("jé", "j??", True),
        ("jé", "J*", True),
        ("", "", True),  # empty names match only empty or all-'*' masks
        ("", "*", True),
        ("", "***", True),
        ("", "?", False),
        ("", "a", False),
        ("a", "", False),
        ("a.c", "a.c", True),  # regex metacharacters are literal
        ("abc", "a.c", False),
        ("a", "[ab]", False),  # no [] classes
        ("[AB]", "[ab]", True),
        ("a\\x", "a\\*", True),  # no escape character: the backslash is literal
        ("a*", "a\\*", False),
        ("a\nb", "a*b", True),  # '*' crosses newlines
        ("a\tb", "a?b", True),
        ("\udcff", "?", True),  # a non-UTF-8 byte decoded with surrogateescape is one byte
        ("\udcff\udcfe", "?", False),
        ("x" * 200 + "b", "*a*a*a*a*a*a*a*b", False),  # no catastrophic backtracking
    ],
)
def test_wildcard_match_icase(name: str, mask: str, expected: bool) -> None:
    assert wildcard_match_icase(name, mask) is expected
    assert compile_user_masks([mask])(name) is expected


def test_compile_user_masks_or_and_edge_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    assert compile_user_masks([])("jane") is False  # the OR of nothing
    predicate = compile_user_masks(["Bob", "ja*", "?oo@example.org"])
    expected = {"bob": True, "BOB": True, "bobby": False, "JANE": True, "jo": False, "foo@EXAMPLE.org": True}
    monkeypatch.setattr(wildcard, "_CACHE_LIMIT", 2)  # answers must survive cache clears
    for _ in range(2):
        assert {name: predicate(name) for name in expected} == expected


NAMES = st.text(alphabet=st.sampled_from([*"aAbBz.*?\\\n éÉ", "\udcff"]), max_size=12)
MASKS = st.text(alphabet=st.sampled_from([*"aAbB**??.é\\", "\udcff"]), max_size=8)


@PROPERTY
@given(name=NAMES, mask=MASKS)
def test_wildcard_agrees_with_reference(name: str, mask: str) -> None:
    expected = reference_match(as_bytes(name), as_bytes(mask))
    assert wildcard_match_icase(name, mask) is expected
    assert compile_user_masks([mask])(name) is expected


@PROPERTY
@given(names=st.lists(NAMES, max_size=6), masks=st.lists(MASKS, max_size=4))
def test_compiled_masks_are_an_or(names: list[str], masks: list[str]) -> None:
    predicate = compile_user_masks(masks)
    for name in names * 2:  # the second pass answers from the cache
        expected = any(reference_match(as_bytes(name), as_bytes(mask)) for mask in masks)
        assert predicate(name) is expected


# --- Network.contains against the ipaddress module ---------------------------------------------------


@st.composite
def network_cases(draw: st.DrawFn) -> tuple[str, str, bool]:
    """A network text, a client IP text, and whether ipaddress says the client is inside."""
    net_version = draw(st.sampled_from([4, 6]))
    max_bits = 32 if net_version == 4 else 128
    bits = draw(st.integers(0, max_bits))
    net_int = draw(st.integers(0, 2**max_bits - 1))
    net_addr = ipaddress.ip_address(net_int) if net_version == 4 else ipaddress.IPv6Address(net_int)

    client_kind = draw(st.sampled_from(["v4", "v6", "mapped", "mapped-hex"]))
    client_bits = 128 if client_kind == "v6" else 32
    if draw(st.booleans()) and client_bits == max_bits:  # often inside: the network's prefix + random host
        host = draw(st.integers(0, 2 ** (max_bits - bits) - 1))
        client_int = (net_int >> (max_bits - bits) << (max_bits - bits)) | host
    else:
        client_int = draw(st.integers(0, 2**client_bits - 1))
    if client_kind == "v6":
        client = ipaddress.IPv6Address(client_int)
        text = str(client)
    else:
        v4 = ipaddress.IPv4Address(client_int)
        client = (
            ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + v4.packed) if "mapped" in client_kind else v4
        )
        if client_kind == "v4":
            text = str(v4)
        elif client_kind == "mapped":
            text = f"::ffff:{v4}"
        else:  # the same address written without the dotted quad
            text = f"0:0:0:0:0:FFFF:{client_int >> 16:x}:{client_int & 0xFFFF:x}"

    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    network = ipaddress.ip_network((net_addr, bits), strict=False)
    expected = client.version == network.version and client in network
    return f"{net_addr}/{bits}", text, expected


@PROPERTY
@given(case=network_cases())
def test_network_contains_agrees_with_ipaddress(case: tuple[str, str, bool]) -> None:
    network_text, client_text, expected = case
    network = net(network_text)
    reference = ipaddress.ip_network(network_text, strict=False)
    assert (network.family, network.bits) == (reference.version, reference.prefixlen)
    assert network.network == ipaddress.ip_address(network_text.partition("/")[0]).packed
    assert network.contains(client_text) is expected
    assert Filter((), network).match_any_ip(["", "junk", client_text]) is (expected or network.bits == 0)


# --- parse_masks -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "user_masks", "network"),
    [
        ([], (), None),
        (["jane"], ("jane",), None),
        (["12345"], ("12345",), None),  # all digits: a username, never an IP
        (["007"], ("007",), None),
        (["1.2"], (), "1.2"),  # inet_aton forms are IPs
        (["0x7f.1"], (), "0x7f.1"),
        (["1234/24"], (), "0.0.4.210/24"),  # not all digits, and 1234 is an IP
        (["[::1]/64"], (), "::1/64"),
        (["2001:db8::/32", "ja*"], ("ja*",), "2001:db8::/32"),
        (["ja*", "10.0.0.0/8", "bob"], ("ja*", "bob"), "10.0.0.0/8"),  # several users are OR-ed
        (["1.2.3.256/8"], ("1.2.3.256/8",), None),  # the address is not an IP: a username mask
        (["jane/8"], ("jane/8",), None),
        (["/0"], ("/0",), None),
        (["a\tb\nc"], ("a\tb\nc",), None),  # escaped on the wire later, not rejected here
        (["10.0.0.0/0"], (), None),  # /0: no network filter
        (["10.0.0.0/0", "::/0", "0.0.0.0/0"], (), None),  # ... and it may repeat
        (["0.0.0.0/0", "10.0.0.0/8"], (), "10.0.0.0/8"),
    ],
)
def test_parse_masks_classification(
    args: list[str], user_masks: tuple[str, ...], network: str | None
) -> None:
    result = parse_masks(args)
    assert result.user_masks == user_masks
    assert result.network == (None if network is None else net(network))
    assert result == Filter(user_masks, None if network is None else net(network))
    assert result.is_empty is (not user_masks and network is None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["10.0.0.0/8", "192.168.0.0/16"], "Multiple network masks not supported"),
        (["10.0.0.1", "jane", "10.0.0.2"], "Multiple network masks not supported"),
        (["10.0.0.0/8", "0.0.0.0/0"], "Multiple network masks not supported"),  # upstream checks the first
        (["10.0.0.0/33"], "Invalid network mask '10.0.0.0/33'"),
        (["::1/129"], "Invalid network mask '::1/129'"),
        (["10.0.0.0/x"], "Invalid network mask '10.0.0.0/x'"),
        (["10.0.0.0/"], "Invalid network mask '10.0.0.0/'"),
        (["jane", "10.0.0.0/-1"], "Invalid network mask '10.0.0.0/-1'"),
        (["1.2/99"], "Invalid network mask '1.2/99'"),
        ([""], "Empty user mask"),
        (["jane", ""], "Empty user mask"),
    ],
)
def test_parse_masks_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_masks(args)
    assert raised.value.exit_code == EX_USAGE == 64
    assert raised.value.message.startswith(message)


def test_bad_bits_message_names_the_limit() -> None:
    with pytest.raises(UsageError, match=r"'10\.0\.0\.0/33'.*0-32 for an IPv4"):
        parse_masks(["10.0.0.0/33"])
    with pytest.raises(UsageError, match=r"'::1/129'.*0-128 for an IPv6"):
        parse_masks(["::1/129"])


# --- Filter ------------------------------------------------------------------------------------------


def test_filter_matching() -> None:
    everything = parse_masks([])
    assert everything.is_empty and not everything.has_wildcards
    assert everything.match("anyone", "") and everything.match_any_ip([])

    users = parse_masks(["jane", "b?b"])
    assert users.has_wildcards and not users.is_empty
    assert users.match_user("JANE") and users.match_user("bob") and not users.match_user("bobby")
    assert users.match_ip("") and users.match_any_ip([])  # no network filter

    both = parse_masks(["j*", "10.0.0.0/8"])
    assert both.match("jane", "10.1.1.1")
    assert both.match("jane", "::ffff:10.1.1.1")
    assert not both.match("jane", "192.0.2.1")
    assert not both.match("bob", "10.1.1.1")
    assert not both.match("jane", "")
    assert both.match_any_ip(["192.0.2.1", "10.9.9.9"])
    assert not both.match_any_ip(["192.0.2.1", ""])
    assert not both.match_any_ip([])  # a user without IPs is outside every network

    network_only = parse_masks(["2001:db8::/32"])
    assert network_only.match_user("") and network_only.match("x", "2001:db8::1")
    assert not network_only.has_wildcards and not network_only.is_empty


def test_filter_drops_slash0_network_and_is_immutable() -> None:
    flt = Filter(["jane"], net("10.0.0.0/0"))
    assert flt.network is None and flt.match_ip("")
    with pytest.raises(AttributeError):
        flt.network = None  # type: ignore[misc]


# --- penalty mask and IP text ------------------------------------------------------------------------


def test_parse_netmask_for_penalty() -> None:
    assert parse_netmask("10.0.0.0/8") == net("10.0.0.0/8")
    assert parse_netmask("12345") == Network(4, packed4("0.0.48.57"), 32)  # no digits-only rule here
    assert parse_netmask("10.0.0.0/0") is None
    for bad in ("10.0.0.0/33", "jane", ""):
        with pytest.raises(UsageError) as raised:
            parse_netmask(bad)
        assert raised.value.message == f"Invalid netmask '{bad}' given"
        assert raised.value.exit_code == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2", "1.0.0.2"),
        ("::FFFF:1.2.3.4", "::ffff:1.2.3.4"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("x", ""),
        ("", ""),
    ],
)
def test_canonical_ip(text: str, expected: str) -> None:
    assert canonical_ip(text) == expected


def test_import_is_light() -> None:
    """No heavy modules (site is off: the editable-install hook itself imports ipaddress)."""
    heavy = {"ipaddress", "dataclasses", "inspect", "asyncio", "json", "subprocess", "typing"}
    code = f"import sys; import doveadm_py.masks; print(sorted({heavy!r} & set(sys.modules)))"
    root = str(Path(__file__).resolve().parent.parent)
    env = {"PYTHONPATH": root, "PATH": os.environ.get("PATH", "")}
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=30, check=True, env=env
    )
    assert result.stdout.strip() == "[]"


# --- the generation decides what an IP is: end to end ------------------------------------------------

SCOPED = [
    SimSession(pid=1001, username="alice", ip="fe80::5%lo"),
    SimSession(pid=1002, username="bob", ip="fe80::6"),
    SimSession(pid=1003, username="fe80::1%lo/64", ip="192.0.2.1"),
    SimSession(pid=1004, username="carol", ip="fe80::7%1"),
    SimSession(pid=1005, username="dave", ip="09.1.1.1"),
]


def who_users(protocol: int, *args: str, doveadm: str | None = None) -> list[bytes]:
    """The usernames ``who -1 -f tab ARGS`` lists on a simulator of ``protocol`` (dvadm or ``doveadm``)."""
    with AnvilSimulator(protocol, sessions=SCOPED) as sim:
        if doveadm is None:
            proc = run_dvadm("-f", "tab", "who", "-1", "-a", sim.path, *args)
        else:
            argv = [doveadm, "-f", "tab", "who", "-1", "-a", sim.path, *args]
            proc = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line.split(b"\t")[0] for line in proc.stdout.splitlines()[1:]]


def test_scoped_address_is_a_network_on_24():
    """As the real doveadm 2.4.1 reads it (observed): a scope by name or number, matching that scope only."""
    assert who_users(2, "fe80::1%lo/64") == [b"alice", b"carol"]
    assert who_users(2, "fe80::1/64") == [b"alice", b"bob", b"carol"]
    assert who_users(2, "fe80::1%no-such-interface/64") == []  # a username to 2.4 too


def test_scoped_address_is_a_username_on_23():
    assert who_users(1, "fe80::1%lo/64") == [b"fe80::1%lo/64"]


@pytest.mark.parametrize("masks", [["fe80::1%lo/64"], ["9.0.0.0/8"], ["09.1.1.1"]])
def test_ip_reading_matches_the_real_doveadm_23(masks):
    require_dovecot()
    doveadm = tool_binary("doveadm")
    assert doveadm
    assert who_users(1, *masks) == who_users(1, *masks, doveadm=doveadm)


def test_kick_by_scoped_network_on_24_kicks_only_that_scope():
    with AnvilSimulator(2, sessions=SCOPED) as sim:
        guids = {s.username: s.guid for s in sim.sessions}
        proc = run_dvadm("kick", "-a", sim.path, "fe80::1%lo/64")
        assert (proc.returncode, proc.stdout) == (0, b"2 connections kicked\n"), proc.stderr
        assert sorted(sim.kicks) == [f"KICK-USER\t{u}\t{guids[u]}".encode() for u in ("alice", "carol")]


def test_a_reading_wrong_only_on_24_fails_only_there():
    """Two networks to 2.4 (the scoped one is a username to 2.3): refused on 2.4 before anything is kicked."""
    masks = ["192.0.2.0/24", "fe80::1%lo/64"]
    assert who_users(1, *masks) == [b"fe80::1%lo/64"]
    with AnvilSimulator(2, sessions=SCOPED) as sim:
        proc = run_dvadm("kick", "-a", sim.path, *masks)
        # in 2.4's words, as doveadm 2.4.5 logs it on the command's event
        assert (proc.returncode, proc.stderr) == (
            64,
            b"Error: cmd kick: Multiple network masks not supported\n",
        )
        assert sim.kicks == []


def test_masks_wrong_to_both_generations_in_different_words() -> None:
    """Two networks: 2.3 says it plainly, 2.4 on its command's event ("cmd who: ..."), as each doveadm."""
    from doveadm_py.masks import ReadingsError

    with pytest.raises(ReadingsError) as caught:
        parse_masks(["127.0.0.0/24", "10.0.0.0/8"])
    assert caught.value.message == "Multiple network masks not supported"
    assert caught.value.for_protocol(1, "who").message == "Multiple network masks not supported"
    assert caught.value.for_protocol(2, "kick").message == "cmd kick: Multiple network masks not supported"
    with pytest.raises(UsageError) as same:  # worded alike by both: raised as it is
        parse_masks(["foo", ""])
    assert not isinstance(same.value, ReadingsError)
