"""A hostile anvil through the real ``dvadm`` script: no traceback, bounded time, nobody wrongly kicked.

Two sources of hostility. The simulator's fault modes (hang, drip, close-mid-dump, garbage,
wrong-version) on both protocols, for ``who`` and ``kick``: the run must end with exit 75 and one
``Fatal:`` line naming the socket, within the client's read timeout. And seeded random mutations of
valid dumps (flipped bytes, dropped or doubled tabs, cuts, odd pids and refcounts) served by a small
scripted anvil: no traceback, bounded time, outcomes that agree with a reference model, and on the 2.3
signal path no process that fails the safety checks is ever signalled. The processes "in" those dumps
are ``sleep`` processes this test starts (plain ones as decoys, some named ``dovecot/imap`` so that the
signal path is really taken), plus pid 0, pid 1 and the test process itself.

The CLI's anvil read timeout is ``AnvilClient``'s default (10 s); no option or environment variable
shortens it, so the slow cases run concurrently to keep this file at about 15 s.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kick_helpers import real_imap

from doveadm_py.anvil import AnvilClient, AnvilProtocolError, parse_v1_line, parse_v2_line
from doveadm_py.anvil.escape import join_tabescaped, split_tabescaped, tabescape
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.simulator import FAULTS, AnvilSimulator, SimSession

CLI_TIMEOUT = float(inspect.signature(AnvilClient.__init__).parameters["timeout"].default)
SLACK = 12.0  # interpreter start-up and a loaded machine
PID_MAX = int(Path("/proc/sys/kernel/pid_max").read_text())
FAR_PID = 2_000_000_000  # above any pid_max: no such process, ever


# -- the simulator's fault modes, every one through the CLI --------------------------------------------


@dataclass(frozen=True)
class FaultRun:
    protocol: int
    fault: str
    command: tuple[str, ...]
    path: str
    returncode: int
    stdout: bytes
    stderr: bytes
    elapsed: float
    kicks: list[bytes]
    sessions_left: int


FAULT_COMMANDS = {"who": ("who",), "kick-wildcard": ("kick", "user*"), "kick-plain": ("kick", "user1")}
FAULT_SESSIONS = [
    SimSession(FAR_PID + i, f"user{i}", ip=f"10.0.0.{i}", alt={"user_alias": f"a{i}"}) for i in range(1, 6)
]
FAULT_CASES = [(p, f, c) for p in (1, 2) for f in FAULTS for c in FAULT_COMMANDS]
KNOWN_BUGS: dict[tuple[int, str, str], str] = {}


def run_fault(protocol: int, fault: str, command: str) -> FaultRun:
    # drip_interval: a dump line of about 40 bytes takes far longer than the read timeout.
    with AnvilSimulator(protocol, sessions=FAULT_SESSIONS, fault=fault, drip_interval=2.0) as sim:
        start = time.monotonic()
        argv = FAULT_COMMANDS[command]
        result = run_dvadm(argv[0], "-a", sim.path, *argv[1:], timeout=CLI_TIMEOUT * 3 + SLACK)
        # From the first contact: on a loaded machine, starting ~50 interpreters at once takes long.
        elapsed = time.monotonic() - (sim.accept_times[0] if sim.accept_times else start)
        return FaultRun(
            protocol,
            fault,
            argv,
            sim.path,
            result.returncode,
            result.stdout,
            result.stderr,
            elapsed,
            list(sim.kicks),
            len(sim.sessions),
        )


@pytest.fixture(scope="module")
def fault_runs() -> dict[tuple[int, str, str], FaultRun]:
    """All fault cases at once: each waits out a 10 s timeout at most, so run them side by side."""
    with concurrent.futures.ThreadPoolExecutor(len(FAULT_CASES)) as pool:
        futures = {case: pool.submit(run_fault, *case) for case in FAULT_CASES}
        return {case: future.result() for case, future in futures.items()}


def fault_id(case: tuple[int, str, str]) -> str:
    return f"{('2.3', '2.4')[case[0] - 1]}-{case[1]}-{case[2]}"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=fault_id(case),
            marks=[pytest.mark.xfail(strict=True, reason=f"bug: {KNOWN_BUGS[case]}")]
            if case in KNOWN_BUGS
            else [],
        )
        for case in FAULT_CASES
    ],
)
def test_fault_mode_through_the_cli(fault_runs: dict[tuple[int, str, str], FaultRun], case: tuple) -> None:
    run = fault_runs[case]
    protocol, fault, command = case
    assert b"Traceback" not in run.stderr + run.stdout
    assert run.elapsed < CLI_TIMEOUT + SLACK, f"took {run.elapsed:.1f} s"
    lines = run.stderr.splitlines()
    if protocol == 1 and fault == "garbage" and command == "who":
        # doveadm 2.3 logs the bad line, skips it and lists the rest (exit 0).
        assert run.returncode == 0
        assert lines == [b"Error: Invalid input: garbage-line-without-a-slash\tnot-a-pid"]
        assert run.stdout.count(b"\nuser") == len(FAULT_SESSIONS)
        return
    plain_24 = (
        protocol == 2
        and command == "kick-plain"
        and fault in ("drip", "drip-forever", "close-mid-dump", "garbage")
    )
    if plain_24 and run.returncode == 0:
        # A plain name on 2.4 needs no dump (KICK-USER straight away), so dump faults cannot touch it;
        # unless the greeting came late (a loaded machine) and the protocol check's PENALTY-DUMP met
        # the fault: then it must fail like the others below.
        assert lines == []
        assert run.stdout == b"1 connections kicked\n"
        assert run.kicks == [b"KICK-USER\tuser1"] and run.sessions_left == len(FAULT_SESSIONS) - 1
        return
    assert run.returncode == 75, run.stderr
    assert len(lines) == 1 and lines[0].startswith(b"Fatal: "), run.stderr
    assert run.path.encode() in lines[0]  # the message names the socket
    assert run.kicks == [] and run.sessions_left == len(FAULT_SESSIONS)  # a failed dump kicks nothing
    if command != "who":
        assert run.stdout == b""


@pytest.mark.parametrize("protocol", [1, 2])
def test_cli_waits_the_client_default_timeout(
    fault_runs: dict[tuple[int, str, str], FaultRun], protocol: int
) -> None:
    """The bound above means something only if the CLI really waits AnvilClient's default timeout:
    a hung anvil is given the whole of it (and not much more)."""
    run = fault_runs[(protocol, "hang", "who")]
    assert run.elapsed > CLI_TIMEOUT - 0.5  # the upper bound is test_fault_mode_through_the_cli's
    assert b"timed out after %g s" % CLI_TIMEOUT in run.stderr


@pytest.mark.parametrize("protocol", [1, 2])
def test_dump_that_never_ends_stops_at_the_deadline_setting(protocol: int) -> None:
    """Lines come quickly (each well within the read timeout) but the dump never ends."""
    with AnvilSimulator(protocol, sessions=FAULT_SESSIONS, fault="drip-forever", drip_interval=0.002) as sim:
        start = time.monotonic()
        result = run_dvadm("-o", "dvadm_anvil_deadline=1.5", "who", "-a", sim.path, timeout=CLI_TIMEOUT * 3)
        elapsed = time.monotonic() - start
    assert result.returncode == 75 and elapsed < 1.5 + SLACK, (elapsed, result.stderr)
    message = f"Fatal: read({sim.path}) failed: the CONNECT-DUMP reply did not end within the 1.5 s deadline"
    assert result.stderr.splitlines() == [message.encode()]


def test_huge_23_refcount_is_bad_data() -> None:
    """37 bytes must not become 4.29 billion ``who -1`` rows: the line is invalid, as doveadm logs such."""
    sessions = [SimSession(FAR_PID, "big", ip="10.0.0.9", refcount=2**32 - 1), *FAULT_SESSIONS]
    with AnvilSimulator(1, sessions=sessions) as sim:
        result = run_dvadm("who", "-1", "-a", sim.path, timeout=CLI_TIMEOUT + SLACK)
    assert result.returncode == 0
    assert result.stderr == b"Error: Invalid input: imap/10.0.0.9/big\t%d\t4294967295\n" % FAR_PID
    assert len(result.stdout.splitlines()) == 1 + len(FAULT_SESSIONS)


def test_huge_kick_reply_is_not_echoed() -> None:
    with AnvilSimulator(2, sessions=FAULT_SESSIONS, fault="kick-huge-reply") as sim:
        result = run_dvadm("kick", "-a", sim.path, "user1", timeout=CLI_TIMEOUT + SLACK)
    assert b"Traceback" not in result.stderr and b"kick reply longer than 256 bytes" in result.stderr
    assert len(result.stderr) < 600, len(result.stderr)


# -- a scripted anvil that serves whatever bytes a test wants ------------------------------------------


class RawAnvil:
    """Serves fixed dump bytes on a UNIX socket, then closes (as an anvil that crashes would).

    Protocol 2 greets on accept (``greeting``); protocol 1 never speaks first. CONNECT-DUMP gets
    ``dump`` and EOF, PENALTY-DUMP an empty dump, KICK-* ``kick_reply``. Every request line is recorded.
    """

    def __init__(
        self,
        protocol: int,
        dump: bytes,
        *,
        greeting: bytes = b"VERSION\tanvil-server\t2\t0\n",
        kick_reply: bytes = b"1\n",
    ) -> None:
        self.protocol = protocol
        self.dump = dump
        self.greeting = greeting
        self.kick_reply = kick_reply
        self.requests: list[bytes] = []
        self._dir = tempfile.mkdtemp(prefix="raw-anvil-")
        self.path = os.path.join(self._dir, "anvil")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def kicks(self) -> list[bytes]:
        return [line for line in self.requests if line.startswith(b"KICK")]

    def __enter__(self) -> RawAnvil:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self._dir)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            if self.protocol == 2:
                conn.sendall(self.greeting)
            buf = b""
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not self._stop.is_set():
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    with self._lock:
                        self.requests.append(line)
                    if line == b"CONNECT-DUMP":
                        conn.sendall(self.dump)
                        return
                    if line == b"PENALTY-DUMP":
                        conn.sendall(b"\n")
                    elif line.startswith(b"KICK"):
                        conn.sendall(self.kick_reply)


HUGE = b"1" * 5000  # int() refuses it (sys.int_max_str_digits): it must be bad data, not a crash


@pytest.mark.parametrize(
    ("greeting", "kick_reply", "argv", "exit_code", "phrase"),
    [
        (b"VERSION\tanvil-server\t" + HUGE + b"\t0\n", b"1\n", ("who",), 75, b"line longer than 256"),
        (b"VERSION\tanvil-server\t2\t" + HUGE[:200] + b"\n", b"1\n", ("who",), 75, b"Invalid VERSION line"),
        (b"VERSION\tanvil-server\t2\t0\n", HUGE + b"\n", ("kick", "jane"), 0, b"kick reply longer than 256"),
    ],
    ids=["huge-major", "huge-minor", "huge-kick-reply"],
)
def test_huge_numbers_from_anvil_are_bad_data(
    greeting: bytes, kick_reply: bytes, argv: tuple[str, ...], exit_code: int, phrase: bytes
) -> None:
    with RawAnvil(2, b"\n\n", greeting=greeting, kick_reply=kick_reply) as anvil:
        result = run_dvadm(argv[0], "-a", anvil.path, *argv[1:], timeout=CLI_TIMEOUT + SLACK)
    assert b"internal error" not in result.stderr and b"Traceback" not in result.stderr
    assert result.returncode == exit_code and phrase in result.stderr, result.stderr


# -- seeded mutations of a valid dump --------------------------------------------------------------------

ODD_PIDS = [b"0", b"1", b"2147483647", b"2147483648", b"9" * 20, b"-1", b"+5", b" 7", b"0x10", b"7" * 5000]
ODD_COUNTS = [b"x", b"-1", b"", b"1e3", "\u0663".encode(), b"4294967296", b"0", b"9" * 11, b"1" * 5000]


def mutate(payload: bytes, rng: random.Random, pid_field: int, count_field: int) -> bytes:
    """One to three random edits of a dump reply (header, lines and terminator included)."""
    data = bytearray(payload)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(
            [
                "flip",
                "drop-tab",
                "double-tab",
                "cut",
                "pid",
                "count",
                "junk-line",
                "dup-line",
                "no-end",
                "early-end",
            ]
        )
        tabs = [i for i, b in enumerate(data) if b == 9]
        lines = bytes(data).split(b"\n")
        body = [i for i, line in enumerate(lines) if line.count(b"\t") >= max(pid_field, count_field)]
        if op == "flip" and data:
            data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        elif op == "drop-tab" and tabs:
            del data[rng.choice(tabs)]
        elif op == "double-tab" and tabs:
            data.insert(rng.choice(tabs), 9)
        elif op == "cut" and data:
            del data[rng.randrange(len(data)) :]
        elif op in ("pid", "count") and body:
            index = rng.choice(body)
            fields = lines[index].split(b"\t")
            if op == "pid":
                fields[pid_field] = rng.choice(ODD_PIDS)
            else:
                fields[count_field] = rng.choice(ODD_COUNTS)
            lines[index] = b"\t".join(fields)
            data = bytearray(b"\n".join(lines))
        elif op == "junk-line":
            junk = bytes(rng.choice(b"\t/\x01a7\xff ") for _ in range(rng.randint(0, 60)))
            lines.insert(rng.randrange(len(lines)), junk)
            data = bytearray(b"\n".join(lines))
        elif op == "dup-line" and body:
            index = rng.choice(body)
            lines.insert(index, lines[index])
            data = bytearray(b"\n".join(lines))
        elif op == "no-end" and data.endswith(b"\n\n"):
            del data[-1:]
        elif op == "early-end" and len(lines) > 2:
            lines.insert(rng.randrange(1, len(lines)), b"")
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def split_reply(data: bytes, header: bool) -> tuple[bytes | None, list[bytes], bool, bool]:
    """(header line, record lines before the terminator, terminator seen, a line was cut by EOF)."""
    *complete, partial = data.split(b"\n")
    head = None
    if header:
        if not complete:
            return None, [], False, bool(partial)
        head, complete = complete[0], complete[1:]
    if b"" in complete:
        return head, complete[: complete.index(b"")], True, False
    return head, complete, False, bool(partial)


def user_mask_matches(username: str) -> bool:
    """The reference for the mask ``user*``: ASCII case-insensitive prefix over the raw bytes."""
    return username.encode("utf-8", "surrogateescape")[:4].lower() == b"user"


# -- 2.3: the signal path, with real processes standing in for mail processes -----------------------------


class Processes:
    """Processes this test owns: decoys (plain ``sleep``) and real Dovecot ``imap`` processes
    (preauthenticated sessions on a pipe, titled ``dovecot/imap``: see tests/kick_helpers.py)."""

    def __init__(self) -> None:
        self.all: list[subprocess.Popen[bytes]] = []
        self.stack = contextlib.ExitStack()

    def start(self, dovecot_like: bool) -> subprocess.Popen[bytes]:
        if dovecot_like:
            proc = self.stack.enter_context(real_imap())
        else:
            proc = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        self.all.append(proc)
        return proc

    def wait_named(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """Until /proc shows the new name (exec is not instantaneous)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"dovecot/"):
                    return
            time.sleep(0.01)
        raise TimeoutError(f"pid {proc.pid} never showed its dovecot/ name")

    def stop(self) -> None:
        for proc in self.all:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
        self.stack.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop()


def alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def signalled(proc: subprocess.Popen[bytes]) -> bool:
    """Dead, or a SIGTERM already pending (it was sent; the process just has not run since)."""
    if not alive(proc):
        return True
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & (1 << 14):
                return True
    return not alive(proc)


def v1_line(ident: str, pid: int | bytes, refcount: int = 1) -> bytes:
    pid_bytes = pid if isinstance(pid, bytes) else b"%d" % pid
    return b"%s\t%s\t%d" % (tabescape(ident.encode("utf-8", "surrogateescape")), pid_bytes, refcount)


@dataclass
class V1World:
    """A 2.3 dump whose pids are this test's processes, 0, 1, the test itself and far-away pids."""

    fake: subprocess.Popen[bytes]  # dovecot-named, user1: kicking it is right
    keeper: subprocess.Popen[bytes]  # dovecot-named, a user the mask does not match
    decoys: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def lines(self) -> list[bytes]:
        d1, d2, d3 = (p.pid for p in self.decoys)
        return [
            v1_line("imap/10.0.0.1/user1", self.fake.pid),
            v1_line("imap/10.0.0.2/user2", d1),
            v1_line("pop3/10.0.0.3/user3", d2, 2),
            v1_line("imap/10.0.0.4/user4", 1),
            v1_line("imap/10.0.0.5/user5", 0),
            v1_line("imap/10.0.0.6/user6", os.getpid()),  # dvadm's parent
            v1_line("lmtp/user7", d3),
            v1_line("imap/::1/user8", FAR_PID),
            v1_line("imap/10.0.0.9/keeper", self.keeper.pid),
        ]

    def payload(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines()) + b"\n"

    def allowed_pids(self) -> set[int]:
        return {0, 1, os.getpid(), self.fake.pid, self.keeper.pid, *(p.pid for p in self.decoys)}

    def fakes(self) -> list[subprocess.Popen[bytes]]:
        return [self.fake, self.keeper]


