"""Fleet benchmark: ``dvadm who -S all`` across 20 servers takes about the slowest one, not the sum.

Twenty fake doveadm HTTP API servers (:class:`doveadm_py.testing.fleet.FakeApiServer`), each
answering after its own delay (0.05 s to 1.0 s) with 50 sessions. Each server is first asked
alone, one after the other, in this process (the sum and the max of those times); then the
whole fleet is asked by a real ``dvadm who -S all`` process (wall time, start-up included)
and in-process through the same fan-out dvadm uses. dvadm's own cost is the same process
against servers that answer at once. Target: wall time <= max + own cost + 0.2 s, far below
the sum.

Usage: ``python bench/fleet.py [--servers N] [--runs N] [--json PATH]``. Exit 0 even when the
target is missed (a report), 1 when the output was wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from doveadm_py.testing.fleet import FakeApiServer, write_fleet
from doveadm_py.transport.fleet import ask_all
from doveadm_py.transport.http import Credentials, HttpTransport

SESSIONS_PER_SERVER = 50
SLACK = 0.2


def sessions(server: int) -> list[dict[str, str]]:
    return [
        {"username": f"user{server}-{i}", "service": "imap", "pid": str(1000 + i), "ip": f"10.0.{server}.{i}"}
        for i in range(SESSIONS_PER_SERVER)
    ]


def delays(n: int) -> list[float]:
    """Spread from 0.05 s to 1.0 s, the slowest in the middle of the fleet file."""
    values = [0.05 + 0.95 * i / max(n - 1, 1) for i in range(n)]
    return values[::2] + values[1::2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    dvadm = str(Path(sys.executable).with_name("dvadm"))
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        servers = [
            stack.enter_context(FakeApiServer(sessions(i), delay=d))
            for i, d in enumerate(delays(args.servers))
        ]
        names = [f"s{i:02d}" for i in range(len(servers))]
        write_fleet(
            Path(tmp), {n: {"url": s.url, "key": f"key-{n}"} for n, s in zip(names, servers, strict=True)}
        )
        env = dict(os.environ, DVADM_FLEET=str(Path(tmp) / "fleet.toml"))

        def transports() -> list[HttpTransport]:
            return [
                HttpTransport(n, s.url, Credentials(api_key=f"key-{n}"))
                for n, s in zip(names, servers, strict=True)
            ]

        alone = []
        for transport in transports():
            started = time.perf_counter()
            transport.sessions()
            alone.append(time.perf_counter() - started)
            transport.close()
        walls, fanouts, idles = [], [], []
        expected_rows = 1 + len(servers) * SESSIONS_PER_SERVER
        argv = [dvadm, "-f", "tab", "who", "-S", "all"]
        for _ in range(args.runs):
            started = time.perf_counter()
            proc = subprocess.run(argv, env=env, capture_output=True, timeout=120)
            walls.append(time.perf_counter() - started)
            if proc.returncode != 0 or proc.stdout.count(b"\n") != expected_rows:
                print(f"wrong output: exit {proc.returncode}, {proc.stderr.decode()!r}", file=sys.stderr)
                return 1
            started = time.perf_counter()
            ask_all(transports(), lambda t: t.sessions())
            fanouts.append(time.perf_counter() - started)
            saved = [server.delay for server in servers]
            for server in servers:  # the same run with servers that answer at once: dvadm's own cost
                server.delay = 0.0
            started = time.perf_counter()
            subprocess.run(argv, env=env, capture_output=True, timeout=120, check=True)
            idles.append(time.perf_counter() - started)
            for server, delay in zip(servers, saved, strict=True):
                server.delay = delay
    total, slowest = sum(alone), max(alone)
    wall, fanout, idle = statistics.median(walls), statistics.median(fanouts), statistics.median(idles)
    ok = wall <= slowest + idle + SLACK
    print(f"fleet who, {len(alone)} servers x {SESSIONS_PER_SERVER} sessions, median of {args.runs} runs")
    print(f"  each server alone, one after the other: sum {total:.3f} s, max {slowest:.3f} s")
    print(
        f"  dvadm who -S all (process wall time):   {wall:.3f} s  = {wall / slowest:.2f} x max, "
        f"{wall / total:.2f} x sum"
    )
    print(f"  in-process fan-out:                     {fanout:.3f} s  = {fanout / slowest:.2f} x max")
    print(f"  dvadm's own cost (servers answer at once): {idle:.3f} s")
    print(f"  target wall <= max + own cost + {SLACK} s: {'OK' if ok else 'MISSED'}")
    if args.json:
        figures = {
            "servers": len(alone),
            "sum": total,
            "max": slowest,
            "wall": wall,
            "fanout": fanout,
            "ok": ok,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
