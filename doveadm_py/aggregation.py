"""Aggregated ``who``: one row per (username, service) with its count, pids and IPs.

Built for a million sessions whatever their shape (distinct or shared IPs, few or many
users): one dict maps each group's key to a short text holding its sessions' pids and IPs,
filled column-wise with C-level ``map`` calls; only sessions of groups seen before take a
Python step. The rows are those of the plain per-record code, in first-seen order.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress, count, islice, repeat
from operator import is_not
from typing import Any, cast

from .masks import Filter


def aggregate(protocol: int, pieces: Iterable[Any], filter_: Filter) -> Iterator[list[Sequence[str]]]:
    """The aggregated rows, as column blocks, of the pieces of a dump (see ConnectDump.pieces)."""
    groups = Groups()
    match_user = filter_.match_user
    for piece in pieces:
        if isinstance(piece, list):
            for s in piece:
                if match_user(s.username):
                    groups.add(s.username, s.service, str(s.pid), s.ip, s.refcount if protocol == 1 else 1)
            continue
        users, services, pids, ips = piece.users, piece.services, piece.pids, piece.ips
        refcounts = None
        if protocol == 1 and piece.odd_refcounts:
            refcounts = [1] * len(users)
            for row, refcount in piece.odd_refcounts:
                refcounts[row] = refcount
        if filter_.user_masks:
            keep = list(map(match_user, users))
            if not all(keep):
                users, services, pids, ips = (list(compress(c, keep)) for c in (users, services, pids, ips))
                if refcounts is not None:
                    refcounts = list(compress(refcounts, keep))
        groups.add_columns(users, services, pids, ips, refcounts)
    yield from groups.rows(filter_)


_CHUNK = 4096  # groups per output block
_LONG = 512  # a group text longer than this becomes a Group (each merge copies the text)
_COUNTS = [str(spaces + 1) for spaces in range(_LONG)]  # a text's count by the spaces between its pids


class Group:
    """A group that outgrew its text, or whose key or IPs a text cannot hold.

    ``pids`` lists the pids of the text it came from, then every later session's (repeats
    included), so that the count is ``len(pids)`` plus the group's ``Groups.extra``.
    """

    __slots__ = ("ips", "pids")

    def __init__(self, text: str = "") -> None:
        """The group of a text (see :class:`Groups`), or an empty one."""
        pids, _, ips = text.partition("\t")
        self.pids = array("q", map(int, pids.split(" ")) if pids else ())
        self.ips = dict.fromkeys(ips.split(" ") if ips else ())

    def add(self, pid: str, ip: str) -> None:
        self.pids.append(int(pid))
        if ip:
            self.ips[ip] = None

    def texts(self) -> tuple[int, str, list[str]]:
        """Sessions (without extra), the ``(pids)`` text and the IPs, in first-seen order."""
        pids = " ".join(map(str, dict.fromkeys(self.pids)))
        return len(self.pids), f"({pids})", list(self.ips)


class Groups:
    """The groups of aggregated ``who``: (username, service) -> count, pids, IPs, in first-seen order.

    A group is a dict entry: its key ``"user\\tservice"`` and a text ``"pids\\tips"``: its
    distinct pids and its distinct non-empty IPs, each joined by spaces, in first-seen order (a
    new group's text is its session's ``"pid\\tip"``, built column-wise). So ``rows`` turns a
    block of groups into the ``(pids)`` and ``(ips)`` texts with one join, replace and split, and
    memory is one key and one short text per group (~150 bytes), whether IPs repeat or not. The
    count is the number of pids plus ``extra``: a 2.3 refcount other than 1 adds ``refcount - 1``,
    a session whose pid the group already lists adds 1.

    Bulk values hold no TAB or LF, pids no space; a group whose key or IP a text cannot hold (a TAB
    or LF escaped in the dump, a space in an IP's scope), whose sessions have no username (doveadm
    groups those by IP too: key ``("", service, ip)``), or whose text grows long, is a
    :class:`Group` instead.
    """

    def __init__(self) -> None:
        self.groups: dict[Any, str | Group] = {}
        self.extra: dict[Any, int] = {}

    def add(self, user: str, service: str, pid: str, ip: str, refcount: int = 1) -> None:
        """One session (2.3: one line, with its refcount) with its canonical pid text."""
        if not user:
            key: Any = ("", service, ip)
        elif "\t" in user or "\n" in user or "\t" in service or "\n" in service:
            key = (user, service)
        else:
            key = f"{user}\t{service}"
        value = self.groups.get(key)
        if value is None:
            if isinstance(key, tuple) or not _fits_text(ip):
                group = self.groups[key] = Group()
                group.add(pid, ip)
            else:
                self.groups[key] = f"{pid}\t{ip}"
        else:
            self._merge(key, value, pid, ip)
        if refcount != 1:
            self.extra[key] = self.extra.get(key, 0) + refcount - 1

    def add_columns(
        self,
        users: Sequence[str],
        services: Sequence[str],
        pids: Sequence[str],
        ips: Sequence[str],
        refcounts: Sequence[int] | None = None,
    ) -> None:
        """Sessions column-wise, as bulk parsing gives them (no TAB or LF in any value).

        ``refcounts`` are 2.3's, None when all are 1. New groups are made by one C-level
        ``setdefault`` per session; sessions of groups seen before are merged one by one.
        """
        if "" in users or " " in "\t".join(ips):  # keyed by IP too, or an IP a text cannot hold
            for row, user in enumerate(users):
                n = 1 if refcounts is None else refcounts[row]
                self.add(user, services[row], pids[row], ips[row], n)
            return
        keys = list(map("\t".join, zip(users, services, strict=True)))
        values = list(map("\t".join, zip(pids, ips, strict=True)))
        found = list(map(self.groups.setdefault, keys, values))
        if found != values:  # identical objects compare equal without a character compared
            # A group's value is what setdefault found, or what this block merged into it since,
            # kept in a small dict and written back at once: no big-dict lookup per repeated session.
            merged: dict[str, str | Group] = {}
            current, extra = merged.get, self.extra
            repeats = zip(keys, found, pids, ips, strict=True)
            for key, value, pid, ip in compress(repeats, map(is_not, found, values)):
                value = current(key, value)
                if type(value) is not str or len(value) >= _LONG:
                    self._merge(key, value, pid, ip)
                    merged[key] = self.groups[key]
                    continue
                # self._merge inlined for bulk values (no space, TAB or LF in them): 5% of who. A
                # substring test first: only a pid or IP found in the text is looked for as a word.
                pid_text, _, ip_text = value.partition("\t")
                if pid in pid_text and pid in pid_text.split(" "):
                    extra[key] = extra.get(key, 0) + 1
                else:
                    pid_text = f"{pid_text} {pid}"
                if ip and not (ip in ip_text and ip in ip_text.split(" ")):
                    ip_text = f"{ip_text} {ip}" if ip_text else ip
                merged[key] = f"{pid_text}\t{ip_text}"
            self.groups.update(merged)
        if refcounts is not None:
            extra = self.extra
            for row in compress(count(), map(int.__ne__, refcounts, repeat(1))):
                key = keys[row]
                extra[key] = extra.get(key, 0) + refcounts[row] - 1

    def _merge(self, key: Any, value: str | Group, pid: str, ip: str) -> None:
        """Add a session to the group ``key`` whose current value is ``value``."""
        if type(value) is str and len(value) < _LONG and _fits_text(ip):
            pid_text, _, ip_text = value.partition("\t")
            if pid in pid_text.split(" "):
                self.extra[key] = self.extra.get(key, 0) + 1
            else:
                pid_text = f"{pid_text} {pid}"
            if ip and ip not in ip_text.split(" "):
                ip_text = f"{ip_text} {ip}" if ip_text else ip
            self.groups[key] = f"{pid_text}\t{ip_text}"
            return
        if isinstance(value, str):
            value = Group(value)
            self.groups[key] = value
        value.add(pid, ip)

    def rows(self, filter_: Filter) -> Iterator[list[Sequence[str]]]:
        """The rows in first-seen order, as column blocks; a group is kept if any IP is in the network."""
        all_keys, all_values = iter(self.groups), iter(self.groups.values())  # the same order
        while keys := list(islice(all_keys, _CHUNK)):
            values = list(islice(all_values, _CHUNK))
            if filter_.network is not None or set(map(type, values)) != {str}:  # Groups (tuple keys too)
                columns = self._rows_one_by_one(keys, values, filter_)
            else:
                columns = self._rows_in_bulk(keys, cast("list[str]", values))  # all texts, checked above
            if columns[0]:
                yield columns

    def _rows_in_bulk(self, keys: Sequence[str], values: Sequence[str]) -> list[Sequence[str]]:
        """Columns for groups that are all texts keyed ``"user\\tservice"``, in C-level passes."""
        fields = "\t".join(keys).split("\t")
        users, services = fields[0::2], fields[1::2]
        fields = ("(" + "\t".join(values).replace("\t", ")\t(") + ")").split("\t")
        pids, ips = fields[0::2], fields[1::2]
        counts = list(map(_COUNTS.__getitem__, map(str.count, pids, repeat(" "))))  # pids in a text
        if self.extra:
            extra = self.extra
            for row in compress(count(), map(extra.__contains__, keys)):
                counts[row] = str(int(counts[row]) + extra[keys[row]])
        return [users, counts, services, pids, ips]

    def _rows_one_by_one(
        self, keys: Sequence[Any], values: Sequence[str | Group], filter_: Filter
    ) -> list[Sequence[str]]:
        columns: list[list[str]] = [[], [], [], [], []]
        for key, value in zip(keys, values, strict=True):
            if isinstance(value, Group):
                sessions, pid_text, ips = value.texts()
            else:
                pids, _, ip_text = value.partition("\t")
                sessions, pid_text = pids.count(" ") + 1, f"({pids})"
                ips = ip_text.split(" ") if ip_text else []
            if filter_.network is not None and not filter_.match_any_ip(ips):
                continue
            user, service = key.split("\t") if isinstance(key, str) else key[:2]
            row = (user, str(sessions + self.extra.get(key, 0)), service, pid_text, f"({' '.join(ips)})")
            for column, text in zip(columns, row, strict=True):
                column.append(text)
        return list(columns)


def _fits_text(ip: str) -> bool:
    """Whether a group text can hold this IP (bulk IPs hold no TAB or LF; a scope may hold a space)."""
    return " " not in ip and "\t" not in ip and "\n" not in ip