def new_world(procs: Processes) -> V1World:
    fake, keeper = procs.start(True), procs.start(True)
    world = V1World(fake, keeper, [procs.start(False) for _ in range(3)])
    procs.wait_named(fake)
    procs.wait_named(keeper)
    return world


def safe_mutation(world: V1World, seed: int) -> bytes:
    """A mutated dump whose parsable lines name only pids this test may see signalled (or none that
    can exist): a flipped digit must never aim dvadm at somebody else's process."""
    for attempt in range(50):
        rng = random.Random(seed * 1000 + attempt)
        data = mutate(world.payload(), rng, pid_field=1, count_field=2)
        _, lines, _, _ = split_reply(data, header=False)
        pids = set()
        for line in lines:
            with contextlib.suppress(AnvilProtocolError):
                pids.add(parse_v1_line(line).pid)
        if all(pid in world.allowed_pids() or pid > PID_MAX for pid in pids):
            return data
    raise AssertionError(f"no safe mutation for seed {seed}")


def expected_v1_kick(world: V1World, data: bytes) -> tuple[set[int], int]:
    """Reference model of dvadm's 2.3 kick of ``user*``: the fake pids it signals and the exit code."""
    _, lines, terminated, _ = split_reply(data, header=False)
    if not terminated or (lines and lines[0].startswith(b"VERSION\t")):
        return set(), 75  # a cut line, or EOF before the terminator: the dump is not to be trusted
    records = []
    for line in lines:
        try:
            records.append(parse_v1_line(line))
        except AnvilProtocolError:
            return set(), 75  # malformed lines: dvadm refuses the whole kick
    users: dict[int, set[str]] = {}
    matched: dict[int, set[str]] = {}
    services: dict[int, set[str]] = {}
    for r in records:
        users.setdefault(r.pid, set()).add(r.username)
        services.setdefault(r.pid, set()).add(r.service)
        if user_mask_matches(r.username):
            matched.setdefault(r.pid, set()).add(r.username)
    if any(matched.get(pid) and matched[pid] != names for pid, names in users.items()):
        return set(), 0  # a pid shared with a user who does not match: warn, signal nothing
    chosen = {pid for pid, names in users.items() if matched.get(pid) == names}
    # A real imap process is signalled only for imap sessions (a mutated service is refused).
    fakes = {p.pid for p in world.fakes()}
    signalled = {pid for pid in chosen & fakes if services[pid] == {"imap"}}
    safe_refusals = {0, 1, os.getpid(), *(p.pid for p in world.decoys), *(chosen & fakes - signalled)}
    listed = chosen - safe_refusals  # signalled, or gone (ESRCH counts as kicked)
    return signalled, 0 if listed else 68


