"""doveadm's ``formatted`` printer: each row expanded through the command's format string.

Supported subset of Dovecot's var_expand: ``%{key}`` is replaced by the row's value for that header key
and ``%%`` by ``%``. Everything else is literal, including a ``%`` not followed by ``{`` or ``%`` and an
unterminated ``%{``. Modifiers and short (one-letter) variables are not supported; a ``%{name}`` that is
not a header key is a programming error (exit 70). Titles are never printed; each row is written as soon
as it is complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from doveadm_py.errors import EX_SOFTWARE, EX_TEMPFAIL, DoveadmError
from doveadm_py.output import Formatter, Header

# doveadm's own text and exit code (75) for ``-f formatted`` on a command without a format.
NO_FORMAT_MESSAGE = (
    "formatted formatter cannot be used without a format (this command has none; choose another with -f)"
)
_TOKEN = re.compile(r"%%|%\{([^}]*)\}")


def compile_format(format: str, keys: Sequence[str]) -> str:
    """Translate a var_expand format into a ``str.format`` template taking the row positionally."""
    index = {key: i for i, key in reversed(list(enumerate(keys)))}
    parts = []
    pos = 0
    for match in _TOKEN.finditer(format):
        parts.append(format[pos : match.start()].replace("{", "{{").replace("}", "}}"))
        key = match.group(1)
        if key is None:
            parts.append("%")
        elif key in index:
            parts.append(f"{{{index[key]}}}")
        else:
            raise DoveadmError(
                f"formatted output: unknown variable %{{{key}}} in format {format!r}", EX_SOFTWARE
            )
        pos = match.end()
    parts.append(format[pos:].replace("{", "{{").replace("}", "}}"))
    return "".join(parts)


class FormattedFormatter(Formatter):
    """``-f formatted`` (the default of kick)."""

    name = "formatted"

    def _write(self, headers: Sequence[Header], rows: Iterable[Sequence[str]]) -> None:
        if self.format is None:
            raise DoveadmError(NO_FORMAT_MESSAGE, EX_TEMPFAIL)
        expand = compile_format(self.format, [h.key for h in headers]).format
        write = self.out.write
        for row in rows:
            write(expand(*row))
