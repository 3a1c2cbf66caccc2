"""The transport interface every command talks to, and the results it hands back.

A transport knows its server's protocol generation (1 = Dovecot 2.3, 2 = 2.4) once it
has asked it anything; commands never detect it themselves. Session dumps have the
interface of :class:`doveadm_py.anvil.ConnectDump` that ``who`` and ``kick`` use
(``protocol``, ``alt_fields``, ``pieces()``, iteration, ``close()``), so local and remote
sessions go through the same filtering, aggregation and formatting code.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from ..commands.kick.report import KickReport
    from ..masks import Filter


class KickOutcome(NamedTuple):
    """What a kick did on one server.

    ``connections``: what the server reports kicked (2.4: its count; 2.3: the number of
    users it names). ``users``: the users kicked, when the server names them (2.3).
    ``refused``: users of shared processes that kept dvadm from kicking (2.3, no --force).
    """

    connections: int
    users: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()


class Transport(Protocol):
    """One server a command acts on; ``name`` labels its rows (``server`` column) and errors."""

    name: str

    @property
    def protocol(self) -> int:
        """The server's generation, settled by the first request (1 = Dovecot 2.3, 2 = 2.4)."""
        ...

    def sessions(self) -> Any:
        """The full session list as a dump (see module doc); the protocol is settled after it."""
        ...

    def kick(self, filter_: Filter, dest_host: str | None, args: argparse.Namespace) -> KickReport:
        """Kick (or ``--dry-run``) what the masks select, as the server's generation does, keeping
        dvadm's promises; the report says what happened (nothing is written)."""
        ...

    def penalty_rows(self) -> Iterator[Sequence[str]]:
        """Penalty rows as ``doveadm penalty`` prints them: IP, penalty, last_penalty, last_update."""
        ...

    def close(self) -> None: ...