MUTATION_SEEDS = range(30)


def test_mutated_23_dumps_never_signal_the_wrong_process(processes: Processes) -> None:
    world = new_world(processes)
    outcomes: dict[int, int] = {}
    kills = 0
    spared: list[subprocess.Popen[bytes]] = []
    for seed in MUTATION_SEEDS:
        # A fake judged alive after the previous run must still be: no signal may land late.
        assert not [p.pid for p in spared if signalled(p)], f"signalled late, after seed {seed - 1}"
        if not all(alive(p) for p in world.fakes()):
            for proc in world.fakes():
                if signalled(proc):
                    proc.wait(5)
            fake, keeper = (p if alive(p) else processes.start(True) for p in world.fakes())
            world = V1World(fake, keeper, world.decoys)
            for proc in world.fakes():
                processes.wait_named(proc)
        data = safe_mutation(world, seed)
        expected_killed, exit_code = expected_v1_kick(world, data)
        with RawAnvil(1, data) as anvil:
            start = time.monotonic()
            result = run_dvadm("kick", "-a", anvil.path, "user*", timeout=CLI_TIMEOUT + SLACK + 10)
            elapsed = time.monotonic() - start
        context = f"seed {seed}: {data!r}\n{result.stdout!r}\n{result.stderr!r}"
        assert b"Traceback" not in result.stderr + result.stdout, context
        assert elapsed < CLI_TIMEOUT + SLACK, context
        # Decoys (not Dovecot), pid 0, pid 1 and this process (dvadm's parent) are never signalled.
        assert not [p.pid for p in world.decoys if signalled(p)], context
        assert Path("/proc/1").exists()
        killed = {p.pid for p in world.fakes() if signalled(p)}
        spared = [p for p in world.fakes() if p.pid not in killed]
        assert (killed, result.returncode) == (expected_killed, exit_code), context
        outcomes[seed] = result.returncode
        kills += bool(killed)
    # The seeds reach both outcomes, refused (75) and kicked (0), and really signal some processes.
    assert {0, 75} <= set(outcomes.values()) and kills >= 3, (outcomes, kills)


