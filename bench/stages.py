"""Where the CPU time of ``dvadm who`` and ``who -1`` goes, stage by stage, on the benchmark's shapes.

``python bench/stages.py [--sessions N] [--shapes A,B] [--protocols 1,2]`` runs the same pipeline
as ``dvadm who -a SOCKET > /dev/null`` in-process on each shape's dump (``shapes.py``) and
prints the CPU seconds of each stage:

- ``start-up``: importing what ``dvadm who`` imports, in a fresh interpreter (the rest of a run's
  fixed cost, parsing the command line, is a few milliseconds);
- ``lines``: cutting 256 KiB socket reads into blocks of lines, as the anvil connection does
  (the ``recv`` calls themselves are not included: the dump is in memory);
- ``parse``: bulk parsing the blocks into columns (``doveadm_py.anvil.bulk``);
- ``select``: ``who -1``'s per-connection rows (filtering, 2.3 refcount repeats), or
  ``aggregate``: aggregated ``who``'s groups and their rows (``doveadm_py.aggregation``);
- ``output``: the table formatter writing to /dev/null.

It explains the benchmark's figures (``bench/run.py``) where a target is missed; it measures no
target itself. Each stage's time is its own: a stage's iterator time minus its source's.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from shapes import BY_NAME, SHAPES, dump_lines

from doveadm_py.aggregation import aggregate
from doveadm_py.anvil.bulk import BulkParser
from doveadm_py.masks import Filter
from doveadm_py.output import ColumnBlocks
from doveadm_py.output.table import TableFormatter
from doveadm_py.sessionview import AGGREGATED_V1, AGGREGATED_V2, separate_columns, separate_headers

READ_SIZE = 256 * 1024
IMPORTS = "import doveadm_py.app, doveadm_py.commands.who, doveadm_py.anvil.bulk, doveadm_py.output.table"


class Timed:
    """An iterator that adds up the CPU time spent in its source's ``__next__``."""

    def __init__(self, source: Iterable[Any]) -> None:
        self.source = iter(source)
        self.seconds = 0.0

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        start = time.process_time()
        try:
            return next(self.source)
        finally:
            self.seconds += time.process_time() - start


def line_blocks(data: bytes) -> Iterator[list[bytes]]:
    """The dump's lines in blocks of one read each, as the anvil connection yields them."""
    rest = b""
    for start in range(0, len(data), READ_SIZE):
        lines = (rest + data[start : start + READ_SIZE]).split(b"\n")
        rest = lines.pop()
        if lines:
            yield lines


def startup_seconds(runs: int = 5) -> float:
    """The least CPU time (user + sys) of a fresh interpreter importing what ``dvadm who`` imports."""
    best = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", IMPORTS], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return best


def stages(shape: str, protocol: int, sessions: int, separate: bool) -> dict[str, float]:
    """CPU seconds per stage of one run of ``who`` (``separate``: ``who -1``) on a shape's dump."""
    header, lines = dump_lines(shape, protocol, sessions)
    data = b"".join([line + b"\n" for line in lines])
    del lines
    alt_fields = tuple(header[0].decode().split("\t")) if header else ()
    read = Timed(line_blocks(data))
    parse = Timed(BulkParser(protocol, n_alt=len(alt_fields)).pieces(read))
    if separate:
        headers = separate_headers(protocol, alt_fields)
        select = Timed(separate_columns(protocol, parse, Filter(), len(alt_fields)))
    else:
        headers = AGGREGATED_V1 if protocol == 1 else AGGREGATED_V2
        select = Timed(aggregate(protocol, parse, Filter()))
    start = time.process_time()
    with open(os.devnull, "w") as out:
        TableFormatter(out, generation=protocol).write(headers, ColumnBlocks(select))
    total = time.process_time() - start
    return {
        "lines": read.seconds,
        "parse": parse.seconds - read.seconds,
        "select" if separate else "aggregate": select.seconds - parse.seconds,
        "output": total - select.seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--shapes", default=",".join(s.name for s in SHAPES))
    parser.add_argument("--protocols", default="1,2")
    args = parser.parse_args(argv)
    gc.disable()  # as dvadm's console script does
    startup = startup_seconds()
    print(f"start-up (imports, fresh interpreter): {startup:.3f} s CPU\n")
    print(
        f"{'shape':<14} {'proto':<5} {'mode':<6} {'lines':>7} {'parse':>7} {'select/agg':>10} {'output':>7}",
        end="",
    )
    print(f" {'total':>7}")
    for name in args.shapes.split(","):
        for protocol in map(int, args.protocols.split(",")):
            if protocol not in BY_NAME[name].protocols:
                continue
            for separate in (False, True):
                got = stages(name, protocol, args.sessions, separate)
                middle = got.get("select", got.get("aggregate", 0.0))
                total = startup + sum(got.values())
                mode = "who -1" if separate else "who"
                figures = (got["lines"], got["parse"], middle, got["output"], total)
                print(
                    f"{name:<14} v{protocol:<4} {mode:<6} " + " ".join(f"{f:10.3f}" for f in figures),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
