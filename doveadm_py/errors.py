"""One exception type for every failure a user can see, carrying doveadm's exit code.

doveadm's exit codes are sysexits values (reference section 7); commands raise
:class:`DoveadmError` and the application prints its message as one line on
stderr and exits with its code. Tracebacks are shown only with the global ``-D``.
"""

from __future__ import annotations

EX_OK = 0
EX_USAGE = 64
EX_NOHOST = 68
EX_NOTFOUND = EX_NOHOST  # doveadm's DOVEADM_EX_NOTFOUND
EX_SOFTWARE = 70
EX_IOERR = 74  # the output could not be written (what the command did, it did)
EX_TEMPFAIL = 75


class DoveadmError(Exception):
    """A failure the user should see as one line, with doveadm's exit code."""

    exit_code: int = EX_TEMPFAIL
    #: A pointer to the fix, printed as a second stderr line (``Hint: ...``) after the message.
    hint: str | None = None
    #: The word before the message where doveadm's differs from dvadm's rule (``Fatal`` for
    #: exit 75, else ``Error``): doveadm 2.3 logs a failed ipc request as an error, exit 75.
    prefix: str | None = None

    def __init__(self, message: str, exit_code: int | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        if hint is not None:
            self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(DoveadmError):
    """Bad command line: unknown option, bad mask, missing argument (exit 64)."""

    exit_code = EX_USAGE


class TempFailError(DoveadmError):
    """The server or its socket failed: unreachable, hung, malformed reply (exit 75)."""

    exit_code = EX_TEMPFAIL


class NotFoundError(DoveadmError):
    """Nothing matched where doveadm reports it as an error (exit 68)."""

    exit_code = EX_NOTFOUND


class OutputError(DoveadmError):
    """stdout could not be written (closed, full, gone): exit 74, whatever the command did."""

    exit_code = EX_IOERR
