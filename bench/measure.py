"""Whole-process measurements for the benchmark: wall time, CPU time and peak RSS of one child.

Wall time is ``time.perf_counter`` from spawn to reap. Peak RSS and CPU come from ``os.wait4`` on
that one child (``RUSAGE_CHILDREN`` would be the maximum over every child reaped so far, so the
first big run would mask all later ones). Commands that are compared are run interleaved (A B A B
...) so that drift on a busy machine hits every side equally. hyperfine, when installed, can time
the cheap start-up commands instead (it only reports wall time).
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

MIB = 1024 * 1024
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""Environment of every measured child: with Python's bytecode cache on, as in any installation
(pip and distribution packages ship ``.pyc`` files). With PYTHONDONTWRITEBYTECODE set, an
editable install recompiles dvadm's modules on every run, which no real user pays for."""


@dataclass(slots=True)
class Run:
    """One reaped child: seconds of wall and CPU time, peak RSS in KiB (None when not measured)."""

    wall: float
    returncode: int
    maxrss_kib: int | None = None
    user: float | None = None
    system: float | None = None


@dataclass
class Series:
    """Repeated runs of one command line, plus the row count of one run that kept its output."""

    name: str
    argv: list[str]
    runs: list[Run] = field(default_factory=list)
    rows: int | None = None
    errors: list[str] = field(default_factory=list)
    timer: str = "internal"

    @property
    def ok(self) -> bool:
        return bool(self.runs) and not self.errors

    @property
    def walls(self) -> list[float]:
        return [r.wall for r in self.runs]

    @property
    def median_wall(self) -> float | None:
        return statistics.median(self.walls) if self.runs else None

    @property
    def median_rss_mib(self) -> float | None:
        rss = [r.maxrss_kib for r in self.runs if r.maxrss_kib is not None]
        return statistics.median(rss) / 1024 if rss else None

    @property
    def max_rss_mib(self) -> float | None:
        rss = [r.maxrss_kib for r in self.runs if r.maxrss_kib is not None]
        return max(rss) / 1024 if rss else None

    def pair_ratios(self, baseline: Series) -> list[float]:
        """dvadm / baseline wall time of each interleaved pair of runs (run i of each)."""
        return [a.wall / b.wall for a, b in zip(self.runs, baseline.runs, strict=False) if b.wall > 0]

    def median_cpu(self) -> float | None:
        cpu = [r.user + r.system for r in self.runs if r.user is not None and r.system is not None]
        return statistics.median(cpu) if cpu else None

    def to_json(self) -> dict[str, object]:
        return {
            "argv": self.argv,
            "command": shlex.join(self.argv),
            "timer": self.timer,
            "runs": len(self.runs),
            "wall_s": [round(w, 6) for w in self.walls],
            "median_wall_s": self.median_wall,
            "min_wall_s": min(self.walls) if self.runs else None,
            "max_wall_s": max(self.walls) if self.runs else None,
            "maxrss_kib": [r.maxrss_kib for r in self.runs],
            "median_maxrss_mib": self.median_rss_mib,
            "max_maxrss_mib": self.max_rss_mib,
            "median_cpu_s": self.median_cpu(),
            "rows": self.rows,
            "errors": self.errors,
        }


GNU_TIME = "/usr/bin/time"
"""Peak RSS of a child forked by this (Python, ~20 MiB) process would include ours: Linux keeps the
highest RSS a process had, and before its exec the child is a copy of us (or shares our memory). So
when GNU time is installed, it forks the command and reports the command's own peak (its wait4)."""


def run_once(argv: Sequence[str], *, stdout: int | None = subprocess.DEVNULL) -> tuple[Run, str]:
    """Run ``argv`` to completion with its output discarded; the Run and the child's stderr."""
    gnu_time = os.access(GNU_TIME, os.X_OK)
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        if gnu_time:
            argv = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, env=CHILD_ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        maxrss = usage.ru_maxrss
        if gnu_time:  # the last line (GNU time puts "Command exited with non-zero status" before it)
            lines = rss.read().split()
            maxrss = int(lines[-1]) if lines and lines[-1].isdigit() else maxrss
    run = Run(wall, proc.returncode, maxrss, usage.ru_utime, usage.ru_stime)
    return run, stderr


