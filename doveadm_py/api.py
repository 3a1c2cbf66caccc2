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
  :func:`parse_netmask`, :func:`canonical_ip`, :func:`wildcard_match_icase`
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
from typing import Any

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
    "parse_netmask": "doveadm_py.netmask",
    "canonical_ip": "doveadm_py.netmask",
    "add_socket_path_argument": "doveadm_py.sessionview",
    "wildcard_match_icase": "doveadm_py.masks",
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
    "AnvilSimulator": "doveadm_py.anvil.simulator",
    "SimSession": "doveadm_py.anvil.simulator",
    "run_dvadm": "doveadm_py.testing.cli",
}

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
