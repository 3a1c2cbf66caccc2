"""``who`` and ``who -1`` on every benchmark shape (small sizes) give the reference code's bytes.

The shapes (``bench/shapes.py``) are what the benchmark times: distinct and shared client IPs, few
users with many sessions, one session per user, long names, 2.4 alt fields and proxies, lmtp without
IP. Here each is cut into blocks as the socket would deliver it and printed through the fast paths
(bulk parsing, aggregation, column blocks) and through the plain record-by-record reference, with
every formatter. Sizes are small and every loop is bounded.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from who_helpers import FakeDump, reference_aggregate

from doveadm_py.anvil.dump import DumpGuard
from doveadm_py.commands.who import aggregated, separate
from doveadm_py.masks import parse_masks
from doveadm_py.output.flow import FlowFormatter
from doveadm_py.output.json import JsonFormatter
from doveadm_py.output.tab import TabFormatter
from doveadm_py.output.table import TableFormatter
from doveadm_py.sessionview import (
    AGGREGATED_V1,
    AGGREGATED_V2,
    select_sessions,
    separate_headers,
    separate_rows,
)

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
from shapes import SHAPES, dump_lines  # noqa: E402

CASES = [(shape.name, protocol) for shape in SHAPES for protocol in shape.protocols]
FORMATTERS = {"table": TableFormatter, "tab": TabFormatter, "flow": FlowFormatter, "json": JsonFormatter}


def _dump(shape: str, protocol: int, n: int, block: int) -> tuple[tuple[str, ...], list[list[bytes]]]:
    header, lines = dump_lines(shape, protocol, n)
    alt_fields = tuple(header[0].decode().split("\t")) if header else ()
    return alt_fields, [lines[i : i + block] for i in range(0, len(lines), block)]


def _render(printer: str, headers: Any, rows: Any, protocol: int) -> str:
    out = io.StringIO()
    FORMATTERS[printer](out, generation=protocol).write(headers, rows)
    return out.getvalue()


@pytest.mark.parametrize(("shape", "protocol"), CASES)
def test_who_on_a_shape_is_the_reference(shape: str, protocol: int) -> None:
    headers = AGGREGATED_V1 if protocol == 1 else AGGREGATED_V2
    # heavy-users: 100 users, so 12,000 sessions make groups long enough to outgrow their texts
    n = 12_000 if shape == "heavy-users" else 700
    alt_fields, blocks = _dump(shape, protocol, n, 257)
    for masks in ([], ["*1*"], ["10.0.0.0/8"]):
        filter_ = parse_masks(masks)
        want_rows = list(
            reference_aggregate(protocol, DumpGuard(FakeDump(protocol, alt_fields, blocks)), filter_)
        )
        for printer in FORMATTERS:
            _, rows, guard = aggregated(FakeDump(protocol, alt_fields, blocks), filter_)
            got = _render(printer, headers, rows, protocol)
            assert got == _render(printer, headers, want_rows, protocol), (printer, masks)
            assert guard.error is None
        assert len(want_rows) > 10 or masks == ["10.0.0.0/8"]


@pytest.mark.parametrize(("shape", "protocol"), CASES)
def test_who_1_on_a_shape_is_the_reference(shape: str, protocol: int) -> None:
    alt_fields, blocks = _dump(shape, protocol, 700, 257)
    headers = separate_headers(protocol, alt_fields)
    for masks in ([], ["*1*"], ["10.0.0.0/8"]):
        filter_ = parse_masks(masks)
        sessions = select_sessions(DumpGuard(FakeDump(protocol, alt_fields, blocks)), filter_)
        want_rows = list(separate_rows(protocol, sessions, len(alt_fields)))
        for printer in FORMATTERS:
            dump = FakeDump(protocol, alt_fields, blocks)
            _, rows, guard = separate(dump, filter_)
            got = _render(printer, headers, rows, protocol)
            assert got == _render(printer, headers, want_rows, protocol), (printer, masks)
            assert guard.error is None and not dump.invalid
        assert len(want_rows) > 10 or masks == ["10.0.0.0/8"]


def test_quick_benchmark_runs(tmp_path: Path) -> None:
    """``bench/run.py --quick`` on one shape runs, checks row counts, writes its JSON (timing unchecked)."""
    out = tmp_path / "bench.json"
    argv = [
        sys.executable,
        str(BENCH / "run.py"),
        "--quick",
        "--only",
        "who,who1",
        "--shapes",
        "distinct-ips",
    ]
    argv += ["--json", str(out)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=os.environ.copy()
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Shape distinct-ips" in done.stdout
    results = json.loads(out.read_text())
    rows = {(r["mode"], r["protocol"]) for r in results["shapes"]}
    assert rows == {("who", 1), ("who -1", 1), ("who", 2), ("who -1", 2)}
    assert all(check["ok"] for check in results["checks"])


def test_stage_profile_times_every_stage_of_who() -> None:
    """``bench/stages.py`` prints one row per mode with each stage's own CPU time (none negative)."""
    argv = [
        sys.executable,
        str(BENCH / "stages.py"),
        "--sessions",
        "3000",
        "--shapes",
        "lmtp",
        "--protocols",
        "1",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("lmtp")]
    assert [row[2:-5] for row in rows] == [["who"], ["who", "-1"]]
    startup = float(done.stdout.split(":")[1].split()[0])
    for row in rows:
        lines, parse, middle, output, total = map(float, row[-5:])
        assert min(lines, parse, middle, output) >= 0
        assert total >= startup > 0
        # six figures printed to 3 decimals: each rounded by up to 0.0005
        assert abs(total - (startup + lines + parse + middle + output)) <= 6 * 0.0005 + 1e-9