def count_lines(argv: Sequence[str], timeout: float = 600.0) -> tuple[int, int, str]:
    """Run ``argv`` once with its stdout drained through a pipe: (lines, exit code, stderr)."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CHILD_ENV
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = 0
    err = bytearray()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        open_streams = 2
        while open_streams and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                data = os.read(key.fd, 1 << 20)
                if not data:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                elif key.fileobj is proc.stdout:
                    lines += data.count(b"\n")
                else:
                    err += data
    if open_streams:
        proc.kill()
    proc.stdout.close()
    proc.stderr.close()
    return lines, proc.wait(), err.decode("utf-8", "replace")


def interleaved(
    series: Sequence[Series],
    runs: int,
    *,
    warmup: int = 0,
    before_each: Callable[[Series], None] | None = None,
    after_each: Callable[[Series, Run], None] | None = None,
) -> None:
    """Run every series ``warmup`` + ``runs`` times, round-robin; warm-up runs are not kept.

    ``before_each`` prepares the environment (e.g. re-seeds a simulator) outside the timing.
    A failing run is recorded in ``errors`` and the series is not run again.
    """
    for i in range(warmup + runs):
        for s in series:
            if s.errors:
                continue
            if before_each is not None:
                before_each(s)
            run, stderr = run_once(s.argv)
            if run.returncode != 0:
                s.errors.append(f"exit {run.returncode}: {stderr.strip()[:500]}")
                continue
            if after_each is not None:
                after_each(s, run)
            if i >= warmup:
                s.runs.append(run)


def hyperfine_available() -> str | None:
    return shutil.which("hyperfine")


def hyperfine(series: Sequence[Series], runs: int, *, warmup: int = 3) -> None:
    """Time every series with hyperfine (no shell, ``-N``); fills wall times only.

    hyperfine runs each command's batch in turn rather than interleaved; its JSON export keeps
    every run's time and exit code.
    """
    exe = hyperfine_available()
    assert exe is not None
    with tempfile.TemporaryDirectory(prefix="dvadm-bench-") as tmp:
        export = os.path.join(tmp, "hyperfine.json")
        argv = [exe, "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs)]
        argv += ["--export-json", export]
        for s in series:
            argv += ["--command-name", s.name, shlex.join(s.argv)]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=CHILD_ENV)
        if proc.returncode != 0:
            for s in series:
                s.errors.append(f"hyperfine failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}")
            return
        with open(export, encoding="utf-8") as f:
            results = json.load(f)["results"]
    for s, result in zip(series, results, strict=True):
        s.timer = "hyperfine"
        codes = result.get("exit_codes") or [0] * len(result["times"])
        s.runs = [Run(t, c) for t, c in zip(result["times"], codes, strict=True)]
        if any(codes):
            s.errors.append(f"non-zero exit codes under hyperfine: {sorted(set(codes))}")


class SimulatorProcess:
    """``python -m doveadm_py.testing.simulator`` in its own process, like a real anvil.

    Generation costs seconds per million sessions, so one is started per configuration and
    serves every run. It prints its socket path when ready; SIGTERM stops it.
    """

    def __init__(
        self,
        python: str,
        protocol: int,
        sessions: int,
        socket_path: str,
        *,
        kick_delay: float = 0.0,
        ready_timeout: float = 900.0,
        shape: str | None = None,
    ) -> None:
        if shape is None:
            self.argv = [python, "-m", "doveadm_py.testing.simulator"]
        else:  # the simulator serving one of shapes.py's dumps
            self.argv = [python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "shape_server.py")]
            self.argv += ["--shape", shape]
        self.argv += ["--protocol", str(protocol), "--sessions", str(sessions), "--socket", socket_path]
        if kick_delay:
            self.argv += ["--kick-delay", repr(kick_delay)]
        self.path = socket_path
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        # a file, not a pipe: a pipe nobody reads could fill up and block the simulator
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())

    def start(self) -> SimulatorProcess:
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=CHILD_ENV
        )
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(self.ready_timeout)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if line != self.path:
            self._stderr.seek(0)
            detail = self._stderr.read().decode("utf-8", "replace").strip()[-500:]
            self.stop()
            raise RuntimeError(f"simulator did not become ready ({shlex.join(self.argv)}): {line!r} {detail}")
        self.startup_seconds = time.perf_counter() - start
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
