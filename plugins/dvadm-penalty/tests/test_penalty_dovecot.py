"""``dvadm penalty`` against real Dovecot 2.3, 2.4.1 and 2.4.5, byte for byte against each one's own
``doveadm penalty``.

Both print the times anvil stored, not the current time, so back-to-back runs must agree exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from doveadm_py.api import run_dvadm
from doveadm_py.testing import DovecotInstance, failed_login
from doveadm_py.testing.fixtures import dovecot_servers
from doveadm_py.testing.servers import DovecotServer

pytestmark = dovecot_servers()

# Two different bad passwords from .77 (anvil counts a repeated password only once) and one from .78.
# They run at once: a later attempt from a penalised IP would wait 4 s (auth's penalty delay).
ATTEMPTS = [("127.0.0.77", "wrong-1"), ("127.0.0.77", "wrong-2"), ("127.0.0.78", "wrong-1")]


@pytest.fixture(scope="module")
def penalised(dovecot_server: DovecotServer) -> Iterator[DovecotInstance]:
    """An instance after the failed logins of :data:`ATTEMPTS`.

    With a failure delay: 2.4 answers a failure at once, and so records no penalty, when the delay is 0.
    """
    with DovecotInstance(server=dovecot_server, auth_failure_delay=1) as instance:
        port = instance.imap_port or 0
        with ThreadPoolExecutor(len(ATTEMPTS)) as pool:
            replies = pool.map(
                lambda attempt: failed_login(instance.host, port, "jane", attempt[1], attempt[0]), ATTEMPTS
            )
            assert all(reply.startswith(b"a NO [AUTHENTICATIONFAILED]") for reply in replies)
        yield instance


def both(instance: DovecotInstance, *args: str) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """(exit code, stdout) of dvadm and of the real doveadm for the same arguments, run back to back."""
    ours = run_dvadm(*instance.dvadm_args(), *args)
    theirs = instance.doveadm(*args)
    assert ours.stderr == b"", ours.stderr
    return (ours.returncode, ours.stdout), (theirs.returncode, theirs.stdout)


@pytest.mark.dovecot
@pytest.mark.usefixtures("penalty_plugin")
def test_penalties_as_doveadm_shows_them(penalised: DovecotInstance) -> None:
    ours, theirs = both(penalised, "-f", "tab", "penalty")
    assert ours == theirs
    rows = [line.split(b"\t") for line in ours[1].splitlines()[1:]]
    penalties = {row[0]: int(row[1]) for row in rows}
    # .77's two attempts race inside auth: anvil may count them as 1 or 2 (doveadm shows the same).
    assert penalties.keys() == {b"127.0.0.77", b"127.0.0.78"}
    assert penalties[b"127.0.0.78"] == 1 and penalties[b"127.0.0.77"] in (1, 2)


@pytest.mark.dovecot
@pytest.mark.usefixtures("penalty_plugin")
@pytest.mark.parametrize(
    "args",
    [
        ["penalty"],
        ["penalty", "127.0.0.78"],
        ["penalty", "127.0.0.64/26"],
        ["penalty", "10.0.0.0/8"],
        ["penalty", "0.0.0.0/0"],
        ["-f", "json", "penalty"],
        ["-f", "flow", "penalty", "127.0.0.77/32"],
    ],
    ids=" ".join,
)
def test_same_bytes_as_doveadm(penalised: DovecotInstance, args: list[str]) -> None:
    ours, theirs = both(penalised, *args)
    assert ours == theirs
    assert ours[0] == 0


@pytest.mark.dovecot
@pytest.mark.usefixtures("penalty_plugin")
def test_bad_netmask_exit_code_and_message(penalised: DovecotInstance) -> None:
    ours = run_dvadm(*penalised.dvadm_args(), "penalty", "127.0.0.1/33")
    theirs = penalised.doveadm("penalty", "127.0.0.1/33")
    assert ours.returncode == theirs.returncode == 64
    message = b"Invalid netmask '127.0.0.1/33' given"
    assert message in ours.stderr and message in theirs.stderr


@pytest.mark.dovecot
@pytest.mark.usefixtures("penalty_plugin")
def test_scoped_netmask_as_the_servers_doveadm_reads_it(penalised: DovecotInstance) -> None:
    """``fe80::1%lo/64``: a network to 2.4 (no penalised IP in it), a bad netmask to 2.3."""
    ours = run_dvadm(*penalised.dvadm_args(), "penalty", "fe80::1%lo/64")
    theirs = penalised.doveadm("penalty", "fe80::1%lo/64")
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
    if penalised.server.generation == 1:
        assert ours.returncode == 64 and b"Invalid netmask 'fe80::1%lo/64' given" in ours.stderr
        assert b"Invalid netmask 'fe80::1%lo/64' given" in theirs.stderr
    else:
        assert ours.returncode == 0
        assert ours.stdout.split() == [b"IP", b"penalty", b"last_penalty", b"last_update"]
