"""doveadm's table output, made comparable across the 2.4 patch levels.

doveadm 2.4.1 prints an empty table cell (``dest_ip`` of a direct login, a missing alternative username) as
blanks where 2.4.2 and later print ``-``, as dvadm does on every 2.4 server (docs/compatibility.rst).
"""

from __future__ import annotations

from doveadm_py.testing.servers import DovecotServer

#: doveadm versions whose tables leave empty cells blank.
BLANK_CELL_VERSIONS = ("2.4.1",)


def prints_blank_cells(server: DovecotServer) -> bool:
    """True if this server's doveadm leaves empty table cells blank (2.4.1)."""
    return (server.version() or "").startswith(BLANK_CELL_VERSIONS)


def dash_blank_cells(table: bytes) -> bytes:
    """A 2.4.1 ``who -1`` style table with each blank cell given the ``-`` later versions print.

    A column starts where some line has a character after a position that is a space on every line, so
    each column needs a value on some line (the title line, unless hidden). Only for tables whose columns
    are as wide as their widest cell (``who -1``), not for aggregated ``who`` (sized by its first row).
    """
    rows = table.decode().splitlines()
    if not rows:
        return table
    width = max(len(row) for row in rows)
    padded = [row.ljust(width) for row in rows]
    starts = [
        col
        for col in range(width)
        if (col == 0 or all(row[col - 1] == " " for row in padded)) and any(row[col] != " " for row in padded)
    ]
    filled = []
    for row, full in zip(rows, padded, strict=True):
        cells = list(full)
        for start, end in zip(starts, [*starts[1:], width + 1], strict=True):
            if full[start : end - 1].strip() == "":
                cells[start] = "-"
        text = "".join(cells)
        filled.append(text[: len(row)] if text[len(row) :].strip() == "" else text.rstrip())
    return "".join(f"{row}\n" for row in filled).encode()
