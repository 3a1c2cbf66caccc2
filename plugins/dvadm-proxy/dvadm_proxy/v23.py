"""``proxy list`` and ``proxy kick`` on Dovecot 2.3, as its doveadm does them over the ipc socket.

``LIST-FULL`` (``src/login-common/login-proxy.c``, ``src/doveadm/doveadm-proxy.c``@2.3.19.1): every
login process that has ever proxied answers with its own header line
(``username [<alt fields>] service src-ip dest-ip dest-port``), then one line per proxied
session. doveadm makes the *first* line the header and hands every later field to its printer
one value at a time, so the other processes' header lines become data, and a process that
knows other alt fields shifts the cells that follow: dvadm does the same. Where doveadm then
has values left over for an incomplete last row (its table printer aborts on an assertion,
the others print a partial row), dvadm pads that row with empty values.

``KICK``/``KICK-ALT``/``KICK-HOST`` match exactly (no wildcards). Each login process answers
with its count, and the ipc service forwards only the *last* process's ``+<count>``, so the
count printed is not a total; ``+`` alone (no process ever proxied) prints 0, and a group
whose processes are all gone answers ``(null)`` (glibc printing a NULL string), as doveadm.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from typing import Any

from doveadm_py.api import Header, UsageError, join_tabescaped, split_tabescaped

from .ipc import IpcConnection, IpcError, text

TITLES = {"service": "proto", "src-ip": "src ip", "dest-ip": "dest ip", "dest-port": "port"}
COUNT = (Header("count", "count"),)
COUNT_FORMAT = "%{count} connections kicked\n"
ENCODING, ERRORS = "utf-8", "surrogateescape"
NO_HEADERS = {("tab", False): "\n", ("json", False): "[]", ("json", True): "[]"}
"""What doveadm 2.3's printers write for a result without a single header (the others: nothing)."""


def list_headers(fields: list[bytes]) -> tuple[Header, ...]:
    """doveadm's columns for a LIST-FULL header line: username and ``user_*`` expand."""
    headers = []
    for raw in fields:
        key = raw.decode(ENCODING, ERRORS)
        if key == "username" or key.startswith("user_"):
            headers.append(Header(key, key, expand=True))
        else:
            headers.append(Header(key, TITLES.get(key, key)))
    return tuple(headers)


def cells_to_rows(lines: Iterable[bytes], width: int) -> Iterator[tuple[str, ...]]:
    """Every field of every line, ``width`` to a row, as doveadm's printer takes them.

    A last row left short is padded with empty values (doveadm aborts or prints a partial row).
    """
    pending: list[str] = []
    for line in lines:
        pending += [field.decode(ENCODING, ERRORS) for field in split_tabescaped(line)]
        if len(pending) >= width:
            full = len(pending) - len(pending) % width
            for start in range(0, full, width):
                yield tuple(pending[start : start + width])
            del pending[:full]
    if pending:
        yield tuple(pending + [""] * (width - len(pending)))


def check_list_v23(args: argparse.Namespace) -> bool:
    """doveadm 2.3's ``proxy list`` has only ``-a``; the rest is 2.4's ``who``."""
    given = ["-1"] if args.separate_connections else []
    if args.passdb_field is not None:
        given.append("-f")
    if args.masks:
        given.append("masks")
    if given:
        field = args.passdb_field
        hint = None
        if field is not None and field in formatter_names():  # meant as the global -f
            hint = f"for {field} output put -f before the command: dvadm -f {field} proxy list"
        need = f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} Dovecot 2.4"
        raise UsageError(f"proxy list on Dovecot 2.3 takes only -a <ipc socket path>: {need}", hint=hint)
    return True


def formatter_names() -> set[str]:
    """The output formatters installed (dvadm's and plugins'), as the global -f takes them."""
    from importlib.metadata import entry_points

    return {ep.name for ep in entry_points(group="dvadm.formatters")}


