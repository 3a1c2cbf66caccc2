"""Aggregated ``who``: one row per (username, service) with its count, pids and IPs.

Built for a million sessions: groups live in flat arrays and one dict, each session's pid
and IP are packed into one int, and single-session groups are printed in bulk (1M
sessions: 577 MiB -> 177 MiB and 3.3 s -> 2.1 s against the dict-per-group version).
The rows are exactly those of the plain per-record code, in first-seen order.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress, count, islice, repeat
from operator import floordiv, mod
from typing import Any

from .anvil.records import is_valid_ip
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
        sessions = None
        if protocol == 1 and piece.odd_refcounts:
            sessions = [1] * len(users)
            for row, refcount in piece.odd_refcounts:
                sessions[row] = refcount
        if filter_.user_masks:
            keep = list(map(match_user, users))
            if not all(keep):
                users, services, pids, ips = (list(compress(c, keep)) for c in (users, services, pids, ips))
                if sessions is not None:
                    sessions = list(compress(sessions, keep))
        groups.add_columns(users, services, pids, ips, sessions)
    yield from groups.rows(filter_)


# A session's (pid, client IP) pair packed in one int: int(f"{pid}{code}") with code = f"1{ip_index:08d}",
# so pid = pack // _UNIT and code = pack % _UNIT. The leading 1 makes every pack >= 10^8, so 0 means none.
_UNIT = 10**9
_NO_IP = 10**8  # the code of IP index 0, "" (no IP)
_MAX_IPS = 10**8
_CHUNK = 4096  # groups per output block


class Groups:
    """The groups of aggregated ``who``: (username, service) -> count, pids, IPs, in first-seen order.

    Memory is time here: a million sessions make ~600k groups, and every MiB of peak RSS costs
    ~3 ms in page faults on the benchmark machine, as does every random access into a big
    structure in cache misses. So a group is not ``[count, {pids}, {ips}]`` (~400 bytes in 4
    objects, 146 + 97 + 67 MiB for 1M sessions) but a dict entry, its key and its id (~150 bytes),
    and its data lives in flat arrays indexed by the id:

    - key: ``"user\\tservice"`` (bulk fields hold no TAB); ``(user, service)`` if one holds a TAB
      (escaped in the dump); ``("", service, ip)`` for sessions without a username, which
      doveadm groups by IP too.
    - id: the number of the group's first session. Arrays by session number: ``packs`` (the
      session's pid and IP, see ``_UNIT``), and at a group's id: ``counts`` (2.3: the sum of
      refcounts) and ``second``, a second distinct pack (0: none). ``more`` holds any further
      distinct packs of the few groups with three or more, in first-seen order.
    """

    def __init__(self) -> None:
        self.groups: dict[Any, int] = {}
        self.packs = array("q")
        self.counts = array("Q")
        self.second = array("q")
        self.more: dict[int, dict[int, None]] = {}
        self.ip_codes: dict[str, str] = {"": str(_NO_IP)}  # IP text -> code text
        self.ip_texts: list[str] = [""]  # index -> IP text
        self.ip_parens: dict[int, str] = {}  # code -> "(ip)", the (ips) of a group with one IP
        self.tuple_keys = 0

    def _codes(self, ips: Sequence[str]) -> list[str]:
        """The code of each IP text; a text that is no valid IP gets the code of '' (2.3 shows none)."""
        codes = list(map(self.ip_codes.get, ips))
        if None in codes:
            for ip in dict.fromkeys(ips):
                if ip not in self.ip_codes:
                    if not is_valid_ip(ip):
                        self.ip_codes[ip] = str(_NO_IP)
                        continue
                    index = len(self.ip_texts)
                    if index >= _MAX_IPS:
                        raise OverflowError(f"more than {_MAX_IPS} distinct client IPs")
                    self.ip_codes[ip] = str(_NO_IP + index)
                    self.ip_texts.append(ip)
            codes = list(map(self.ip_codes.get, ips))
        return codes  # type: ignore[return-value]

    def add(self, user: str, service: str, pid: str, ip: str, sessions: int) -> None:
        """One session (2.3: one line, ``sessions`` its refcount) with its canonical pid text."""
        code = self._codes((ip,))[0]
        if not user:
            key: Any = ("", service, self.ip_texts[int(code) - _NO_IP])
            self.tuple_keys += 1
        elif "\t" in user or "\t" in service:
            key = (user, service)
            self.tuple_keys += 1
        else:
            key = f"{user}\t{service}"
        number = len(self.packs)
        pack = int(pid + code)
        self.packs.append(pack)
        self.counts.append(sessions)
        self.second.append(0)
        group = self.groups.setdefault(key, number)
        if group != number:
            self._merge(group, pack, sessions)

    def add_columns(
        self,
        users: Sequence[str],
        services: Sequence[str],
        pids: Sequence[str],
        ips: Sequence[str],
        sessions: list[int] | None = None,
    ) -> None:
        """Sessions column-wise (``sessions``: 2.3 refcounts, None when all are 1).

        One ``setdefault`` per session in C makes every new group (most sessions); only sessions
        of groups seen before are merged one by one in Python.
        """
        if "" in users:  # keyed by IP too: one by one
            for row, user in enumerate(users):
                n = 1 if sessions is None else sessions[row]
                self.add(user, services[row], pids[row], ips[row], n)
            return
        base = len(self.packs)
        keys = map("\t".join, zip(users, services, strict=True))
        packs = list(map(int, map(str.__add__, pids, self._codes(ips))))
        self.packs.extend(packs)
        self.counts.extend(array("Q", [1]) * len(packs) if sessions is None else sessions)
        self.second.frombytes(bytes(8 * len(packs)))
        groups = list(map(self.groups.setdefault, keys, count(base)))
        merge = self._merge
        for row in compress(count(), map(int.__ne__, groups, count(base))):  # groups seen before
            merge(groups[row], packs[row], 1 if sessions is None else sessions[row])

    def _merge(self, group: int, pack: int, sessions: int) -> None:
        """Add a session to a group that exists."""
        self.counts[group] += sessions
        if pack != self.packs[group]:
            second = self.second[group]
            if not second:
                self.second[group] = pack
            elif pack != second:
                self.more.setdefault(group, {})[pack] = None

    def rows(self, filter_: Filter) -> Iterator[list[Sequence[str]]]:
        """The rows in first-seen order, as column blocks; a group is kept if any IP is in the network."""
        items = iter(self.groups.items())
        while chunk := list(islice(items, _CHUNK)):
            keys, groups = zip(*chunk, strict=True)
            if self.tuple_keys or filter_.network is not None:
                columns = self._rows_one_by_one(keys, groups, filter_)
            else:
                columns = self._rows_in_bulk(keys, groups)
            if columns[0]:
                yield columns

    def _rows_in_bulk(self, keys: Sequence[str], groups: Sequence[int]) -> list[Sequence[str]]:
        """Columns for groups keyed ``"user\\tservice"``: as if each had its first (pid, IP) pair only,
        in C; then the groups with a second pair (half of them in the benchmark) one by one.

        The loop is inlined on purpose (7% faster than a method call per group); building these
        columns in bulk as well measured 10% slower, for the branches it needs per group.
        """
        fields = "\t".join(keys).split("\t")
        users, services = fields[0::2], fields[1::2]
        counts = list(map(str, map(self.counts.__getitem__, groups)))
        firsts = list(map(self.packs.__getitem__, groups))
        first_pids = list(map(floordiv, firsts, repeat(_UNIT)))
        first_codes = list(map(mod, firsts, repeat(_UNIT)))
        pids = list(map("(%d)".__mod__, first_pids))
        parens = self._ip_parens()
        ips = list(map(parens.__getitem__, first_codes))
        seconds = list(map(self.second.__getitem__, groups))
        more, texts = self.more, self.ip_texts
        for row in compress(count(), seconds):
            if more and groups[row] in more:
                _, pids[row], group_ips = self._texts(groups[row])
                ips[row] = f"({' '.join(group_ips)})"
                continue
            pid, code = divmod(seconds[row], _UNIT)
            first_pid, first_code = first_pids[row], first_codes[row]
            if pid != first_pid:
                pids[row] = f"({first_pid} {pid})"
            if code in (first_code, _NO_IP):
                continue  # the first IP alone, already shown
            if first_code == _NO_IP:
                ips[row] = parens[code]
            else:
                ips[row] = f"({texts[first_code - _NO_IP]} {texts[code - _NO_IP]})"
        return [users, counts, services, pids, ips]

    def _ip_parens(self) -> dict[int, str]:
        """code -> "(ip)" ("()" for none), brought up to date with the IPs seen."""
        parens, texts = self.ip_parens, self.ip_texts
        for index in range(len(parens), len(texts)):
            parens[_NO_IP + index] = f"({texts[index]})"
        return parens

    def _texts(self, group: int) -> tuple[str, str, list[str]]:
        """A group's count and ``(pids)`` texts, and its IPs, in first-seen order."""
        packs = [self.packs[group]]
        if self.second[group]:
            packs.append(self.second[group])
            packs += self.more.get(group, ())
        pids = dict.fromkeys([pack // _UNIT for pack in packs])
        codes = dict.fromkeys([pack % _UNIT for pack in packs])
        texts = self.ip_texts
        ips = [texts[code - _NO_IP] for code in codes if code != _NO_IP]
        return str(self.counts[group]), f"({' '.join(map(str, pids))})", ips

    def _rows_one_by_one(
        self, keys: Sequence[Any], groups: Sequence[int], filter_: Filter
    ) -> list[Sequence[str]]:
        columns: list[list[str]] = [[], [], [], [], []]
        for key, group in zip(keys, groups, strict=True):
            count_text, pid_text, ips = self._texts(group)
            if filter_.network is not None and not filter_.match_any_ip(ips):
                continue
            user, service = key.split("\t") if isinstance(key, str) else key[:2]
            row = (user, count_text, service, pid_text, f"({' '.join(ips)})")
            for column, text in zip(columns, row, strict=True):
                column.append(text)
        return list(columns)
