"""dvadm's performance benchmark: start fast, and beat doveadm on big servers.

Every figure is a median of whole-process runs (spawn to reap), measured side by side with its
baseline in the same run and interleaved with it. The targets:

1. start-up: ``dvadm who -a SOCKET`` against an idle simulator (3 sessions; protocol 1 and 2)
   <= 1.15 x ``python -c "import cliff.app, stevedore"`` (same interpreter). Also shown, for
   information: the ratio to ``python -c pass`` and to the real ``doveadm who`` (2.3, protocol 1).
2. and 3. ``who`` and ``who -1`` on 1,000,000 sessions of every shape in ``shapes.py`` (distinct
   or shared client IPs, few users with many sessions, one session per user, long names, 2.4
   alt-username fields and proxies, lmtp without IP), each on protocol 1 against the host's
   doveadm 2.3 and on protocol 2 against doveadm 2.4 run inside its Debian chroot (the dump's
   socket is placed in the chroot's /tmp so that both reach it). Wall: the median over
   interleaved pairs of dvadm / doveadm <= 1.5 x (the stretch goal for aggregated ``who``:
   <= 1.0 x); peak RSS: aggregated ``who`` <= doveadm's, ``who -1`` <= 64 MiB.
4. wildcard kick of 10,000 sessions on protocol 2 against a simulator that answers each kick
   after 0.2 ms: dvadm's pipelined kick at least 5 x faster than the same kicks sent one
   request/reply round trip at a time (``bench/sequential_kick.py``, doveadm 2.4's behaviour).

Usage: ``python bench/run.py [--runs N] [--sessions N] [--shapes A,B] [--only PHASES] [--quick]
[--json PATH]`` (``make bench``).
Results are printed as tables and written to ``bench-results.json``. The exit code is 0 even
when a target is missed (this is a report); 1 when something could not be measured or a sanity
check (row counts, kick counts) failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TextIO

from measure import (
    CHILD_ENV,
    Run,
    Series,
    SimulatorProcess,
    count_lines,
    hyperfine,
    hyperfine_available,
    interleaved,
)
from shapes import BY_NAME, SHAPES, Shape

HERE = os.path.dirname(os.path.abspath(__file__))
PHASES = ("startup", "who", "who1", "kick")
STARTUP_SESSIONS = 3
KICK_DELAY = 0.0002
DEFAULT_CHROOTS = "/var/cache/dvadm"
KICK_MASK = "user*"  # every generated username is user<N>@example.<tld>
RSS_LIMIT_WHO1_MIB = 64.0
WALL_LIMIT = 1.5


@dataclass
class Target:
    """One line of the report: dvadm's figure against a baseline, and the limit it must meet.

    ``limit`` bounds the ratio dvadm / baseline; ``absolute`` (MiB or seconds) bounds dvadm's own
    figure instead. A target with neither is shown for information only.
    """

    name: str
    metric: str  # "wall" or "rss"
    dvadm: Series
    baseline: Series | None
    limit: float | None = None
    absolute: float | None = None
    note: str = ""

    def value(self, s: Series | None) -> float | None:
        if s is None or not s.ok:
            return None
        return s.median_wall if self.metric == "wall" else s.median_rss_mib

    @property
    def ratio(self) -> float | None:
        d, b = self.value(self.dvadm), self.value(self.baseline)
        return d / b if d is not None and b else None

    @property
    def cpu_ratio(self) -> float | None:
        """dvadm's CPU time (user + system) over the baseline's: steadier than wall on a busy machine."""
        if self.metric != "wall" or self.baseline is None or not (self.dvadm.ok and self.baseline.ok):
            return None
        d, b = self.dvadm.median_cpu(), self.baseline.median_cpu()
        return d / b if d is not None and b else None

    @property
    def met(self) -> bool | None:
        """True/False, or None when it could not be measured or is for information only."""
        if self.absolute is not None:
            d = self.value(self.dvadm)
            return None if d is None else d < self.absolute
        if self.limit is None or self.ratio is None:
            return None
        return self.ratio <= self.limit

    def limit_text(self) -> str:
        if self.absolute is not None:
            return f"< {self.absolute:g} MiB" if self.metric == "rss" else f"< {self.absolute:g} s"
        return f"<= {self.limit:.2f}x" if self.limit is not None else "-"

    def met_text(self) -> str:
        if self.limit is None and self.absolute is None:
            return "info"
        return {True: "met", False: "MISSED", None: "NOT MEASURED"}[self.met]

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.name,
            "metric": self.metric,
            "dvadm": self.dvadm.name,
            "baseline": self.baseline.name if self.baseline else None,
            "dvadm_value": self.value(self.dvadm),
            "baseline_value": self.value(self.baseline),
            "unit": "s" if self.metric == "wall" else "MiB",
            "ratio": self.ratio,
            "cpu_ratio": self.cpu_ratio,
            "limit_ratio": self.limit,
            "limit_absolute": self.absolute,
            "met": self.met,
            "status": self.met_text(),
            "note": self.note,
        }


@dataclass
class ShapeRow:
    """``who`` or ``who -1`` (``mode`` who1) on one shape and protocol, against doveadm if there is one.

    Wall: the median over interleaved pairs of dvadm's time / doveadm's, <= ``WALL_LIMIT``. Peak RSS:
    aggregated ``who`` at most doveadm's, ``who -1`` under ``RSS_LIMIT_WHO1_MIB``.
    """

    shape: str
    protocol: int
    mode: str
    dvadm: Series
    doveadm: Series | None

    @property
    def wall_ratio(self) -> float | None:
        if self.doveadm is None or not (self.dvadm.ok and self.doveadm.ok):
            return None
        ratios = self.dvadm.pair_ratios(self.doveadm)
        return statistics.median(ratios) if ratios else None

    @property
    def cpu_ratio(self) -> float | None:
        """dvadm's median CPU time (user + system) over doveadm's: steadier than wall on a busy machine."""
        if self.doveadm is None or not (self.dvadm.ok and self.doveadm.ok):
            return None
        d, b = self.dvadm.median_cpu(), self.doveadm.median_cpu()
        return d / b if d is not None and b else None

    @property
    def rss_limit(self) -> float | None:
        if self.mode == "who1":
            return RSS_LIMIT_WHO1_MIB
        return self.doveadm.median_rss_mib if self.doveadm is not None and self.doveadm.ok else None

    @property
    def wall_met(self) -> bool | None:
        ratio = self.wall_ratio
        return None if ratio is None else ratio <= WALL_LIMIT

    @property
    def rss_met(self) -> bool | None:
        rss, limit = self.dvadm.median_rss_mib, self.rss_limit
        if rss is None or limit is None or not self.dvadm.ok:
            return None
        return rss <= limit

    @property
    def stretch_met(self) -> bool | None:
        """Aggregated ``who`` at or below doveadm's wall time (the project's goal)."""
        ratio = self.wall_ratio
        return None if ratio is None or self.mode != "who" else ratio <= 1.0

    def status(self) -> str:
        missed = [what for what, met in (("wall", self.wall_met), ("RSS", self.rss_met)) if met is False]
        if missed:
            return "MISSED " + "+".join(missed)
        if self.wall_met is None or self.rss_met is None:
            return "met (RSS only)" if self.rss_met else "NOT MEASURED"
        return "met"

    def to_json(self) -> dict[str, object]:
        return {
            "shape": self.shape,
            "protocol": self.protocol,
            "mode": "who -1" if self.mode == "who1" else "who",
            "dvadm": self.dvadm.name,
            "doveadm": self.doveadm.name if self.doveadm else None,
            "dvadm_wall_s": self.dvadm.median_wall,
            "doveadm_wall_s": self.doveadm.median_wall if self.doveadm else None,
            "wall_pair_ratios": self.dvadm.pair_ratios(self.doveadm) if self.doveadm else [],
            "wall_ratio": self.wall_ratio,
            "wall_limit_ratio": WALL_LIMIT,
            "wall_met": self.wall_met,
            "stretch_met": self.stretch_met,
            "cpu_ratio": self.cpu_ratio,
            "dvadm_rss_mib": self.dvadm.median_rss_mib,
            "doveadm_rss_mib": self.doveadm.median_rss_mib if self.doveadm else None,
            "rss_limit_mib": self.rss_limit,
            "rss_met": self.rss_met,
            "status": self.status(),
        }


@dataclass
class Report:
    settings: dict[str, object]
    series: list[Series] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    simulators: dict[str, float] = field(default_factory=dict)
    kick_round_trip_us: float | None = None
    shape_rows: list[ShapeRow] = field(default_factory=list)

    def add(self, *series: Series) -> None:
        self.series += series

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))


class Bench:
    """Runs the selected phases and collects the report."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.python = sys.executable
        self.dvadm = args.dvadm
        self.doveadm = args.doveadm
        self.tmp = tempfile.mkdtemp(prefix="dvadm-bench-")
        self.cleanup: list[str] = []
        self.report = Report(settings=settings_of(args))

    def log(self, text: str) -> None:
        self.out.write(f"# {text}\n")
        self.out.flush()

    def run(self) -> Report:
        try:
            if "startup" in self.args.only:
                self.startup()
            if "who" in self.args.only or "who1" in self.args.only:
                self.shapes()
            if "kick" in self.args.only:
                self.kick()
        finally:
            for directory in [self.tmp, *self.cleanup]:
                shutil.rmtree(directory, ignore_errors=True)
        return self.report

    def sock(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def simulator(self, protocol: int, sessions: int, name: str) -> SimulatorProcess:
        self.log(f"starting a protocol {protocol} simulator with {sessions:,} sessions")
        return SimulatorProcess(self.python, protocol, sessions, self.sock(name))

    def rows(self, s: Series) -> None:
        """One run with the output drained through a pipe: the row count (also a warm-up)."""
        lines, rc, stderr = count_lines(s.argv)
        if rc != 0:
            s.errors.append(f"exit {rc}: {stderr.strip()[:500]}")
        s.rows = lines

    # -- 1. start-up ---------------------------------------------------------------------

    def startup(self) -> None:
        args, py = self.args, self.python
        with (
            self.simulator(1, STARTUP_SESSIONS, "idle-v1") as v1,
            self.simulator(2, STARTUP_SESSIONS, "idle-v2") as v2,
        ):
            self.report.simulators["idle-v1"] = v1.startup_seconds or 0.0
            self.report.simulators["idle-v2"] = v2.startup_seconds or 0.0
            dv1 = Series("dvadm who (idle, v1)", [self.dvadm, "who", "-a", v1.path])
            dv2 = Series("dvadm who (idle, v2)", [self.dvadm, "who", "-a", v2.path])
            cliff = Series(
                "python -c 'import cliff.app, stevedore'", [py, "-c", "import cliff.app, stevedore"]
            )
            bare = Series("python -c pass", [py, "-c", "pass"])
            series = [dv1, dv2, cliff, bare]
            dove = None
            if self.doveadm:
                dove = Series("doveadm who (idle, v1)", [self.doveadm, "who", "-a", v1.path])
                series.append(dove)
            for s in (dv1, dv2, dove):
                if s is not None:
                    self.rows(s)
            # header + one aggregated row: the 3 generated sessions belong to one user
            for s in (dv1, dv2, dove):
                if s is not None:
                    self.report.check(f"{s.name}: rows", s.rows == 2, f"{s.rows} lines (expected 2)")
            use_hyperfine = args.timer == "hyperfine"
            self.log(
                f"start-up: {args.startup_runs} runs each"
                f" ({'hyperfine' if use_hyperfine else 'interleaved, perf_counter + wait4'})"
            )
            if use_hyperfine:
                hyperfine(series, args.startup_runs, warmup=3)
            else:
                interleaved(series, args.startup_runs, warmup=3)
        self.report.add(*series)
        t = self.report.targets
        t.append(Target("start-up v1: who vs import cliff.app+stevedore", "wall", dv1, cliff, 1.15))
        t.append(Target("start-up v2: who vs import cliff.app+stevedore", "wall", dv2, cliff, 1.15))
        t.append(Target("start-up v1: who vs python -c pass", "wall", dv1, bare))
        t.append(Target("start-up v2: who vs python -c pass", "wall", dv2, bare))
        if dove is not None:
            t.append(Target("start-up v1: who vs doveadm 2.3 who", "wall", dv1, dove))

    # -- 2. and 3. who on big servers of every shape ----------------------------------------

    def shapes(self) -> None:
        n, runs = self.args.sessions, self.args.runs
        modes = [mode for mode in ("who", "who1") if mode in self.args.only]
        for shape in self.args.shapes:
            for protocol in BY_NAME[shape].protocols:
                baseline = self.baseline(protocol)
                directory = self.tmp if protocol == 1 or baseline is None else baseline[1]
                path = os.path.join(directory, f"{shape}-v{protocol}")
                self.log(f"{shape} v{protocol}: serving {n:,} sessions")
                server = SimulatorProcess(self.python, protocol, n, path, shape=shape)
                with server:
                    self.report.simulators[f"{shape}-v{protocol}"] = server.startup_seconds or 0.0
                    for mode in modes:
                        self.shape_mode(shape, protocol, mode, path, baseline, runs)
            self.out.write(render_shape(self.report, BY_NAME[shape]))  # as it comes: a full run is long
            self.out.flush()

    def baseline(self, protocol: int) -> tuple[list[str], str] | None:
        """(doveadm command prefix, directory for the socket) of the doveadm to compare with, or None.

        2.3 is the host's doveadm; 2.4 is a chroot's, which reaches the socket only inside the chroot.
        """
        if protocol == 1:
            return ([self.doveadm], self.tmp) if self.doveadm else None
        root = self.args.chroot24
        if not root:
            return None
        inner = os.path.join(root, "tmp", os.path.basename(self.tmp))
        os.makedirs(inner, exist_ok=True)
        self.cleanup.append(inner)
        return (["chroot", root, "/usr/bin/doveadm"], inner)

    def shape_mode(
        self,
        shape: str,
        protocol: int,
        mode: str,
        path: str,
        baseline: tuple[list[str], str] | None,
        runs: int,
    ) -> None:
        flags = ["-1"] if mode == "who1" else []
        label = f"{shape} v{protocol}, {self.args.sessions:,} sessions"
        title = "who -1" if mode == "who1" else "who"
        dv = Series(f"dvadm {title} ({label})", [self.dvadm, "who", *flags, "-a", path])
        series = [dv]
        dove = None
        if baseline is not None:
            prefix = baseline[0]
            inner = path if prefix[0] != "chroot" else "/" + os.path.relpath(path, prefix[1])
            dove = Series(f"doveadm {title} ({label})", [*prefix, "who", *flags, "-a", inner])
            series.append(dove)
        self.log(f"{title} ({label}): row count, then {runs} interleaved runs")
        for s in series:
            self.rows(s)
        if dove is not None:
            same = dv.rows == dove.rows
            self.report.check(
                f"{title} {shape} v{protocol}: rows", same, f"{dv.rows} vs {dove.rows} (doveadm)"
            )
        else:
            self.report.check(f"{title} {shape} v{protocol}: rows", bool(dv.rows), f"{dv.rows} lines")
        interleaved(series, runs)
        self.report.add(*series)
        self.report.shape_rows.append(ShapeRow(shape, protocol, mode, dv, dove))

    # -- 4. pipelined kick ---------------------------------------------------------------

    def kick(self) -> None:
        from doveadm_py.testing.simulator import AnvilSimulator

        k, runs = self.args.kick_sessions, self.args.runs
        sim = AnvilSimulator(2, directory=self.tmp, socket_name="kick-v2", kick_delay=KICK_DELAY)
        with precise_timers():
            sim.start()
        with sim:
            self.report.kick_round_trip_us = kick_round_trip_us(sim.path, 200)

            def reseed(_: Series | None = None) -> None:
                sim.generate(k)
                if len(sim.sessions) != k:  # builds the rows now, outside the timing
                    raise RuntimeError("simulator re-seed failed")

            label = f"{k:,} sessions, v2, {KICK_DELAY * 1000:g} ms/kick"
            piped = Series(
                f"dvadm kick '{KICK_MASK}' ({label})", [self.dvadm, "kick", "-a", sim.path, KICK_MASK]
            )
            seq = Series(
                f"sequential kick '{KICK_MASK}' ({label})",
                [self.python, os.path.join(HERE, "sequential_kick.py"), "kick", "-a", sim.path, KICK_MASK],
            )
            self.log(f"kick ({label}): one checked run each, then {runs} interleaved runs")
            outputs = {}
            for s in (piped, seq):
                reseed()
                before = len(sim.kicks)
                proc = subprocess.run(s.argv, capture_output=True, text=True, timeout=600, env=CHILD_ENV)
                if proc.returncode != 0:
                    s.errors.append(f"exit {proc.returncode}: {proc.stderr.strip()[:500]}")
                outputs[s.name] = (proc.stdout.strip(), sorted(sim.kicks[before:]))
                s.rows = len(sim.kicks) - before
            (out_p, kicks_p), (out_s, kicks_s) = outputs.values()
            self.report.check(
                "kick: same output",
                out_p == out_s and out_p.endswith("connections kicked"),
                f"{out_p!r} vs {out_s!r}",
            )
            # One KICK-USER per session anvil can kick: not the lmtp deliveries (kick type N, 1 in 20).
            self.report.check(
                "kick: same requests",
                kicks_p == kicks_s and len(kicks_p) > k // 2,
                f"{len(kicks_p)} vs {len(kicks_s)} KICK lines for {k} sessions; same: {kicks_p == kicks_s}",
            )

            def check_count(s: Series, run: Run) -> None:
                if len(sim.sessions) >= k:
                    s.errors.append("the simulator still has every session after the kick")

            interleaved([piped, seq], runs, before_each=reseed, after_each=check_count)
        self.report.add(piped, seq)
        target = Target(f"kick {short_count(k)} v2: pipelined wall vs sequential", "wall", piped, seq, 0.2)
        if target.ratio:
            target.note = f"speed-up {1 / target.ratio:.1f}x (needs >= 5x)"
        if self.report.kick_round_trip_us is not None:
            target.note += (
                f"; one kick round trip on the simulator: {self.report.kick_round_trip_us:.0f} us"
                f" (delay {KICK_DELAY * 1e6:.0f} us)"
            )
        self.report.targets.append(target)


@contextlib.contextmanager
def precise_timers() -> Iterator[None]:
    """Make a simulator started inside wait with select(), whose timeouts have microseconds.

    Its default selector (epoll) rounds timeouts up to whole milliseconds, so a 0.2 ms kick
    delay would really be ~1.1 ms per kick and flatter the pipelined kick.
    """
    saved = selectors.DefaultSelector
    selectors.DefaultSelector = selectors.SelectSelector  # type: ignore[misc]
    try:
        yield
    finally:
        selectors.DefaultSelector = saved  # type: ignore[misc]


def kick_round_trip_us(path: str, n: int) -> float:
    """Mean microseconds of one KICK-USER round trip (a user nobody is) on the kick simulator."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        replies = sock.makefile("rb")
        sock.sendall(b"VERSION\tanvil-client\t2\t0\n\n")
        replies.readline()
        start = time.perf_counter()
        for i in range(n):
            sock.sendall(b"KICK-USER\tbench-nobody-%d\n" % i)
            replies.readline()
        elapsed = time.perf_counter() - start
        replies.close()
    return elapsed / n * 1e6


# -- report ----------------------------------------------------------------------------------


def short_count(n: int) -> str:
    """1000000 -> '1M', 10000 -> '10k' (for target names)."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n:,}"


def fmt_value(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "rss":
        return f"{v:.1f} MiB"
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.3f} s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)]) + "\n"


