"""Dovecot's anvil: the connection tracker that ``who``, ``kick`` and ``penalty`` query.

:class:`AnvilClient` speaks to a real anvil (Dovecot 2.3 protocol 1 or 2.4
protocol 2); :mod:`doveadm_py.testing.simulator` serves both protocols for tests.
"""

from __future__ import annotations

from doveadm_py.anvil.client import AnvilClient
from doveadm_py.anvil.dump import ConnectDump
from doveadm_py.anvil.escape import split_tabescaped, tabescape, tabunescape
from doveadm_py.anvil.kick import KickRequest, KickResult, RequestTooLongError
from doveadm_py.anvil.penalty import PenaltyDump
from doveadm_py.anvil.records import (
    AnvilError,
    AnvilProtocolError,
    PenaltyRecord,
    SessionV1,
    SessionV2,
    excerpt,
    parse_penalty_line,
    parse_v1_line,
    parse_v2_line,
)

__all__ = [
    "AnvilClient",
    "AnvilError",
    "AnvilProtocolError",
    "ConnectDump",
    "KickRequest",
    "KickResult",
    "PenaltyDump",
    "PenaltyRecord",
    "RequestTooLongError",
    "SessionV1",
    "SessionV2",
    "excerpt",
    "parse_penalty_line",
    "parse_v1_line",
    "parse_v2_line",
    "split_tabescaped",
    "tabescape",
    "tabunescape",
]