def test_23_signal_path_refuses_every_unsafe_pid(processes: Processes) -> None:
    """An unmutated dump full of unsafe pids: only the dovecot-named process that matches dies."""
    world = new_world(processes)
    with RawAnvil(1, world.payload()) as anvil:
        result = run_dvadm("kick", "-a", anvil.path, "*", "--force", timeout=CLI_TIMEOUT + SLACK)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    world.fake.wait(5)
    world.keeper.wait(5)  # '*' matches keeper too
    assert all(alive(p) for p in world.decoys)
    warnings = result.stderr.decode(errors="replace")
    for pid in (0, 1, os.getpid(), *(p.pid for p in world.decoys)):
        assert f"not signalling pid {pid} " in warnings
    # Kicked = signalled or already gone (ESRCH, as doveadm counts it); refused users are not listed.
    assert result.stdout == b"kicked connections from the following users:\nkeeper user1 user8 \n"


def test_23_kick_refuses_an_unterminated_dump(processes: Processes) -> None:
    """doveadm 2.3 takes EOF for the end of the dump; the lost tail could hide a user sharing the pid."""
    world = new_world(processes)
    # What anvil had: user1 and keeper share the fake's pid. What arrived: the first line, then EOF.
    data = v1_line("imap/10.0.0.1/user1", world.fake.pid) + b"\n"
    with RawAnvil(1, data) as anvil:
        result = run_dvadm("kick", "-a", anvil.path, "user1", timeout=CLI_TIMEOUT + SLACK)
    with contextlib.suppress(subprocess.TimeoutExpired):
        world.fake.wait(0.5)
    assert alive(world.fake)
    assert result.returncode == 75


