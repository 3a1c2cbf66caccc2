"""dvadm's stable public API for plugin authors: import from here, not from submodules.

Names are resolved lazily (PEP 562), so ``from doveadm_py.api import DvadmCommand`` in a
plugin costs only what that name needs: a command must not pay for the simulator or
the test harness at start-up.

Stable names (semantic versioning applies to them):

- commands: :class:`DvadmCommand` (base class), :class:`CommandArgumentParser`,
  :func:`add_socket_path_argument` (the ``-a anvil_socket_path`` option); the built-in
  :class:`Who` and :class:`Kick`, to subclass for a command that is one of them under
  another name (as ``proxy list``/``proxy kick`` are on Dovecot 2.4)
- errors: :class:`DoveadmError`, :class:`UsageError`, :class:`TempFailError`,
  :class:`NotFoundError`, and the exit codes ``EX_OK``, ``EX_USAGE``, ``EX_NOTFOUND``,
  ``EX_SOFTWARE``, ``EX_TEMPFAIL``
- global options and settings: :class:`GlobalOptions`, :class:`Settings`
- output: :class:`Header`, :class:`Formatter`, :func:`load_formatter`
- masks: :class:`Filter`, :func:`parse_masks`, :func:`parse_net_range`,
  :func:`parse_netmask` (both give a :class:`Network`), :func:`canonical_ip`,
  :func:`wildcard_match_icase`
- anvil: :class:`AnvilClient`, :class:`AnvilError`, :class:`AnvilProtocolError`,
  :class:`KickRequest`, :class:`SessionV1`, :class:`SessionV2`, :class:`PenaltyRecord`
- Dovecot's tab escaping, for transports of one's own: :func:`split_tabescaped`,
  :func:`join_tabescaped` (bytes, as on the wire)
- remote servers (``-S``): :class:`Transport`, :class:`KickOutcome`, :class:`Answer`,
  :class:`ServerFailure`; a command's ``remote_servers()``, ``ask_servers()``,
  ``emit_merged()`` and ``report_failures()`` do the rest
- testing: :class:`AnvilSimulator`, :class:`SimSession`, :func:`run_dvadm`
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_WHERE = {
    "DvadmCommand": "doveadm_py.command",
    "CommandArgumentParser": "doveadm_py.command",
    "Who": "doveadm_py.commands.who",
    "Kick": "doveadm_py.commands.kick",
    "DoveadmError": "doveadm_py.errors",
    "UsageError": "doveadm_py.errors",
    "TempFailError": "doveadm_py.errors",
    "NotFoundError": "doveadm_py.errors",
    "EX_OK": "doveadm_py.errors",
    "EX_USAGE": "doveadm_py.errors",
    "EX_NOTFOUND": "doveadm_py.errors",
    "EX_SOFTWARE": "doveadm_py.errors",
    "EX_TEMPFAIL": "doveadm_py.errors",
    "GlobalOptions": "doveadm_py.globalopts",
    "Settings": "doveadm_py.settings",
    "Header": "doveadm_py.output",
    "Formatter": "doveadm_py.output",
    "load_formatter": "doveadm_py.output",
    "Filter": "doveadm_py.masks",
    "parse_masks": "doveadm_py.masks",
    "parse_net_range": "doveadm_py.masks",
    "wildcard_match_icase": "doveadm_py.masks",
    "parse_netmask": "doveadm_py.netmask",
    "Network": "doveadm_py.netmask",
    "canonical_ip": "doveadm_py.netmask",
    "add_socket_path_argument": "doveadm_py.transport.options",
    "AGGREGATED_V1": "doveadm_py.sessionview",
    "AGGREGATED_V2": "doveadm_py.sessionview",
    "SEPARATE_V1": "doveadm_py.sessionview",
    "SEPARATE_V2": "doveadm_py.sessionview",
    "separate_headers": "doveadm_py.sessionview",
    "separate_rows": "doveadm_py.sessionview",
    "select_sessions": "doveadm_py.sessionview",
    "DumpGuard": "doveadm_py.anvil.dump",
    "AnvilClient": "doveadm_py.anvil",
    "AnvilError": "doveadm_py.anvil",
    "AnvilProtocolError": "doveadm_py.anvil",
    "KickRequest": "doveadm_py.anvil",
    "SessionV1": "doveadm_py.anvil",
    "SessionV2": "doveadm_py.anvil",
    "PenaltyRecord": "doveadm_py.anvil",
    "split_tabescaped": "doveadm_py.anvil.escape",
    "join_tabescaped": "doveadm_py.anvil.escape",
    "Transport": "doveadm_py.transport.base",
    "KickOutcome": "doveadm_py.transport.base",
    "Answer": "doveadm_py.transport.fleet",
    "ServerFailure": "doveadm_py.transport.fleet",
    "AnvilSimulator": "doveadm_py.testing.simulator",
    "SimSession": "doveadm_py.testing.simulator",
    "run_dvadm": "doveadm_py.testing.cli",
    "run": "doveadm_py.testing.cli",
    "RunResult": "doveadm_py.testing.cli",
}

if TYPE_CHECKING:  # what type checkers see (explicit re-exports); at run time, __getattr__
    from doveadm_py.anvil import (
        AnvilClient as AnvilClient,
    )
    from doveadm_py.anvil import (
        AnvilError as AnvilError,
    )
    from doveadm_py.anvil import (
        AnvilProtocolError as AnvilProtocolError,
    )
    from doveadm_py.anvil import (
        KickRequest as KickRequest,
    )
    from doveadm_py.anvil import (
        PenaltyRecord as PenaltyRecord,
    )
    from doveadm_py.anvil import (
        SessionV1 as SessionV1,
    )
    from doveadm_py.anvil import (
        SessionV2 as SessionV2,
    )
    from doveadm_py.anvil.dump import (
        DumpGuard as DumpGuard,
    )
    from doveadm_py.anvil.escape import (
        join_tabescaped as join_tabescaped,
    )
    from doveadm_py.anvil.escape import (
        split_tabescaped as split_tabescaped,
    )
    from doveadm_py.command import (
        CommandArgumentParser as CommandArgumentParser,
    )
    from doveadm_py.command import (
        DvadmCommand as DvadmCommand,
    )
    from doveadm_py.commands.kick import (
        Kick as Kick,
    )
    from doveadm_py.commands.who import (
        Who as Who,
    )
    from doveadm_py.errors import (
        EX_NOTFOUND as EX_NOTFOUND,
    )
    from doveadm_py.errors import (
        EX_OK as EX_OK,
    )
    from doveadm_py.errors import (
        EX_SOFTWARE as EX_SOFTWARE,
    )
    from doveadm_py.errors import (
        EX_TEMPFAIL as EX_TEMPFAIL,
    )
    from doveadm_py.errors import (
        EX_USAGE as EX_USAGE,
    )
    from doveadm_py.errors import (
        DoveadmError as DoveadmError,
    )
    from doveadm_py.errors import (
        NotFoundError as NotFoundError,
    )
    from doveadm_py.errors import (
        TempFailError as TempFailError,
    )
    from doveadm_py.errors import (
        UsageError as UsageError,
    )
    from doveadm_py.globalopts import (
        GlobalOptions as GlobalOptions,
    )
    from doveadm_py.masks import (
        Filter as Filter,
    )
    from doveadm_py.masks import (
        parse_masks as parse_masks,
    )
    from doveadm_py.masks import (
        parse_net_range as parse_net_range,
    )
    from doveadm_py.masks import (
        wildcard_match_icase as wildcard_match_icase,
    )
    from doveadm_py.netmask import (
        Network as Network,
    )
    from doveadm_py.netmask import (
        canonical_ip as canonical_ip,
    )
    from doveadm_py.netmask import (
        parse_netmask as parse_netmask,
    )
    from doveadm_py.output import (
        Formatter as Formatter,
    )
    from doveadm_py.output import (
        Header as Header,
    )
    from doveadm_py.output import (
        load_formatter as load_formatter,
    )
    from doveadm_py.sessionview import (
        AGGREGATED_V1 as AGGREGATED_V1,
    )
    from doveadm_py.sessionview import (
        AGGREGATED_V2 as AGGREGATED_V2,
    )
    from doveadm_py.sessionview import (
        SEPARATE_V1 as SEPARATE_V1,
    )
    from doveadm_py.sessionview import (
        SEPARATE_V2 as SEPARATE_V2,
    )
    from doveadm_py.sessionview import (
        select_sessions as select_sessions,
    )
    from doveadm_py.sessionview import (
        separate_headers as separate_headers,
    )
    from doveadm_py.sessionview import (
        separate_rows as separate_rows,
    )
    from doveadm_py.settings import (
        Settings as Settings,
    )
    from doveadm_py.testing.cli import (
        RunResult as RunResult,
    )
    from doveadm_py.testing.cli import (
        run as run,
    )
    from doveadm_py.testing.cli import (
        run_dvadm as run_dvadm,
    )
    from doveadm_py.testing.simulator import (
        AnvilSimulator as AnvilSimulator,
    )
    from doveadm_py.testing.simulator import (
        SimSession as SimSession,
    )
    from doveadm_py.transport.base import (
        KickOutcome as KickOutcome,
    )
    from doveadm_py.transport.base import (
        Transport as Transport,
    )
    from doveadm_py.transport.fleet import (
        Answer as Answer,
    )
    from doveadm_py.transport.fleet import (
        ServerFailure as ServerFailure,
    )
    from doveadm_py.transport.options import (
        add_socket_path_argument as add_socket_path_argument,
    )

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"doveadm_py.api has no {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
