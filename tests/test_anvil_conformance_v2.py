"""One conformance suite for anvil protocol 2, run against the simulator and real Dovecot 2.4.1 and 2.4.5.

The counterpart of test_anvil_conformance.py (protocol 1): whatever passes against the simulator must pass
against the real servers. Each backend holds the same sessions, with a ``user_alias`` each and one proxied
login (an ``imap-login`` session with a ``dest_ip`` plus its backend ``imap`` session). The simulator's
sessions belong to stand-in processes titled ``dovecot/imap``; it answers kicks without signalling them,
so the kicks here target sessions made for them (users of their own, so the tests are independent of
each other) and check what anvil replies and lists afterwards.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from anvil_helpers import raw, stand_in

from doveadm_py.anvil import AnvilClient
from doveadm_py.testing import (
    DEFAULT_PASSWORD,
    DEFAULT_USER_FIELDS,
    DEFAULT_USERS,
    DovecotInstance,
    open_sessions,
)
from doveadm_py.testing.dovecot import process_cmdline
from doveadm_py.testing.fixtures import require_dovecot
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

DIRECT = [("jane", "127.0.0.1"), ("jano", "127.0.0.2"), ("foo", "127.0.0.5"), ("foo", "127.0.1.9")]
PROXIED = ("james", "127.0.3.7")  # its alias, "something", is also bar@example.org's
# Sessions for the kick tests only: two users sharing an alias (the alt kick) and one user twice (exact).
BY_ALIAS = [("kick1", "127.0.0.7"), ("kick2", "127.0.0.8")]
BY_NAME = [("kick3", "127.0.0.9"), ("kick3", "127.0.0.10")]
KICKED = BY_ALIAS + BY_NAME
USERS = {**DEFAULT_USERS, **{user: DEFAULT_PASSWORD for user, _ in KICKED}}
USER_FIELDS = {
    **DEFAULT_USER_FIELDS,
    "kick1": {"user_alias": "kick-alias"},
    "kick2": {"user_alias": "kick-alias"},
    "kick3": {"user_alias": "kick3-alias"},
}
V2 = b"VERSION\tanvil-client\t2\t0\n\n"
GREETING = b"VERSION\tanvil-server\t2\t0\n"
PROXY_IP = "127.0.0.1"


@dataclass
class Backend:
    name: str
    path: str
    kick_targets: list[tuple[str, str]] = field(default_factory=list)


def alias(user: str) -> str:
    return USER_FIELDS[user]["user_alias"]


def sim_sessions(pids: Iterator[int]) -> list[SimSession]:
    sessions = [SimSession(next(pids), u, ip=ip, alt={"user_alias": alias(u)}) for u, ip in DIRECT + KICKED]
    user, ip = PROXIED
    sessions.append(
        SimSession(next(pids), user, "imap-login", ip, dest_ip=PROXY_IP, alt={"user_alias": alias(user)})
    )
    sessions.append(SimSession(next(pids), user, ip=ip, alt={"user_alias": alias(user)}))
    return sessions


@pytest.fixture(scope="module", params=["simulator", "2.4-trixie", "2.4-sid"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "simulator":
        procs = [stand_in() for _ in range(len(DIRECT) + len(KICKED) + 2)]
        try:
            sessions = sim_sessions(iter(proc.pid for proc in procs))
            with AnvilSimulator(protocol=2, sessions=sessions, alt_fields=["user_alias"]) as sim:
                yield Backend("simulator", sim.path)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(timeout=5)
        return
    server = require_dovecot(request.param)
    with (
        DovecotInstance(USERS, server=server, user_fields=USER_FIELDS, proxy=True) as dovecot,
        open_sessions(dovecot, DIRECT + KICKED),
        open_sessions(dovecot, [PROXIED], port=dovecot.proxy_port),
    ):
        yield Backend(request.param, str(dovecot.anvil_path))


def listed(path: str) -> Counter[tuple[str, str, str]]:
    with AnvilClient(path, timeout=5) as client:
        return Counter((s.username, s.service, s.ip) for s in client.connect_dump())


def test_detects_protocol_2_at_once(backend: Backend) -> None:
    started = time.monotonic()
    with AnvilClient(backend.path) as client:
        assert client.confirm_protocol() == 2
        assert client.server_version == (2, 0)
    assert time.monotonic() - started < 1


def test_dump_lists_every_connection_with_its_fields(backend: Backend) -> None:
    with AnvilClient(backend.path, timeout=5) as client:
        dump = client.connect_dump()
        sessions = [s for s in dump if s.username not in USERS.keys() - DEFAULT_USERS.keys()]
        assert dump.alt_fields == ("user_alias",)
    user, ip = PROXIED
    expected = Counter((u, "imap", i, "", (alias(u),)) for u, i in [*DIRECT, PROXIED])
    expected[(user, "imap-login", ip, PROXY_IP, (alias(user),))] += 1
    assert Counter((s.username, s.service, s.ip, s.dest_ip, s.alt) for s in sessions) == expected
    assert len({s.guid for s in sessions}) == len(sessions)
    assert all(len(s.guid) == 32 and int(s.guid, 16) >= 0 for s in sessions)
    for s in sessions:
        title = b"dovecot/imap-login" if s.service == "imap-login" else b"dovecot/imap"
        assert process_cmdline(s.pid).startswith(title if backend.name != "simulator" else b"dovecot/imap")


def test_penalty_dump_is_empty_without_failed_logins(backend: Backend) -> None:
    with AnvilClient(backend.path) as client:
        assert list(client.penalty_dump()) == []


def test_raw_dump_greets_then_ends_with_an_empty_line_and_stays_open(backend: Backend) -> None:
    data, closed = raw(backend.path, V2 + b"CONNECT-DUMP\n")
    assert not closed and data.startswith(GREETING + b"user_alias\n") and data.endswith(b"\n\n")
    lines = data[len(GREETING) :].split(b"\n")
    # header, the sessions (the kick tests may have removed theirs), the empty line and what follows it
    assert len(DIRECT) + 2 <= len(lines) - 3 <= len(DIRECT) + 2 + len(KICKED)


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        pytest.param(V2 + b"PENALTY-DUMP\n", GREETING + b"\n", id="penalty-dump"),
        pytest.param(b"VERSION\tanvil-client\t2\t1\n\nPENALTY-DUMP\n", GREETING + b"\n", id="newer-minor"),
        pytest.param(V2 + b"KICK-USER\tnobody\n", GREETING + b"0\n", id="kick-nobody"),
        pytest.param(V2 + b"KICK-ALT-USER\tuser_alias\tnothing\n", GREETING + b"0\n", id="kick-alt-nobody"),
    ],
)
def test_requests_get_the_same_reply_and_keep_the_connection(
    backend: Backend, request_bytes: bytes, reply: bytes
) -> None:
    assert raw(backend.path, request_bytes) == (reply, False)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(V2 + b"NO-SUCH-COMMAND\n", id="unknown-command"),
        pytest.param(b"VERSION\tanvil\t1\t0\nCONNECT-DUMP\n", id="v1-handshake"),
        pytest.param(b"VERSION\tanvil-client\t3\t0\n\nCONNECT-DUMP\n", id="wrong-major"),
        pytest.param(b"VERSION\tanvil-client\t2\t0\nCONNECT-DUMP\n", id="no-empty-handshake-line"),
        pytest.param(V2 + b"\n\nPENALTY-DUMP\n", id="empty-request-lines"),
        pytest.param(V2 + b"KICK-USER\n", id="kick-without-user"),
        pytest.param(V2 + b"CONNECT-DUMP\t" + b"x" * 1100 + b"\n", id="over-1024-bytes"),
    ],
)
def test_bad_requests_get_the_greeting_then_disconnected(backend: Backend, request_bytes: bytes) -> None:
    assert raw(backend.path, request_bytes) == (GREETING, True)


def wait_gone(path: str, users: set[str]) -> Counter[tuple[str, str, str]]:
    """What anvil lists once ``users`` are gone from it (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    while any(u in users for u, _, _ in listed(path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return listed(path)


def others_listed(after: Counter[tuple[str, str, str]]) -> None:
    """The sessions no kick test targets are all still there."""
    user, ip = PROXIED
    untouched = Counter((u, "imap", i) for u, i in DIRECT) + Counter(
        {(user, "imap", ip): 1, (user, "imap-login", ip): 1}
    )
    assert after & untouched == untouched


def test_kick_alt_user_counts_every_session_with_the_value(backend: Backend) -> None:
    with AnvilClient(backend.path, timeout=10) as client:
        assert client.kick_alt_user("user_alias", "no-such-alias") == 0
        assert client.kick_alt_user("user_alias", "kick-alias") == len(BY_ALIAS)
    after = wait_gone(backend.path, {user for user, _ in BY_ALIAS})
    assert not any(u in {"kick1", "kick2"} for u, _, _ in after)
    others_listed(after)


def test_kick_user_counts_the_connections_and_they_go(backend: Backend) -> None:
    with AnvilClient(backend.path, timeout=10) as client:
        assert client.kick_user("no-such-user") == 0
        assert client.kick_user("kick3") == len(BY_NAME)
    after = wait_gone(backend.path, {"kick3"})
    assert not any(u == "kick3" for u, _, _ in after)
    others_listed(after)
