"""Every way a remote server can fail leaves the other servers' results intact: one line naming it, exit 75.

Fake doveadm HTTP API servers play the faults a real Dovecot cannot be made to show on demand
(the real-server cases, down, hung and a wrong key, are in test_fleet_dovecot.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from doveadm_py.testing import cli
from doveadm_py.testing.fleet import FakeApiServer, write_fleet

GOOD = [
    {"username": "jane", "service": "imap", "pid": "101", "ip": "192.0.2.1"},
    {"username": "foo", "service": "imap", "pid": "102", "ip": "192.0.2.2"},
]
GOOD_OUT = (
    "server\tusername\tproto\tpid\tip\ngood\tjane\timap\t101\t192.0.2.1\ngood\tfoo\timap\t102\t192.0.2.2\n"
)


def run_fleet(tmp_path: Path, bad: FakeApiServer, *args: str) -> tuple[int, str, str]:
    with ExitStack() as stack:
        good = stack.enter_context(FakeApiServer(GOOD))
        stack.enter_context(bad)
        fleet = write_fleet(
            tmp_path, {"good": {"url": good.url, "key": "k1"}, "bad": {"url": bad.url, "key": "k2-secret"}}
        )
        proc = cli.run_dvadm(
            "-o", "dvadm_http_timeout=1", *args, env=dict(os.environ, DVADM_FLEET=str(fleet)), timeout=60
        )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@pytest.mark.parametrize(
    ("server", "message"),
    [
        (FakeApiServer(fault="500"), "HTTP 500 Internal Server Error"),
        (FakeApiServer(fault="401"), "authentication failed (HTTP 401): check the API key or password"),
        (FakeApiServer(fault="garbage"), "malformed JSON in the reply: "),
        (FakeApiServer(fault="close"), "closed the connection without an answer"),
        (FakeApiServer(fault="hang"), "within 1 s; wrong credentials are a likely cause (Dovecot leaves"),
        (FakeApiServer(GOOD * 20, fault="drip"), "reply still incomplete after 4 s, giving up"),
        (FakeApiServer(fault="drip-head"), "reply still incomplete after 4 s, giving up"),
        (FakeApiServer(raw_reply=b'[["error",{"type":"exitCode","exitCode":75},"dvadm1"]]'), "exit code 75"),
        (
            FakeApiServer(raw_reply=b'[["error",{"type":"unAuthorized","exitCode":0},"dvadm1"]]'),
            "the server does not allow who (doveadm_allowed_commands)",
        ),
        (
            FakeApiServer(raw_reply=b'[["error",{"type":"internalError"},"dvadm1"]]'),
            'failed on the server: {"type": "internalError"}',
        ),
        (FakeApiServer(raw_reply=b'{"not": "a list"}'), "malformed reply to who: not a list of results"),
        (FakeApiServer(raw_reply=b'[["doveadmResponse",[],"wrong-tag"]]'), "malformed reply to who"),
        (FakeApiServer(raw_reply=b'[["doveadmResponse",[1,2],"dvadm1"]]'), "rows are not objects"),
        (
            FakeApiServer(
                raw_reply=b'[["doveadmResponse",[{"username":"x","service":"imap","pid":"-1","ip":""}],"dvadm1"]]'
            ),
            "malformed who reply: pid '-1'",
        ),
        (
            FakeApiServer(
                raw_reply=b'[["doveadmResponse",[{"username":7,"service":"imap","pid":"1","ip":""}],"dvadm1"]]'
            ),
            "'username' is 7",
        ),
        (FakeApiServer(raw_reply=b"[" * 100000), "malformed JSON in the reply"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_failing_server_is_named_and_the_others_print(
    tmp_path: Path, server: FakeApiServer, message: str
) -> None:
    code, out, err = run_fleet(tmp_path, server, "-f", "tab", "who", "-S", "all", "-1")
    assert code == 75
    assert out == GOOD_OUT
    assert err.startswith("Error: bad: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err and "k2-secret" not in err
    if server.requests:  # dvadm keeps the connection open (Dovecot ignores a wrong key that closes it)
        assert all(b"connection: close" not in r.lower() for r in server.requests)


def test_a_path_in_the_url_leads_the_api_path(tmp_path: Path) -> None:
    """A proxy in front may serve the API under a prefix: https://host/dovecot/ -> /dovecot/doveadm/v1."""
    with FakeApiServer(GOOD) as server:
        fleet = write_fleet(tmp_path, {"p": {"url": server.url + "/dovecot/", "key": "k"}})
        proc = cli.run_dvadm(
            "-f", "tab", "who", "-S", "p", "-1", env=dict(os.environ, DVADM_FLEET=str(fleet))
        )
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode() == GOOD_OUT.replace("good\t", "p\t")
    assert [r.split(b" ", 2)[:2] for r in server.requests] == [[b"POST", b"/dovecot/doveadm/v1"]]


