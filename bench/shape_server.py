"""Serve one benchmark shape (see shapes.py) on an anvil socket until SIGTERM or SIGINT.

``python bench/shape_server.py --shape distinct-ips --protocol 1 --sessions 1000000 --socket PATH``
prints PATH when ready. It is the simulator (:class:`~doveadm_py.testing.simulator.AnvilSimulator`)
with the shape's dump in place of its generated table: the dump is built once and sent as one
buffer, so a client measures its own speed, not the server's.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from shapes import BY_NAME, dump_lines

from doveadm_py.testing.simulator import AnvilSimulator


class ShapeTable:
    """The part of the simulator's table interface a CONNECT-DUMP uses (no kicks)."""

    def __init__(self, header: list[bytes], lines: list[bytes]) -> None:
        self.alt_fields = [name.decode() for name in header[0].split(b"\t")] if header else []
        self._lines = (header, lines)
        self._payload = b"".join([line + b"\n" for line in (*header, *lines)]) + b"\n"

    def dump_lines(self, protocol: int) -> tuple[list[bytes], list[bytes]]:
        return self._lines

    def payload(self, protocol: int) -> bytes:
        return self._payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", required=True, choices=sorted(BY_NAME))
    parser.add_argument("--protocol", type=int, choices=(1, 2), required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--socket", required=True, metavar="PATH")
    args = parser.parse_args(argv)
    table = ShapeTable(*dump_lines(args.shape, args.protocol, args.sessions))
    directory, name = os.path.split(os.path.abspath(args.socket))
    sim = AnvilSimulator(args.protocol, directory=directory, socket_name=name)
    sim._table = table  # type: ignore[assignment]  # the shape's dump instead of a generated one
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with sim:
        sys.stdout.write(sim.path + "\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