def list_v23(cmd: Any, conn: IpcConnection) -> int:
    """``proxy list``: LIST-FULL to every login process, printed as doveadm 2.3 prints it.

    Rows read before a failure are printed; the failure then exits 75 (doveadm logs
    ``LIST-FULL failed`` and exits 0, which a script cannot tell from an empty list).
    """
    reply = conn.request("LIST-FULL", b"LIST-FULL")
    lines = iter(reply)
    header = next(lines, None)
    if header is None:  # no login process proxies: no header, and doveadm's printers flush empty
        cmd.app.stdout.write(NO_HEADERS.get((cmd.options.formatter, cmd.options.hide_titles), ""))
        return 0
    headers = list_headers(split_tabescaped(header))
    failed: list[IpcError] = []
    rows = cells_to_rows(_until_failure(lines, failed), len(headers))
    if headers:
        cmd.emit(headers, rows, generation=1)
    else:
        for _ in rows:
            pass
    if failed:
        raise failed[0]
    return 0


def _until_failure(lines: Iterator[bytes], failed: list[IpcError]) -> Iterator[bytes]:
    """The lines up to a failure, which is kept for after the rows read so far are shown."""
    try:
        yield from lines
    except IpcError as err:
        failed.append(err)


class KickCommand:
    """A checked 2.3 kick: the ipc command's wire bytes."""

    def __init__(self, wire: bytes) -> None:
        self.wire = wire


def check_kick_v23(args: argparse.Namespace) -> KickCommand:
    """Everything 2.3's ``proxy kick`` can be given wrong, checked before anything is sent.

    doveadm 2.3: ``-h host [host ...]`` (the positionals are more hosts), else
    ``[-f field] user [user ...]``; names match exactly.
    """
    if args.force:
        raise UsageError("--force is for 'kick' on Dovecot 2.3 (mail processes); proxy kick has none")
    if args.dry_run:
        raise UsageError(
            "proxy kick --dry-run needs Dovecot 2.4: Dovecot 2.3 cannot list what its proxy kick would "
            "match (LIST-FULL shows the resolved backend IP, KICK-HOST matches the passdb host text); "
            "nothing was kicked"
        )
    values: list[str] = list(args.masks)
    if args.dest_host is not None:
        if args.passdb_field is not None:
            raise UsageError("-f and -h cannot be combined on Dovecot 2.3 (doveadm ignores -f with -h)")
        values.insert(0, args.dest_host)
        what = "host"
    else:
        what = "user"
    for value in values:
        if value == "":
            raise UsageError(f"proxy kick: an empty {what} matches no session")
        if what == "host" and any(ord(c) < 32 or c == "\x7f" for c in value):
            raise UsageError(f"proxy kick -h: invalid host {value!r}")
    if args.passdb_field == "":
        raise UsageError("-f passdb_field must not be empty")
    encoded = [value.encode(ENCODING, ERRORS) for value in values]
    if args.dest_host is not None:
        wire = b"KICK-HOST\t" + join_tabescaped(encoded)
    elif args.passdb_field is not None:
        wire = b"KICK-ALT\t" + join_tabescaped([args.passdb_field.encode(ENCODING, ERRORS), *encoded])
    else:
        wire = b"KICK\t" + join_tabescaped(encoded)
    return KickCommand(wire)


def kick_v23(cmd: Any, conn: IpcConnection, command: KickCommand) -> int:
    """Send the kick; print the (last login process's) count as doveadm 2.3 does."""
    count = conn.request("KICK", command.wire).finish()
    if count == b"":
        shown = "0"
    elif count == b"(null)" or (count.isdigit() and len(count) <= 10):
        shown = count.decode()
    else:
        raise IpcError(f"KICK failed: Invalid count in reply: {text(count)}")
    cmd.emit(COUNT, [(shown,)], format=COUNT_FORMAT, generation=1)
    return 0