def test_a_tls_handshake_that_never_ends_is_given_up(tmp_path: Path) -> None:
    """The watchdog holds the TCP socket before the handshake: a server dripping its TLS record
    is given up at the deadline like one dripping its reply."""
    with FakeApiServer(fault="drip-tls") as bad:
        fleet = write_fleet(tmp_path, {"tls": {"url": bad.url.replace("http:", "https:"), "key": "k"}})
        proc = cli.run_dvadm(
            "-o",
            "dvadm_http_timeout=1",
            "who",
            "-S",
            "tls",
            env=dict(os.environ, DVADM_FLEET=str(fleet)),
            timeout=60,
        )
    assert (proc.returncode, proc.stdout) == (75, b"")
    assert proc.stderr.decode() == "Error: tls: reply still incomplete after 4 s, giving up\n"


def test_a_failing_server_kicks_nothing_and_the_others_report(tmp_path: Path) -> None:
    code, out, err = run_fleet(
        tmp_path, FakeApiServer(fault="garbage"), "-f", "tab", "kick", "-S", "all", "nobody"
    )
    assert code == 75
    assert out == "server\tconnections\tusers\ngood\t0\t\ntotal\t0\t\n"
    assert err.startswith("Error: bad: malformed JSON in the reply: ")


@contextlib.contextmanager
def full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection's SYN is dropped, so connecting
    hangs (a firewalled or overloaded server) until the client's connect timeout."""
    server = socket.socket()
    fillers = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        time.sleep(0.2)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def test_the_connect_timeout_is_settable_with_o(tmp_path: Path) -> None:
    with full_backlog() as port, FakeApiServer(GOOD) as good:
        fleet = write_fleet(
            tmp_path,
            {
                "good": {"url": good.url, "key": "k1"},
                "stuck": {"url": f"http://127.0.0.1:{port}", "key": "k2"},
            },
        )
        started = time.monotonic()
        proc = cli.run_dvadm(
            "-o", "dvadm_http_connect_timeout=1.5", "-f", "tab", "who", "-S", "all", "-1",
            env=dict(os.environ, DVADM_FLEET=str(fleet)), timeout=60,
        )  # fmt: skip
        took = time.monotonic() - started
    assert (proc.returncode, proc.stdout.decode()) == (75, GOOD_OUT)
    assert proc.stderr.decode() == (
        f"Error: stuck: connecting to http://127.0.0.1:{port} timed out after 1.5 s\n"
    )
    assert 1.5 <= took < 20  # the fleet file's default would be 5 s


def test_the_pool_is_bounded_by_dvadm_fleet_parallel(tmp_path: Path) -> None:
    """Four servers answering after 1 s: one at a time (-o dvadm_fleet_parallel=1) takes at least
    4 s, all at once (32, the default) about 1 s plus start-up."""
    with ExitStack() as stack:
        servers = [stack.enter_context(FakeApiServer(GOOD, delay=1.0)) for _ in range(4)]
        fleet = write_fleet(tmp_path, {f"s{i}": {"url": s.url, "key": "k"} for i, s in enumerate(servers)})
        took = {}
        for parallel in ("1", "32"):
            started = time.monotonic()
            proc = cli.run_dvadm(
                "-o", f"dvadm_fleet_parallel={parallel}", "-f", "tab", "who", "-S", "all",
                env=dict(os.environ, DVADM_FLEET=str(fleet)), timeout=60,
            )  # fmt: skip
            took[parallel] = time.monotonic() - started
            assert (proc.returncode, proc.stderr) == (0, b"")
            assert len(proc.stdout.splitlines()) == 1 + 4 * len(GOOD)
    assert took["1"] >= 4.0
    assert took["32"] < took["1"] - 2.0