def render_shape(report: Report, shape: Shape) -> str:
    """The table of one shape: who and who -1 on each protocol, dvadm against doveadm."""
    rows = [r for r in report.shape_rows if r.shape == shape.name]
    if not rows:
        return ""
    heads = ["mode", "proto", "dvadm", "doveadm", "ratio", "limit", "dvadm RSS", "doveadm RSS", "RSS limit"]
    heads += ["met?", "(cpu ratio)"]
    lines = []
    for r in rows:
        dove = r.doveadm
        lines.append(
            [
                "who -1" if r.mode == "who1" else "who",
                f"v{r.protocol}",
                fmt_value("wall", r.dvadm.median_wall),
                fmt_value("wall", dove.median_wall if dove else None),
                f"{r.wall_ratio:.2f}x" if r.wall_ratio is not None else "-",
                f"<= {WALL_LIMIT:.2f}x",
                fmt_value("rss", r.dvadm.median_rss_mib),
                fmt_value("rss", dove.median_rss_mib if dove else None),
                f"<= {r.rss_limit:.1f} MiB" if r.rss_limit is not None else "-",
                r.status() + (" (stretch met)" if r.stretch_met else ""),
                f"{r.cpu_ratio:.2f}x" if r.cpu_ratio is not None else "-",
            ]
        )
    size = f"{report.settings['sessions']:,}"
    title = f"\nShape {shape.name}: {shape.description} ({size} sessions)\n"
    return title + table(heads, lines, right=(2, 3, 4, 6, 7, 10))


