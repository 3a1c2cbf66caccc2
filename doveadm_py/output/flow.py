"""doveadm's ``flow`` printer: one line per row of ``title=value`` pairs joined by single spaces.

As ``doveadm-print-flow.c``: no quoting or escaping; the global ``-h`` is ignored and only a header's
own ``hide_title`` drops its ``title=`` prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from doveadm_py.output import Formatter, Header, batched, percent_literal


class FlowFormatter(Formatter):
    """``-f flow``."""

    name = "flow"

    def _write(self, headers: Sequence[Header], rows: Iterable[Sequence[str]]) -> None:
        template = " ".join(("%s" if h.hide_title else percent_literal(h.title) + "=%s") for h in headers)
        template += "\n"
        out = self.out
        for batch in batched(rows):
            out.write("".join(map(template.__mod__, map(tuple, batch))))
