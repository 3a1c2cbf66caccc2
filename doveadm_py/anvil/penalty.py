"""The reply to PENALTY-DUMP: anvil's authentication-failure penalties, record by record.

A malformed line raises ``AnvilProtocolError`` ("Read invalid penalty line: …"), fatal as in
doveadm; EOF before the terminator follows the CONNECT-DUMP rules (an error in 2.4 only).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

from doveadm_py.anvil.connection import Connection
from doveadm_py.anvil.records import AnvilProtocolError, PenaltyRecord, parse_penalty_line


class PenaltyDump(Iterator[PenaltyRecord]):
    """The records of a PENALTY-DUMP reply (see :meth:`AnvilClient.penalty_dump`)."""

    def __init__(self, conn: Connection, records: Iterator[PenaltyRecord]) -> None:
        self._conn: Connection | None = conn
        self._records = records

    def __next__(self) -> PenaltyRecord:
        return next(self._records)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PenaltyDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_penalties(conn: Connection, timeout: float, strict_eof: bool) -> Iterator[PenaltyRecord]:
    """The records on ``conn`` (positioned at the reply), closing it at the end; ``strict_eof``:
    EOF before the terminator is an error (2.4)."""
    try:
        complete = yield from _parse_penalties(conn, timeout)
        if not complete and strict_eof:
            raise conn.eof_error()
    finally:
        conn.close()


def _parse_penalties(conn: Connection, timeout: float) -> Generator[PenaltyRecord, None, bool]:
    blocks = conn.iter_blocks(timeout, "the PENALTY-DUMP reply")
    while True:
        try:
            block = next(blocks)
        except StopIteration as stop:
            return bool(stop.value)
        for line in block:
            try:
                record = parse_penalty_line(line)
            except AnvilProtocolError as e:
                raise AnvilProtocolError(f"{conn.label}: {e}") from None
            yield record