def render_shapes(report: Report) -> str:
    """One table per shape."""
    parts = [render_shape(report, shape) for shape in SHAPES]
    if any(parts):
        parts.insert(
            0,
            "\nwho on big servers: medians; ratio = median over interleaved pairs of dvadm / doveadm wall"
            " (v1: doveadm 2.3 on the host, v2: doveadm 2.4 in its chroot)\n",
        )
    return "".join(parts)


def render(report: Report) -> str:
    parts = []
    rows = [
        [
            t.name,
            fmt_value(t.metric, t.value(t.dvadm)),
            fmt_value(t.metric, t.value(t.baseline)),
            f"{t.ratio:.2f}x" if t.ratio is not None else "-",
            t.limit_text(),
            t.met_text(),
            f"{t.cpu_ratio:.2f}x" if t.cpu_ratio is not None else "-",
        ]
        for t in report.targets
    ]
    parts.append(
        "Targets (medians; ratio = dvadm / baseline; cpu ratio = the same for user+sys time, info)\n"
    )
    heads = ["target", "dvadm", "baseline", "ratio", "limit", "met?", "(cpu ratio)"]
    parts.append(table(heads, rows, right=(1, 2, 3, 6)))
    notes = [f"  {t.name}: {t.note}" for t in report.targets if t.note]
    if notes:
        parts.append("\n".join(notes) + "\n")
    parts.append(render_shapes(report))
    figures = []
    for s in report.series:
        figures.append(
            [
                s.name,
                str(len(s.runs)),
                fmt_value("wall", s.median_wall),
                fmt_value("wall", min(s.walls) if s.runs else None),
                fmt_value("wall", max(s.walls) if s.runs else None),
                fmt_value("wall", s.median_cpu()),
                fmt_value("rss", s.median_rss_mib),
                "-" if s.rows is None else f"{s.rows:,}",
                s.timer,
            ]
        )
    parts.append("\nAbsolute figures (whole processes)\n")
    heads = ["command", "runs", "median", "min", "max", "cpu (med)", "peak RSS (med)", "rows", "timer"]
    parts.append(table(heads, figures, right=(1, 2, 3, 4, 5, 6, 7)))
    if report.checks:
        parts.append("\nSanity checks\n")
        parts.append(
            table(
                ["check", "ok?", "detail"], [[n, "ok" if ok else "FAILED", d] for n, ok, d in report.checks]
            )
        )
    errors = [f"  {s.name}: {e}" for s in report.series for e in s.errors]
    if errors:
        parts.append("\nERRORS\n" + "\n".join(errors) + "\n")
    missed = missed_targets(report)
    measured = sum(t.met is not None for t in report.targets)
    measured += sum((r.wall_met is not None) + (r.rss_met is not None) for r in report.shape_rows)
    parts.append("\n")
    if missed:
        parts.append(f"MISSED {len(missed)} of {measured} targets:\n")
        parts.append("".join(f"  MISSED: {name}\n" for name in missed))
    else:
        parts.append("All measured targets met.\n")
    return "".join(parts)


