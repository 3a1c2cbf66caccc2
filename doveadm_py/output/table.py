"""doveadm's ``table`` printer: space-aligned columns sized from the first buffered rows.

Byte-compatible with ``doveadm-print-table.c``: the width algorithm (code-point lengths, the single
shrink pass from the last column, the expand rule) and the printing (padding in code points, no
truncation, trailing spaces kept) are the same. Rows are buffered until ``buffer_rows`` (doveadm: 100)
are seen or the input ends; the widths are then fixed for the rest of the output.

doveadm's aggregated ``who`` flushes after every row, so there the widths come from the first row only;
``TableFormatter(..., buffer_rows=1)`` reproduces that exactly. dvadm's default measures 100 rows.

Rows given as :class:`~doveadm_py.output.ColumnBlocks` are printed block by block from their columns,
with the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import chain, islice
from typing import TextIO

from doveadm_py.output import ColumnBlocks, Formatter, Header, batched

DEFAULT_COLUMNS = 80
MIN_COLUMNS = 30
MAX_BUFFER_ROWS = 100


def terminal_width(out: TextIO) -> int:
    """The width doveadm uses: the terminal's columns (at least 30) if ``out`` is a TTY, else 80."""
    try:
        if out.isatty():
            return max(os.get_terminal_size(out.fileno()).columns, MIN_COLUMNS)
    except (OSError, ValueError, AttributeError):
        pass
    return DEFAULT_COLUMNS


def column_widths(headers: Sequence[Header], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Column widths exactly as doveadm's ``doveadm_calc_header_length()`` computes them.

    Lengths count code points. If the natural total is too wide, one pass from the last column to the
    first either cuts a column's whole excess (when its slack, length minus its shortest value, covers it)
    and stops, or halves its slack (1 if the slack is 1). Partial cuts do not lower the running total, so
    when no column could absorb the excess alone, the pass ends with only the partial cuts applied (the
    loop "stops when a pass leaves the total unchanged"). If the total is narrower than ``width``, the
    first EXPAND column, or else the last column, grows by half the spare width.
    """
    lengths = [len(h.title) for h in headers]
    minimums = lengths[:]
    for i, column in enumerate(zip(*rows, strict=True)):
        value_lengths = list(map(len, column))
        lengths[i] = max(lengths[i], *value_lengths)
        minimums[i] = min(minimums[i], *value_lengths)

    total = sum(lengths) + len(lengths) - 1
    while total > width:
        before = total
        for i in range(len(lengths) - 1, -1, -1):
            slack = lengths[i] - minimums[i]
            if total - slack <= width:
                excess = total - width
                lengths[i] -= excess
                total -= excess
                break
            if slack > 0:
                lengths[i] -= 1 if slack == 1 else slack // 2
        if total == before:
            break
    if total < width:
        grow = next((i for i, h in enumerate(headers) if h.expand), len(headers) - 1)
        lengths[grow] += (width - total) // 2
    return lengths


def line_template(headers: Sequence[Header], widths: Sequence[int]) -> str:
    """A ``%``-template printing one padded line: ``%-Ns`` or ``%Ns`` per column, spaces between."""
    fields = []
    for header, w in zip(headers, widths, strict=True):
        if w <= 0:
            fields.append("%s")
        else:
            fields.append(f"%{w}s" if header.right else f"%-{w}s")
    return " ".join(fields) + "\n"


class TableFormatter(Formatter):
    """``-f table`` (the default of who and penalty).

    Extra keyword arguments: ``buffer_rows`` is how many rows are measured before the widths are fixed
    (doveadm: 100; 1 reproduces doveadm's aggregated ``who``, which flushes after every row); ``width``
    overrides the terminal width. After :meth:`write`, ``widths`` holds the column widths used.
    """

    name = "table"

    def __init__(
        self,
        out: TextIO,
        *,
        hide_titles: bool = False,
        generation: int = 2,
        format: str | None = None,
        buffer_rows: int = MAX_BUFFER_ROWS,
        width: int | None = None,
    ) -> None:
        super().__init__(out, hide_titles=hide_titles, generation=generation, format=format)
        self.buffer_rows = buffer_rows
        self.width = terminal_width(out) if width is None else width
        self.widths: list[int] | None = None

    def _write(self, headers: Sequence[Header], rows: Iterable[Sequence[str]]) -> None:
        if isinstance(rows, ColumnBlocks):
            self._write_columns(headers, rows)
            return
        it = iter(rows)
        first: list[Sequence[str]] = list(map(tuple, islice(it, self.buffer_rows)))
        template = self._start(headers, first)
        out = self.out
        # Dovecot 2.4.2+ prints an empty value as "-" (measured as length 0 above).
        dash = self.generation >= 2
        for batch in chain((first,), batched(it)):
            if dash and "" in chain.from_iterable(batch):
                out.write("".join([template % tuple([v or "-" for v in row]) for row in batch]))
            else:
                out.write("".join(map(template.__mod__, map(tuple, batch))))

    def _start(self, headers: Sequence[Header], first: Sequence[Sequence[str]]) -> str:
        """Fix the widths from the ``first`` rows, write the titles; the line template."""
        self.widths = column_widths(headers, first, self.width)
        template = line_template(headers, self.widths)
        if not self.hide_titles and not all(h.hide_title for h in headers):
            self.out.write(template % tuple(h.title for h in headers))
        return template

    def _write_columns(self, headers: Sequence[Header], rows: ColumnBlocks) -> None:
        """The same output from column blocks: measure the first rows, then one write per block."""
        blocks = iter(rows.blocks)
        first: list[tuple[str, ...]] = []
        rest: list[Sequence[Sequence[str]]] = []
        for columns in blocks:
            need = self.buffer_rows - len(first)
            if columns and len(columns[0]) > need:
                first += zip(*[column[:need] for column in columns], strict=True)
                rest.append([column[need:] for column in columns])
                break
            first += zip(*columns, strict=True)
        template = self._start(headers, first)
        dash = self.generation >= 2
        write = self.out.write
        for columns in chain(([list(c) for c in zip(*first, strict=True)],), rest, blocks):
            if dash:  # all(): the cheapest test for an empty value (3 ns per value)
                columns = [column if all(column) else _dashed(column) for column in columns]
            write("".join(map(template.__mod__, zip(*columns, strict=True))))


def _dashed(column: Sequence[str]) -> Sequence[str]:
    """A column with every empty value as '-' (2.4.2+); an all-empty one (``dest_ip``) is built at once."""
    if column.count("") == len(column):
        return ["-"] * len(column)
    return [v or "-" for v in column]
