"""Helpers of the who suites (bulk parsing, the benchmark shapes): a dump from given blocks and the
record-by-record reference of aggregated ``who``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from doveadm_py.anvil import AnvilProtocolError, parse_v1_line, parse_v2_line
from doveadm_py.anvil.bulk import BulkParser
from doveadm_py.masks import Filter

LABEL = "/run/dovecot/anvil"


class FakeDump:
    """A CONNECT-DUMP reply from given blocks: records one by one (reference) or pieces (bulk)."""

    def __init__(self, protocol: int, alt_fields: tuple[str, ...], blocks: list[list[bytes]]) -> None:
        self.protocol = protocol
        self.alt_fields = alt_fields
        self.blocks = blocks
        self.path = LABEL
        self.invalid: list[bytes] = []

    def __iter__(self) -> Iterator[Any]:
        for block in self.blocks:
            for line in block:
                if self.protocol == 1:
                    try:
                        yield parse_v1_line(line)
                    except AnvilProtocolError:
                        self.invalid.append(line)
                    continue
                try:
                    yield parse_v2_line(line, len(self.alt_fields))
                except AnvilProtocolError as e:
                    raise AnvilProtocolError(f"{LABEL}: {e}") from None

    def pieces(self) -> Iterator[Any]:
        parser = BulkParser(
            self.protocol, n_alt=len(self.alt_fields), on_invalid=self.invalid.append, label=LABEL
        )
        return parser.pieces(self.blocks)

    def close(self) -> None:
        pass


def reference_aggregate(protocol: int, sessions: Any, filter_: Filter) -> Iterator[tuple[str, ...]]:
    """``who`` as it was before the bulk path: plain dicts per group, first-seen order."""
    groups: dict[tuple[str, ...], list[Any]] = {}
    for s in sessions:
        if not filter_.match_user(s.username):
            continue
        key = (s.username, s.service) if s.username else ("", s.service, s.ip)
        group = groups.setdefault(key, [0, {}, {}])
        group[0] += s.refcount if protocol == 1 else 1
        group[1][s.pid] = None
        if s.ip:
            group[2][s.ip] = None
    for key, (count, pids, ips) in groups.items():
        if filter_.network is None or filter_.match_any_ip(ips):
            yield (key[0], str(count), key[1], f"({' '.join(map(str, pids))})", f"({' '.join(ips)})")
