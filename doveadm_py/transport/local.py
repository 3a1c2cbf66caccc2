"""The local anvil socket as a transport: :class:`~doveadm_py.anvil.AnvilClient` underneath.

The client detects the generation on connecting (2.4 greets; silence is provisionally 2.3)
and the first request settles it. Whatever needs the generation settled before acting,
the 2.3-or-2.4 choice of a kick above all, happens here, not in the commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..anvil import AnvilClient, ConnectDump, PenaltyRecord
    from ..commands.kick.report import KickReport
    from ..masks import Filter


class LocalTransport:
    """One anvil socket; use as a context manager (it closes the client)."""

    def __init__(self, client: AnvilClient, name: str = "local") -> None:
        self.client = client
        self.name = name

    @property
    def path(self) -> str:
        return self.client.path

    @property
    def protocol(self) -> int:
        """1 (Dovecot 2.3) or 2 (2.4); provisional until a request was answered."""
        return self.client.protocol

    def sessions(self, on_invalid: Callable[[bytes], None] | None = None) -> ConnectDump:
        """The session dump; its ``protocol`` is settled once it is returned."""
        return self.client.connect_dump(on_invalid=on_invalid)

    def penalties(self) -> Iterator[PenaltyRecord]:
        """PENALTY-DUMP records (the same in both generations); the protocol is settled after the call."""
        return self.client.penalty_dump()

    def kick(self, filter_: Filter, dest_host: str | None, args: argparse.Namespace) -> KickReport:
        """Kick (or dry-run) as the server's generation does; the report says what happened.

        A greeting proves 2.4. Silence is only provisionally 2.3: the (read-only) dump
        settles it before anything irreversible, so a 2.4 anvil that greets late can
        never have its pids signalled.
        """
        from ..commands.kick import settle

        client = self.client
        dump: Any = None
        if client.protocol == 1:
            invalid: list[bytes] = []
            dump = client.connect_dump(on_invalid=invalid.append)
            if dump.protocol == 1:
                from ..commands.kick.v1 import kick_v1

                return kick_v1(client, dump, invalid, settle(filter_, 1, args, dump), args)
        from ..commands.kick.v2 import kick_v2

        return kick_v2(client, settle(filter_, 2, args, dump), dest_host, args, dump)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
