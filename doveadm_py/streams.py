"""stdout and stderr that fail with a clear error and a truthful exit code, never a traceback.

A closed stdout (``>&-``), a full disk (``>/dev/full``) or an encoding that cannot show a
username (``PYTHONIOENCODING=ascii``) must not turn a finished command into "internal error"
(70), nor make a kick that did kick look failed. Text the stream's encoding cannot show is
escaped (``\\xf6``; raw bytes decoded with surrogateescape go out unchanged); a failed write
raises :class:`OutputError` (exit 74, EX_IOERR). stderr failures are swallowed: the exit
code still tells what happened.
"""

from __future__ import annotations

import codecs
import os
import sys
from typing import Any, TextIO

from .errors import OutputError

ESCAPE = "dvadm-escape"


def _escape(err: UnicodeError) -> tuple[str | bytes, int]:
    """surrogateescape for raw bytes, backslashreplace for text the encoding lacks (one char at a time)."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    char = err.object[err.start]
    if "\udc80" <= char <= "\udcff":
        return bytes([ord(char) - 0xDC00]), err.start + 1
    return char.encode("ascii", "backslashreplace").decode("ascii"), err.start + 1


codecs.register_error(ESCAPE, _escape)


def prepare_std_streams() -> None:
    """Make the process's standard streams safe to use, before any file or socket is opened.

    A closed fd 0-2 is filled with /dev/null, so that no socket or pipe lands on it (a write
    meant for stdout must never reach the anvil socket); Python has already set the stream to
    None, which :class:`Output` reports as closed.
    """
    if sys.stdin is None or sys.stdout is None or sys.stderr is None:
        for fd in (0, 1, 2):
            try:
                os.fstat(fd)
            except OSError:
                os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=ESCAPE)


def _reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def _silence(stream: Any) -> None:
    """Point a failed stream's fd at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


CLOSED_OUTPUT = "cannot write the output: standard output is closed"


class Output:
    """Command output (the app's stdout); write failures become :class:`OutputError`.

    With :meth:`hold`, text is kept in memory until :meth:`release`: a command that changes
    the server writes its report only once it has finished, so a failing stdout cannot be
    mistaken for a failed action.
    """

    __slots__ = ("_held", "stream")

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._held: list[str] | None = None

    def write(self, text: str) -> int:
        if self._held is not None:
            self._held.append(text)
            return len(text)
        stream = self.stream
        if stream is None:
            raise OutputError(CLOSED_OUTPUT)
        try:
            return stream.write(text)
        except BrokenPipeError:
            raise
        except (OSError, ValueError, AttributeError) as err:
            raise self._error(err) from None

    def flush(self) -> None:
        if self._held is not None or self.stream is None:
            return
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as err:
            raise self._error(err) from None

    def hold(self) -> None:
        self._held = []

    def release(self) -> None:
        """Write and flush what :meth:`hold` kept."""
        held, self._held = self._held, None
        if held:
            self.write("".join(held))
        self.flush()

    def _error(self, err: Exception) -> OutputError:
        if self.stream is None or isinstance(err, AttributeError):
            return OutputError(CLOSED_OUTPUT)
        _silence(self.stream)
        return OutputError(f"cannot write the output: {_reason(err)}")

    def isatty(self) -> bool:
        return self.stream is not None and self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class Diagnostics:
    """The app's stderr: messages that cannot be written are dropped (the exit code remains)."""

    __slots__ = ("stream",)

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        stream = self.stream
        if stream is not None:
            try:
                return stream.write(text)
            except (OSError, ValueError):
                _silence(stream)
                self.stream = None
        return len(text)

    def flush(self) -> None:
        stream = self.stream
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                _silence(stream)
                self.stream = None

    def isatty(self) -> bool:
        return self.stream is not None and self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