# -- mutated dumps for who (both protocols) and the 2.4 kick ----------------------------------------------


def v2_payload() -> bytes:
    fields = ["user_alias", "user_x\tweird"]
    lines = [join_tabescaped([f.encode() for f in fields])]
    for i in range(8):
        name = f"user{i}" if i % 3 else f"other{i}"
        guid = random.Random(i).randbytes(16).hex()
        ip = ["10.0.0.1", "::1", "", "::ffff:10.1.1.1"][i % 4]
        dest = "10.9.9.9" if i == 5 else ""
        alts = [b"alias\n%d" % i] if i % 2 else []
        lines.append(
            join_tabescaped(
                [
                    b"%d" % (FAR_PID + i),
                    name.encode(),
                    b"imap",
                    ip.encode(),
                    guid.encode(),
                    dest.encode(),
                    *alts,
                ]
            )
        )
    return b"".join(line + b"\n" for line in lines) + b"\n"


def v1_payload() -> bytes:
    lines = [v1_line(f"imap/10.0.0.{i}/user{i}", FAR_PID + i, 1 + i % 2) for i in range(6)]
    lines += [v1_line("lmtp/other@example.org", FAR_PID + 9), v1_line("imap/::1/us\ter/x", FAR_PID + 7)]
    return b"".join(line + b"\n" for line in lines) + b"\n"


