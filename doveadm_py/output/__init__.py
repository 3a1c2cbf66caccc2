"""doveadm's print formatters (``-f table|tab|flow|pager|json|formatted``) as pluggable classes.

A command describes its result as a list of :class:`Header` plus rows of strings and hands both to one
:class:`Formatter`, which writes the whole result to a text stream. Formatters are found through the
``dvadm.formatters`` entry points (:func:`load_formatter`), so third-party packages can add their own.

Rows may be a lazy iterator of any length: every formatter streams and writes in batches of
:data:`BATCH_ROWS` rows (one ``out.write`` per batch), only ``table`` buffers rows to measure them (100, as
doveadm). Every row must have exactly one value per header. With no headers nothing is written. Producers
that parse in bulk hand their rows over column-wise as :class:`ColumnBlocks`, which every formatter accepts
as rows too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TextIO

from doveadm_py.errors import EX_SOFTWARE, EX_TEMPFAIL, DoveadmError

FORMATTER_NAMESPACE = "dvadm.formatters"
BATCH_ROWS = 512
"""Rows joined into one ``out.write``: amortises the per-call cost of the text stream."""


@dataclass(frozen=True, slots=True)
class Header:
    """One output column: ``key`` names it for json/formatted, ``title`` labels it for the others.

    ``right`` right-justifies the table column (doveadm's ``#``); ``expand`` makes the table column take
    the spare width; ``hide_title`` suppresses the title in flow/pager and, when every header has it, the
    table's header line (doveadm's header flags RIGHT_JUSTIFY, EXPAND and HIDE_TITLE).
    """

    key: str
    title: str
    right: bool = False
    expand: bool = False
    hide_title: bool = False


class Formatter:
    """Base class of the printers; subclasses implement :meth:`_write`.

    ``generation`` is the server's Dovecot protocol generation (1 = 2.3, 2 = 2.4) because a few output
    bytes differ between them; ``format`` is the command's format string, used only by ``formatted``.
    """

    name: str = ""

    def __init__(
        self,
        out: TextIO,
        *,
        hide_titles: bool = False,
        generation: int = 2,
        format: str | None = None,
    ) -> None:
        self.out = out
        self.hide_titles = hide_titles
        self.generation = generation
        self.format = format

    def write(self, headers: Sequence[Header], rows: Iterable[Sequence[str]]) -> None:
        """Render a whole result: the titles (if this printer shows them), then every row."""
        if headers:
            self._write(headers, rows)

    def _write(self, headers: Sequence[Header], rows: Iterable[Sequence[str]]) -> None:
        raise NotImplementedError


class ColumnBlocks:
    """Rows handed over column-wise, one block at a time, as bulk producers (``who`` on big dumps) make them.

    ``blocks`` yields sequences of columns: one column (a sequence of str) per header, all of one length.
    Iterating a ColumnBlocks gives its rows as tuples, so any formatter takes it as rows. :func:`batched`
    turns each block into rows with one ``zip`` instead of one generator step per row, and the table
    formatter keeps the columns: its 2.4 '-' for empty values is then one scan per column instead of one
    per value (16% of ``who -1`` on a 2.4 dump, whose ``dest_ip`` column is nearly always empty).
    """

    __slots__ = ("blocks",)

    def __init__(self, blocks: Iterable[Sequence[Sequence[str]]]) -> None:
        self.blocks = blocks

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for columns in self.blocks:
            yield from zip(*columns, strict=True)


def batched(rows: Iterable[Sequence[str]], size: int = BATCH_ROWS) -> Iterator[list[Sequence[str]]]:
    """Yield lists of up to ``size`` rows, consuming ``rows`` lazily (itertools.batched is 3.12+)."""
    if isinstance(rows, ColumnBlocks):
        for columns in rows.blocks:
            block: list[Sequence[str]] = list(zip(*columns, strict=True))
            for start in range(0, len(block), size):
                yield block[start : start + size]
        return
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def percent_literal(text: str) -> str:
    """Quote ``text`` for use as literal text inside a ``%``-formatting template."""
    return text.replace("%", "%%")


def load_formatter(name: str) -> type[Formatter]:
    """Return the formatter class registered as ``name`` in the ``dvadm.formatters`` entry points.

    Only that one entry point is imported. stevedore's cached entry point list is used instead of
    scanning every installed distribution, which keeps ``-f`` cheap at start-up.
    """
    from doveadm_py.loader import list_entry_points

    for entry_point in list_entry_points(FORMATTER_NAMESPACE):
        if entry_point.name == name:
            break
    else:
        raise DoveadmError(f"Unknown print formatter: {name}", EX_TEMPFAIL)
    try:
        cls = entry_point.load()
    except Exception as exc:
        raise DoveadmError(
            f"print formatter {name} ({entry_point.value}) failed to load: {exc}", EX_SOFTWARE
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Formatter)):
        raise DoveadmError(f"print formatter {name} ({entry_point.value}) is not a Formatter", EX_SOFTWARE)
    return cls