def missed_targets(report: Report) -> list[str]:
    missed = [t.name for t in report.targets if t.met is False]
    for r in report.shape_rows:
        for what, met in (("wall", r.wall_met), ("peak RSS", r.rss_met)):
            if met is False:
                missed.append(f"{'who -1' if r.mode == 'who1' else 'who'} {r.shape} v{r.protocol}: {what}")
    return missed


def to_json(report: Report) -> dict[str, object]:
    return {
        "settings": report.settings,
        "environment": environment(report.settings["chroot24"]),  # type: ignore[arg-type]
        "simulator_startup_s": report.simulators,
        "simulator_kick_round_trip_us": report.kick_round_trip_us,
        "targets": [t.to_json() for t in report.targets],
        "shapes": [r.to_json() for r in report.shape_rows],
        "missed": missed_targets(report),
        "commands": {s.name: s.to_json() for s in report.series},
        "checks": [{"check": n, "ok": ok, "detail": d} for n, ok, d in report.checks],
    }


def environment(root: str | None) -> dict[str, object]:
    def dist(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    def first_line(argv: list[str]) -> str | None:
        if not shutil.which(argv[0]):
            return None
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else None

    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "cliff": dist("cliff"),
        "stevedore": dist("stevedore"),
        "dvadm": dist("dvadm"),
        "dovecot": first_line(["dovecot", "--version"]),
        "dovecot_24_chroot": first_line(["chroot", root, "/usr/sbin/dovecot", "--version"]) if root else None,
        "hyperfine": first_line(["hyperfine", "--version"]),
    }