def expected_v2(data: bytes) -> tuple[int, set[bytes]]:
    """Reference model of the 2.4 ``who``/``kick user*``: exit code and the KICK lines (none on failure)."""
    head, lines, terminated, _ = split_reply(data, header=True)
    if not terminated or head is None:
        return 75, set()
    n_alt = len(split_tabescaped(head))
    kicks = set()
    for line in lines:
        try:
            s = parse_v2_line(line, n_alt)
        except AnvilProtocolError:
            return 75, set()
        if user_mask_matches(s.username):
            kicks.add(
                join_tabescaped(
                    [b"KICK-USER", s.username.encode("utf-8", "surrogateescape"), s.guid.encode()]
                )
            )
    return 0, kicks


def run_mutated(
    protocol: int, command: tuple[str, ...], seed: int
) -> tuple[bytes, subprocess.CompletedProcess[bytes], float, list[bytes]]:
    base = v1_payload() if protocol == 1 else v2_payload()
    rng = random.Random(seed)
    data = mutate(base, rng, pid_field=1, count_field=2) if protocol == 1 else mutate(base, rng, 0, 4)
    with RawAnvil(protocol, data) as anvil:
        start = time.monotonic()
        result = run_dvadm(command[0], "-a", anvil.path, *command[1:], timeout=CLI_TIMEOUT + SLACK + 10)
        return data, result, time.monotonic() - start, anvil.kicks


def run_many(protocol: int, command: tuple[str, ...], seeds: range) -> list[tuple]:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda seed: (seed, *run_mutated(protocol, command, seed)), seeds))


@pytest.mark.parametrize(
    ("protocol", "command"),
    [(1, ("who",)), (1, ("who", "-1", "user*")), (2, ("who",)), (2, ("who", "-1", "user*"))],
    ids=["2.3-who", "2.3-who-1", "2.4-who", "2.4-who-1"],
)
def test_who_on_mutated_dumps(protocol: int, command: tuple[str, ...]) -> None:
    codes = set()
    for seed, data, result, elapsed, kicks in run_many(protocol, command, range(100, 120)):
        context = f"seed {seed}: {data!r}\n{result.stdout!r}\n{result.stderr!r}"
        assert b"Traceback" not in result.stderr + result.stdout, context
        assert elapsed < CLI_TIMEOUT + SLACK, context
        assert kicks == []
        if protocol == 2:
            assert result.returncode == expected_v2(data)[0], context
        else:
            cut = split_reply(data, header=False)[3]
            assert result.returncode == (75 if cut else 0), context
        if result.returncode:
            assert result.stderr.splitlines()[-1].startswith(b"Fatal: "), context
        codes.add(result.returncode)
    assert codes == {0, 75}  # the seeds reach both outcomes


def test_24_kick_on_mutated_dumps_kicks_exactly_the_matching_sessions() -> None:
    codes = set()
    for seed, data, result, elapsed, kicks in run_many(2, ("kick", "user*"), range(200, 230)):
        context = f"seed {seed}: {data!r}\n{result.stdout!r}\n{result.stderr!r}"
        assert b"Traceback" not in result.stderr + result.stdout, context
        assert elapsed < CLI_TIMEOUT + SLACK, context
        exit_code, expected_kicks = expected_v2(data)
        assert result.returncode == exit_code, context
        # Never a session the mask does not match, never a kick after a failed dump.
        assert set(kicks) == expected_kicks, context
        if exit_code == 0:
            assert result.stdout == b"%d connections kicked\n" % len(kicks), context
        codes.add(exit_code)
    assert codes == {0, 75}


def test_extra_kick_replies_are_reported_not_counted() -> None:
    """Three reply lines to one KICK-USER: the requested one counts, the rest is a protocol error."""
    sessions = [SimSession(FAR_PID, "jane", ip="10.0.0.1")]
    with AnvilSimulator(2, sessions=sessions, fault="kick-extra-lines") as sim:
        result = run_dvadm("kick", "-a", sim.path, "jane", timeout=CLI_TIMEOUT + SLACK)
    assert result.stdout == b"1 connections kicked\n"
    assert result.stderr.startswith(b"Error: anvil sent more than the 1 reply line(s) requested (protocol")
