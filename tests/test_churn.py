"""A busy real Dovecot 2.3: sessions log in and out while dvadm runs ``who`` and ``kick 'churn*'``.

Worker threads log ``churn*`` users in and out continuously (bounded: 200 logins over about 15 s, from a few
127.x addresses, some shared with the ``keep*`` users), while the main thread runs ``dvadm who`` and
``dvadm kick 'churn*'`` again and again (bounded count). Throughout: no crash or traceback, exit codes
in {0, 68}, every user ``who`` reports is one the clients logged in, no count exceeds the sessions the
clients had open, the ``keep*`` counts are exact, and no ``keep*`` session is ever disconnected.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.dovecot import DEFAULT_PASSWORD, DovecotInstance
from doveadm_py.testing.imap import ImapError, ImapSession, SessionGroup

KEEP_SPECS = [
    ("keep1", "127.0.0.2"),
    ("keep1", "127.0.0.3"),
    ("keep2", "127.0.0.2"),
    ("keep3", "127.0.0.4"),
    ("keep3", "127.0.0.5"),
]
CHURN_USERS = ["churn1", "churn2", "churn3", "churn4"]
CHURN_IPS = ["127.0.0.2", "127.0.0.5", "127.0.0.6", "127.0.0.7"]  # two of them shared with keep* users
CHURN_LOGINS = 200
WORKERS = 3
CHURN_DEADLINE = 40.0  # seconds: the workers stop here even if the logins are not all done
MAX_ROUNDS = 60  # who + kick rounds of the main thread
ROUND_PAUSE = 0.1  # spreads the rounds over the whole churn
UNREGISTER_GRACE = 2.0  # anvil forgets a session when its imap process exits, just after the client left
KNOWN_IPS = {ip for _, ip in KEEP_SPECS} | set(CHURN_IPS)
USERS = {name: DEFAULT_PASSWORD for name in sorted({u for u, _ in KEEP_SPECS} | set(CHURN_USERS))}


@dataclass
class Attempt:
    """One churn login as the client saw it."""

    user: str
    ip: str
    started: float
    ended: float | None = None  # when the client was done with it (closed, refused or kicked)
    logged_in: bool = False
    kicked: bool = False  # the server said BYE or closed while the client held the session


class Churn:
    """Worker threads that log churn users in and out, recording every attempt."""

    def __init__(self, instance: DovecotInstance) -> None:
        self.instance = instance
        self.attempts: list[Attempt] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._next = 0
        self._deadline = time.monotonic() + CHURN_DEADLINE
        self._threads = [threading.Thread(target=self._work, args=(w,), daemon=True) for w in range(WORKERS)]

    def start(self) -> Churn:
        for thread in self._threads:
            thread.start()
        return self

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(CHURN_DEADLINE + 15)
        assert not self.running

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= CHURN_LOGINS or time.monotonic() > self._deadline:
                return None
            self._next += 1
            return self._next - 1

    def _work(self, worker: int) -> None:
        rng = random.Random(worker)
        while (n := self._take()) is not None:
            attempt = Attempt(CHURN_USERS[n % len(CHURN_USERS)], CHURN_IPS[(n // 4) % len(CHURN_IPS)], 0.0)
            with self._lock:
                attempt.started = time.monotonic()
                self.attempts.append(attempt)
            try:
                self._session(attempt, rng.uniform(0.05, 0.3))
            except (ImapError, OSError) as err:  # refused, or kicked in the middle of the login
                self.errors.append(f"{attempt.user}@{attempt.ip}: {err}")
            finally:
                attempt.ended = time.monotonic()

    def _session(self, attempt: Attempt, hold: float) -> None:
        instance = self.instance
        assert instance.imap_port is not None
        session = ImapSession(
            instance.host, instance.imap_port, attempt.user, DEFAULT_PASSWORD, attempt.ip, 10
        )
        attempt.logged_in = True
        try:
            attempt.kicked = session.wait_closed(hold)
        finally:
            session.close()

    def open_bound(self, user: str, window_start: float, window_end: float) -> int:
        """Churn sessions of ``user`` anvil may list during the window: started before its end and not
        given up by the client before its start (minus the unregistering grace)."""
        with self._lock:
            attempts = list(self.attempts)
        return sum(
            1
            for a in attempts
            if a.user == user
            and a.started < window_end
            and (a.ended is None or a.ended > window_start - UNREGISTER_GRACE)
        )


def parse_who(stdout: bytes) -> dict[str, int]:
    """``dvadm -f tab who``: username -> connection count (one row per user: only imap here)."""
    lines = stdout.decode().splitlines()
    assert lines[0].split("\t") == ["username", "#", "proto", "(pids)", "(ips)"], lines[0]
    counts: dict[str, int] = {}
    for line in lines[1:]:
        user, count, service, pids, ips = line.split("\t")
        assert service == "imap" and user not in counts, line
        assert pids.startswith("(") and len(pids[1:-1].split()) <= int(count), line
        assert set(ips[1:-1].split()) <= KNOWN_IPS, line
        counts[user] = int(count)
    return counts


def keep_intact(keep: SessionGroup) -> list[str]:
    """Problems with the keep* sessions: any that is closed or was told BYE."""
    return [f"{s.user}@{s.source_ip}: {s!r}" for s in keep if not s.is_connected() or b"BYE" in s.received]


@pytest.mark.dovecot(users=USERS)
def test_who_and_kick_under_login_churn(
    dovecot: DovecotInstance, imap_sessions: Callable[..., SessionGroup]
) -> None:
    keep = imap_sessions(KEEP_SPECS)
    keep_counts = {user: sum(1 for u, _ in KEEP_SPECS if u == user) for user, _ in KEEP_SPECS}
    anvil = str(dovecot.anvil_path)
    churn = Churn(dovecot).start()
    kick_codes: list[int] = []
    kicked_names: set[str] = set()
    who_runs = 0
    try:
        for _ in range(MAX_ROUNDS):
            if not churn.running:
                break
            start = time.monotonic()
            who = run_dvadm("-f", "tab", "who", "-a", anvil, timeout=30)
            end = time.monotonic()
            assert b"Traceback" not in who.stderr and who.stderr == b"", who.stderr
            assert who.returncode == 0
            counts = parse_who(who.stdout)
            who_runs += 1
            for user, count in counts.items():
                assert user in USERS, f"who reports {user!r}, which no client logged in"
                if user in keep_counts:
                    assert count == keep_counts[user], (user, count)
                else:
                    bound = churn.open_bound(user, start, end)
                    assert count <= bound, f"{user}: {count} connections but at most {bound} were open"
            assert {u for u in counts if u.startswith("keep")} == set(keep_counts)

            kick = run_dvadm("kick", "-a", anvil, "churn*", timeout=30)
            assert b"Traceback" not in kick.stderr + kick.stdout
            assert kick.returncode in (0, 68), kick.stderr
            kick_codes.append(kick.returncode)
            # A session that ends by itself between the dump and the signal may be refused (its
            # process is exiting): a warning, never anything else.
            assert all(line.startswith(b"Warning: ") for line in kick.stderr.splitlines()), kick.stderr
            if kick.returncode == 0:
                head, names = kick.stdout.split(b"\n", 1)
                assert head == b"kicked connections from the following users:", kick.stdout
                listed = names.decode().split()
                assert listed and all(name in CHURN_USERS for name in listed), kick.stdout
                kicked_names.update(listed)
            else:
                assert kick.stdout == b"no users kicked\n"
            assert keep_intact(keep) == []
            time.sleep(ROUND_PAUSE)
    finally:
        churn.join()
    assert keep_intact(keep) == []
    final = parse_who(run_dvadm("-f", "tab", "who", "-a", anvil, timeout=30).stdout)
    assert {u: c for u, c in final.items() if u in keep_counts} == keep_counts
    # The churn really happened, and the kicks really hit it.
    logins = [a for a in churn.attempts if a.logged_in]
    assert len(churn.attempts) == CHURN_LOGINS, f"only {len(churn.attempts)} logins before the deadline"
    assert len(logins) >= CHURN_LOGINS // 2, churn.errors[:5]
    assert who_runs >= 5 and 0 in kick_codes and kicked_names
    assert any(a.kicked for a in churn.attempts)