def settings_of(args: argparse.Namespace) -> dict[str, object]:
    return {
        "runs": args.runs,
        "startup_runs": args.startup_runs,
        "sessions": args.sessions,
        "shapes": list(args.shapes),
        "chroot24": args.chroot24,
        "kick_sessions": args.kick_sessions,
        "kick_delay_s": KICK_DELAY,
        "quick": args.quick,
        "timer": args.timer,
        "only": list(args.only),
        "dvadm": args.dvadm,
        "doveadm": args.doveadm,
        "bytecode_cache": "on for every child (PYTHONDONTWRITEBYTECODE removed)",
    }


def find_chroot24(given: str | None) -> str | None:
    """The 2.4 chroot to take doveadm from: ``given``, else the newest suite built; None if unusable."""
    if given == "none":
        return None
    base = os.environ.get("DVADM_DOVECOT_CHROOTS") or DEFAULT_CHROOTS
    candidates = [given] if given else [os.path.join(base, f"dovecot-{suite}") for suite in ("sid", "trixie")]
    for root in candidates:
        if os.geteuid() == 0 and os.access(os.path.join(root, "usr/bin/doveadm"), os.X_OK):
            return os.path.abspath(root)
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--runs", type=int, default=None, help="timed runs per heavy command (default 5; quick 3)")
    p.add_argument(
        "--startup-runs", type=int, default=None, help="timed runs per start-up command (default 30)"
    )
    p.add_argument("--sessions", type=int, default=None, help="sessions for who (default 1000000)")
    p.add_argument("--kick-sessions", type=int, default=None, help="sessions to kick (default 10000)")
    p.add_argument("--quick", action="store_true", help="small sizes and few runs: a smoke run")
    p.add_argument("--json", default="bench-results.json", metavar="PATH", help="where to write the results")
    p.add_argument(
        "--timer",
        choices=("internal", "hyperfine"),
        default="internal",
        help="start-up timer: interleaved perf_counter + wait4 (default), or hyperfine's batches",
    )
    p.add_argument(
        "--only",
        default=",".join(PHASES),
        help=f"comma-separated phases to run (default all: {','.join(PHASES)})",
    )
    p.add_argument("--dvadm", default=None, help="dvadm executable (default: next to this python)")
    p.add_argument("--doveadm", default=None, help="doveadm executable (default: on PATH; 'none' to skip)")
    p.add_argument(
        "--chroot24",
        default=None,
        metavar="DIR",
        help="Debian chroot with Dovecot 2.4 whose doveadm is the protocol-2 baseline (default: "
        f"$DVADM_DOVECOT_CHROOTS or {DEFAULT_CHROOTS}, dovecot-sid or dovecot-trixie; 'none' to skip)",
    )
    p.add_argument(
        "--shapes",
        default=",".join(BY_NAME),
        help=f"comma-separated session shapes for who (default all: {','.join(BY_NAME)})",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.runs = args.runs or (1 if quick else 5)
    args.startup_runs = args.startup_runs or (3 if quick else 30)
    args.sessions = args.sessions or (2_000 if quick else 1_000_000)
    args.kick_sessions = args.kick_sessions or (500 if quick else 10_000)
    args.shapes = [shape.strip() for shape in args.shapes.split(",") if shape.strip()]
    if unknown := set(args.shapes) - set(BY_NAME):
        p.error(f"unknown shape(s) {', '.join(sorted(unknown))}; choose from {', '.join(BY_NAME)}")
    args.chroot24 = find_chroot24(args.chroot24)
    args.only = [phase.strip() for phase in args.only.split(",") if phase.strip()]
    if unknown := set(args.only) - set(PHASES):
        p.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    if args.dvadm is None:
        args.dvadm = os.path.join(os.path.dirname(sys.executable), "dvadm")
        if not os.access(args.dvadm, os.X_OK):
            args.dvadm = shutil.which("dvadm")
    if not args.dvadm:
        p.error("dvadm is not installed next to this python nor on PATH; use --dvadm")
    if args.doveadm is None:
        args.doveadm = shutil.which("doveadm")
    elif args.doveadm == "none":
        args.doveadm = None
    if args.timer == "hyperfine" and not hyperfine_available():
        p.error("--timer hyperfine: hyperfine is not installed")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stdout
    if not args.doveadm:
        out.write("# doveadm not found: protocol-1 rows are dvadm alone\n")
    if not args.chroot24:
        out.write("# no usable Dovecot 2.4 chroot (needs root): protocol-2 rows are dvadm alone\n")
    if args.quick:
        out.write("# --quick: small sizes, figures are a smoke test, not the targets' sizes\n")
    out.write(f"# dvadm: {args.dvadm}; python: {sys.executable}; doveadm: {args.doveadm}")
    out.write(f"; 2.4 chroot: {args.chroot24}\n")
    report = Bench(args, out).run()
    text = render(report)
    out.write("\n" + text)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(to_json(report), f, indent=2)
        f.write("\n")
    out.write(f"\nresults written to {args.json}\n")
    broken = any(s.errors for s in report.series) or not all(ok for _, ok, _ in report.checks)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
