"""Two ``dvadm kick`` runs at the same time against one server both finish with the right result.

On the 2.4 simulator (kick replies delayed, so both runs are in flight together): two disjoint wildcard
masks each remove exactly their sessions, and overlapping masks remove the union with counts that add up
to it (anvil answers 0 for a session the other run already kicked). On a real Dovecot 2.3: two kicks of
disjoint user sets at once disconnect exactly those sessions and each lists exactly its own users.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from subprocess import PIPE

import pytest
from reference_glob import reference_match

from doveadm_py.anvil.escape import split_tabescaped
from doveadm_py.testing.cli import dvadm_executable
from doveadm_py.testing.dovecot import DEFAULT_PASSWORD, DovecotInstance
from doveadm_py.testing.imap import SessionGroup
from doveadm_py.testing.simulator import AnvilSimulator, SimSession

FAR_PID = 2_000_000_000  # no such process: the simulator's pids are only labels


def run_together(*argvs: list[str], timeout: float = 60) -> list[tuple[int, bytes, bytes, float, float]]:
    """Start every ``dvadm ARGV`` at once; (exit code, stdout, stderr, start, end) of each, in order."""

    def run(argv: list[str]) -> tuple[int, bytes, bytes, float, float]:
        start = time.monotonic()
        proc = subprocess.Popen([dvadm_executable(), *argv], stdout=PIPE, stderr=PIPE)
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, start, time.monotonic()

    with ThreadPoolExecutor(len(argvs)) as pool:
        return list(pool.map(run, argvs))


def v2_sessions() -> list[SimSession]:
    names = [f"{group}{i}" for group in ("alpha", "beta", "gamma") for i in range(1, 5)]
    ips = ["10.0.0.1", "10.0.0.2", "::1"]
    return [
        SimSession(FAR_PID + 10 * n + k, name, ip=ips[(n + k) % 3])
        for n, name in enumerate(names)
        for k in range(2)  # two sessions (two processes) per user
    ]


@pytest.mark.parametrize(
    ("mask_a", "mask_b"),
    [("alpha*", "b?ta*"), ("a*", "*1"), ("*", "*")],
    ids=["disjoint", "overlapping", "identical"],
)
def test_two_kicks_at_once_on_24(mask_a: str, mask_b: str) -> None:
    with AnvilSimulator(2, sessions=v2_sessions(), kick_delay=0.4) as sim:
        before = sim.sessions
        in_a = {s.guid for s in before if reference_match(s.username.encode(), mask_a.encode())}
        in_b = {s.guid for s in before if reference_match(s.username.encode(), mask_b.encode())}
        assert in_a and in_b
        (code_a, out_a, err_a, start_a, end_a), (code_b, out_b, err_b, start_b, end_b) = run_together(
            ["kick", "-a", sim.path, mask_a], ["kick", "-a", sim.path, mask_b]
        )
        assert max(start_a, start_b) < min(end_a, end_b)  # both were running at the same time
        assert (code_a, code_b) == (0, 0) and err_a == err_b == b"", (err_a, err_b)
        assert b"Traceback" not in out_a + out_b
        count_a = int(out_a.removesuffix(b" connections kicked\n"))
        count_b = int(out_b.removesuffix(b" connections kicked\n"))
        # Each session is its own process ('S': one signal per pid), so a count is a number of sessions;
        # a session both runs targeted was kicked by one of them, the other got 0 for it.
        assert count_a + count_b == len(in_a | in_b)
        assert len(in_a - in_b) <= count_a <= len(in_a)
        assert len(in_b - in_a) <= count_b <= len(in_b)
        assert {s.guid for s in sim.sessions} == {s.guid for s in before} - in_a - in_b
        # Every kick named, by GUID, a session one of the masks matches: each such session at least once,
        # twice only when both masks match it (both runs may have read it before either kicked it).
        kicked = [split_tabescaped(line) for line in sim.kicks]
        assert all(len(f) == 3 and f[0] == b"KICK-USER" for f in kicked), sim.kicks
        times = Counter(f[2].decode() for f in kicked)
        assert set(times) == in_a | in_b
        assert all(n <= (guid in in_a) + (guid in in_b) for guid, n in times.items()), times
        assert sim.errors == []


# -- real Dovecot 2.3 --------------------------------------------------------------------------------

GROUP_A = ["alice1", "alice2", "alice3"]
GROUP_B = ["bob1", "bob2", "bob3"]
BYSTANDERS = ["carol", "albert", "bobby-x"]  # 'albert' and 'bobby-x' are close to the masks, not in them
USERS = {name: DEFAULT_PASSWORD for name in GROUP_A + GROUP_B + BYSTANDERS}
IPS = ["127.0.0.2", "127.0.0.3", "127.0.1.4"]
ROUNDS = 3


def specs() -> list[tuple[str, str]]:
    return [(user, IPS[(n + k) % len(IPS)]) for n, user in enumerate(USERS) for k in range(2)]


@pytest.mark.dovecot(users=USERS)
def test_two_kicks_at_once_on_real_23(
    dovecot: DovecotInstance, imap_sessions: Callable[..., SessionGroup]
) -> None:
    anvil = str(dovecot.anvil_path)
    for round_ in range(ROUNDS):
        group = imap_sessions(specs())
        targets = {spec for spec in specs() if spec[0] in GROUP_A + GROUP_B}
        (code_a, out_a, err_a, *_), (code_b, out_b, err_b, *_) = run_together(
            ["kick", "-a", anvil, "ali*"], ["kick", "-a", anvil, "bob?"]
        )
        context = f"round {round_}: {out_a!r} {err_a!r} {out_b!r} {err_b!r}"
        # Disjoint user sets and one process per session: no pid is shared, so neither run can find
        # its users gone (68) or a process shared with a user it does not match.
        assert (code_a, code_b) == (0, 0), context
        assert err_a == err_b == b"", context
        assert out_a == b"kicked connections from the following users:\nalice1 alice2 alice3 \n", context
        assert out_b == b"kicked connections from the following users:\nbob1 bob2 bob3 \n", context
        # Exactly the targets were disconnected (the bystanders are still there), each with a BYE.
        assert group.wait_for_disconnects(targets, timeout=10) == targets, context
        assert all(b"* BYE " in s.received for s in group if s.spec in targets), context
        group.close()
        assert wait_empty(dovecot, timeout=10), f"round {round_}: sessions linger in anvil"


def wait_empty(instance: DovecotInstance, timeout: float) -> bool:
    """Until anvil lists no session (the next round must not see this round's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not instance.connect_dump():
            return True
        time.sleep(0.05)
    return False
