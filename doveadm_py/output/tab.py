"""doveadm's ``tab`` printer: titles and values joined by TAB, one line each, nothing escaped.

As ``doveadm-print-tab.c``: a TAB or LF inside a value is written as is (the output is then ambiguous,
exactly as doveadm's). With ``-h`` there is no header line at all; with zero rows the header line is
still ended with ``\\n``. Per-header ``hide_title`` does not apply here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from doveadm_py.output import Formatter, Header, batched


class TabFormatter(Formatter):
    """``-f tab``."""

    name = "tab"

    def _write(self, headers: Sequence[Header], rows: Iterable[Sequence[str]]) -> None:
        out = self.out
        if not self.hide_titles:
            out.write("\t".join([h.title for h in headers]) + "\n")
        tab_join = "\t".join
        for batch in batched(rows):
            out.write("\n".join(map(tab_join, batch)) + "\n")
