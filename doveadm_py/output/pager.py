"""doveadm's ``pager`` printer: one ``title: value`` line per field, records separated by ``\\f\\n``.

As ``doveadm-print-pager.c``: ``\\f\\n`` is written before the first field of every record except the
first; the global ``-h`` is ignored and a header's ``hide_title`` drops its ``title: `` prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from doveadm_py.output import Formatter, Header, batched, percent_literal

RECORD_SEPARATOR = "\f\n"


class PagerFormatter(Formatter):
    """``-f pager``."""

    name = "pager"

    def _write(self, headers: Sequence[Header], rows: Iterable[Sequence[str]]) -> None:
        template = "".join(("%s\n" if h.hide_title else percent_literal(h.title) + ": %s\n") for h in headers)
        out = self.out
        separator = ""
        for batch in batched(rows):
            out.write(separator + RECORD_SEPARATOR.join(map(template.__mod__, map(tuple, batch))))
            separator = RECORD_SEPARATOR
