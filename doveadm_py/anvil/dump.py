"""The streaming reply to CONNECT-DUMP: anvil's sessions, read and parsed as they arrive."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from doveadm_py.anvil.connection import Connection
from doveadm_py.anvil.escape import split_tabescaped
from doveadm_py.anvil.records import (
    ENCODING,
    ERRORS,
    AnvilError,
    AnvilProtocolError,
    SessionV1,
    SessionV2,
    parse_v1_line,
    parse_v2_line,
)

if TYPE_CHECKING:
    from doveadm_py.anvil.bulk import Piece


class ConnectDump:
    """A streaming CONNECT-DUMP reply: iterate it for SessionV1/SessionV2 records.

    ``protocol`` says which; ``alt_fields`` is the 2.4 header (empty for 2.3). The
    socket is read in large chunks as you iterate and closed at the end, so memory
    stays bounded however many sessions anvil has. Use either the records,
    :meth:`pieces` (parsed in bulk) or :meth:`iter_lines` / :meth:`iter_blocks` (raw
    lines), only one of them.

    Malformed lines follow doveadm: 2.3 skips them (counted in ``invalid_lines`` and
    passed to ``on_invalid``, which doveadm logs as "Invalid input: <line>"); 2.4
    raises :class:`AnvilProtocolError` after the rows before it were yielded. EOF
    before the terminator raises in 2.4; in 2.3 it ends the dump like doveadm 2.3
    unless it cuts a line in half, which raises. ``complete`` tells whether the
    terminator was seen.
    """

    def __init__(
        self,
        conn: Connection,
        protocol: int,
        *,
        timeout: float,
        on_invalid: Callable[[bytes], None] | None = None,
    ) -> None:
        self.protocol = protocol
        self.alt_fields: tuple[str, ...] = ()
        self.invalid_lines = 0
        self.complete = False
        self._conn: Connection | None = conn
        self._timeout = timeout
        self._on_invalid = on_invalid
        self._records: Iterator[SessionV1 | SessionV2] | None = None
        self._started = False
        if protocol == 2:
            try:
                header = conn.read_line(timeout, "the CONNECT-DUMP header line")
            except BaseException:
                self.close()
                raise
            if header is None:
                self.close()
                raise conn.eof_error()
            self.alt_fields = tuple(f.decode(ENCODING, ERRORS) for f in split_tabescaped(header))

    @property
    def path(self) -> str:
        return self._conn.label if self._conn is not None else ""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ConnectDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def iter_blocks(self) -> Iterator[list[bytes]]:
        """Raw session lines (no LF, terminator excluded) in lists of one socket read each."""
        if self._started:
            raise RuntimeError("a ConnectDump can be iterated only once")
        self._started = True
        conn = self._conn
        if conn is None:
            return
        try:
            self.complete = yield from conn.iter_blocks(self._timeout, "the CONNECT-DUMP reply")
            if not self.complete and self.protocol == 2:
                raise conn.eof_error()
        finally:
            self.close()

    def iter_lines(self) -> Iterator[bytes]:
        """Raw session lines one by one (no LF, terminator excluded)."""
        for block in self.iter_blocks():
            yield from block

    def pieces(self) -> Iterator[Piece]:
        """The sessions, parsed in bulk: column blocks and lists of records, in dump order.

        Together they are exactly the records that iterating gives, with the same invalid-line
        handling (see :mod:`doveadm_py.anvil.bulk`), at a quarter of the cost on big dumps.
        """
        from doveadm_py.anvil.bulk import BulkParser

        parser = BulkParser(
            self.protocol, n_alt=len(self.alt_fields), on_invalid=self._invalid, label=self.path
        )
        return parser.pieces(self.iter_blocks())

    def __iter__(self) -> Iterator[SessionV1 | SessionV2]:
        if self._records is None:
            self._records = self._iter_v2() if self.protocol == 2 else self._iter_v1()
        return self._records

    def __next__(self) -> SessionV1 | SessionV2:
        return next(iter(self))

    def _invalid(self, line: bytes) -> None:
        """A malformed 2.3 line: counted, reported, skipped."""
        self.invalid_lines += 1
        if self._on_invalid is not None:
            self._on_invalid(line)

    def _iter_v1(self) -> Iterator[SessionV1]:
        parse = parse_v1_line
        for block in self.iter_blocks():
            for line in block:
                try:
                    record = parse(line)
                except AnvilProtocolError:
                    self._invalid(line)
                    continue
                yield record

    def _iter_v2(self) -> Iterator[SessionV2]:
        parse = parse_v2_line
        n_alt = len(self.alt_fields)
        label = self.path
        for block in self.iter_blocks():
            for line in block:
                try:
                    record = parse(line, n_alt)
                except AnvilProtocolError as e:
                    raise AnvilProtocolError(f"{label}: {e}") from None
                yield record


class DumpGuard:
    """Iterates a dump and keeps a mid-dump failure for after the rows read so far are shown.

    doveadm 2.4 prints what it read before a malformed line or an early EOF, then exits 75.
    """

    def __init__(self, dump: Iterable[Any]) -> None:
        self.dump = dump
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self.dump
        except AnvilError as err:
            self.error = err

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error
