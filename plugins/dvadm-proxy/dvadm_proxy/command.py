"""``dvadm proxy list`` and ``dvadm proxy kick``: the login proxies' sessions, on Dovecot 2.3 and 2.4.

Dovecot 2.4's doveadm registers ``proxy list`` and ``proxy kick`` as ``who`` and ``kick`` under
another name, so on 2.4 these commands *are* dvadm's :class:`~doveadm_py.api.Who` and
:class:`~doveadm_py.api.Kick` (subclassed, not copied). Dovecot 2.3's doveadm asks every login
process through the ``ipc`` socket instead (:mod:`dvadm_proxy.ipc`, :mod:`dvadm_proxy.v23`).

Which one a server is: ``-a PATH`` is connected to and listened to briefly (a 2.4 anvil greets
at once, a 2.3 ipc socket never speaks first; a late greeting in place of the first reply
line also counts). Without ``-a``, ``<base_dir>/ipc`` exists only on 2.3; when it cannot be
connected to, ``<base_dir>/anvil`` is asked and a 2.4 greeting means 2.4. Options that only
one generation has are checked once the generation is known, before anything is sent.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from doveadm_py.api import AnvilClient, AnvilError, Kick, TempFailError, UsageError, Who

from .ipc import ANVIL_GREETING

if TYPE_CHECKING:
    from doveadm_py.api import DvadmCommand as _CommandBase  # the mixin's partner, for type checkers

    from .ipc import IpcConnection
else:
    _CommandBase = object

T = TypeVar("T")
LATE_GREETING = 0.5  # how long a silent -a socket may still turn out to be a busy 2.4 anvil
IPC_TIMEOUT = "dvadm_ipc_timeout"  # connecting and each reply line (doveadm waits forever)
IPC_DEADLINE = "dvadm_ipc_deadline"  # the whole reply
KICK_TIMEOUT = "dvadm_kick_timeout"  # dvadm's own key: each kick reply
GREETING_GRACE = 0.02  # for -a only: a 2.4 anvil greets at once (a late greeting is caught later too)


class ProxyCommand(_CommandBase):
    """What both proxy commands share: finding out which generation the server is."""

    _probed: AnvilClient | None = None

    def anvil(self, socket_path: str | None = None, **kwargs: Any) -> AnvilClient:
        # The who/kick code asks for its anvil client; hand it the one that proved 2.4.
        client, self._probed = self._probed, None
        if client is not None:
            return client
        return super().anvil(socket_path, **kwargs)

    def run(self, parsed_args: argparse.Namespace) -> Any:
        try:
            return super().run(parsed_args)
        finally:  # a probe the 2.4 code did not take (refused command line) is closed, not leaked
            if self._probed is not None:
                self._probed.close()
                self._probed = None

    def add_common_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Their own ``-a`` (an ipc or an anvil socket) and no ``-S``: remote doveadm servers
        answer who/kick, which only on 2.4 are what proxy list/kick are."""
        parser.add_argument(
            "-a",
            "--socket-path",
            metavar="socket_path",
            help="2.3: the ipc socket (default <base_dir>/ipc); 2.4: the anvil socket "
            "(default <base_dir>/anvil; host:port for TCP)",
        )
        parser.add_argument(
            "-f", "--passdb-field", metavar="passdb_field", help="match the names against this alt username"
        )
        parser.set_defaults(servers=None)

    def ipc_settings(self) -> dict[str, float]:
        settings = self.settings
        timeout = settings.seconds(IPC_TIMEOUT, 10.0)
        return {
            "timeout": timeout,
            "connect_timeout": min(timeout, 5.0),
            "deadline": settings.seconds(IPC_DEADLINE, 120.0),
        }

    def debug_sink(self) -> Callable[[str], None] | None:
        return self.app.debug_log if self.options.debug else None  # as dvadm's own -D lines

    def open_ipc(self, socket_path: str | None, what: str) -> IpcConnection | None:
        """An ipc connection (Dovecot 2.3), or None after setting up the 2.4 anvil client."""
        from .ipc import IpcConnection, IpcError, connect

        settings = self.ipc_settings()
        debug = self.debug_sink()
        if socket_path is not None and "/" not in socket_path:
            # A value without '/' is host:port to 2.4's who/kick; a 2.3 ipc socket is UNIX only.
            self._use_anvil(socket_path, greeting_grace=settings["connect_timeout"])
            return None
        path = socket_path or f"{self.settings.base_dir.rstrip('/')}/ipc"
        try:
            sock = connect(path, settings["connect_timeout"])
        except IpcError as err:
            anvil_error = None if socket_path is not None else self._anvil_speaks_v2()
            if anvil_error == "":
                return None
            also = f" (Dovecot 2.3); {anvil_error} (2.4)" if anvil_error else ""
            raise IpcError(f"{what} failed: {err.message}{also}") from None
        conn = IpcConnection(path, sock=sock, debug=debug, **settings)
        if socket_path is not None and conn.greeted(GREETING_GRACE):
            conn.close()
            self._use_anvil(path, greeting_grace=settings["connect_timeout"])
            return None
        return conn

    def check_v23(self, conn: IpcConnection, socket_path: str | None, check: Callable[[], T]) -> T | None:
        """``check()`` the command line for 2.3; None if, rather than being wrong, it is for 2.4.

        A silent ``-a`` socket is only provisionally a 2.3 ipc socket: before refusing what
        only 2.4 accepts, listen longer for a late 2.4 greeting (then switch; nothing was sent).
        """
        try:
            return check()
        except UsageError:
            if socket_path is None or not conn.greeted(LATE_GREETING):
                raise
            if not conn.buf.startswith(ANVIL_GREETING):
                raise
        conn.close()
        self.late_greeting(socket_path)
        return None

    def _anvil_speaks_v2(self) -> str | None:
        """No ipc socket: is ``<base_dir>/anvil`` a 2.4 anvil? "" if so (the client is kept for
        who/kick), None if it is a 2.3 one, else why it could not be asked."""
        try:
            # Patient: this is only asked when there is no ipc socket, where 2.3 fails anyway.
            grace = self.ipc_settings()["connect_timeout"]
            client = super().anvil(None, greeting_grace=grace)
            protocol = client.protocol
        except AnvilError as err:
            return str(err)
        if protocol != 2:
            client.close()
            return None
        self._probed = client
        return ""

    def _use_anvil(self, path: str, greeting_grace: float) -> None:
        """The server is 2.4 (or must be, for a TCP address): a client that waits for its greeting."""
        client = super().anvil(path, greeting_grace=greeting_grace)
        try:
            protocol = client.protocol
        except BaseException:
            client.close()
            raise
        if protocol != 2:
            client.close()
            raise UsageError(
                f"{path} is no Dovecot 2.4 anvil; on Dovecot 2.3 proxy commands need the ipc UNIX socket "
                "(-a <base_dir>/ipc)"
            )
        self._probed = client

    def late_greeting(self, socket_path: str | None) -> None:
        """The first reply line was a 2.4 greeting: switch to anvil on a fresh connection."""
        settings = self.ipc_settings()
        path = socket_path or f"{self.settings.base_dir.rstrip('/')}/ipc"
        self._use_anvil(path, greeting_grace=settings["connect_timeout"])


class ProxyList(ProxyCommand, Who):
    """List the sessions of the login proxies (2.3: ipc LIST-FULL; 2.4: who)."""

    usage = (
        "[-a <ipc (2.3) or anvil (2.4) socket path>] [-1] [-f <passdb field>] [<user mask> ...] [<ip/bits>]"
    )
    #: ``dvadm help proxy list`` and ``man dvadm-proxy-list`` (doveadm_py.manual markup).
    manual_sections = (
        (
            "Description",
            """\
Lists the sessions of Dovecot's login proxies, as the server's own doveadm proxy list does.

- Dovecot 2.3: asks every login process through <base_dir>/ipc (LIST-FULL) and prints
  username, the alt username fields, proto, src ip, dest ip and port. As doveadm 2.3, the
  first header line any process sends is the header and the other processes' header lines
  are printed as rows. Only -a applies.
- Dovecot 2.4: this is dvadm who (aggregated; -1, -f and masks as there).

The generation is found before anything is sent: a 2.4 anvil greets, a 2.3 ipc socket never
speaks first; without -a, <base_dir>/ipc exists only on 2.3.""",
        ),
        (
            "Examples",
            """\
    dvadm proxy list                   the proxied sessions
    dvadm -f json proxy list           as JSON
    dvadm proxy list -1 'ja*'          2.4: one row per session, some users""",
        ),
        (
            "Exit status",
            """\
0 success; 64 a bad command line (on 2.3: -1, -f or masks); 75 the socket is unreachable, a
reply is an error, malformed, or late (-o dvadm_ipc_timeout=SECONDS per line, default 10;
-o dvadm_ipc_deadline=SECONDS for the whole reply, default 120). doveadm 2.3 exits 0 there.""",
        ),
        ("See also", "dvadm(1), dvadm-proxy-kick(1), dvadm-who(1), doveadm-proxy(1)"),
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_common_arguments(parser)
        parser.add_argument(
            "-1", "--separate-connections", action="store_true", help="2.4: one row per session"
        )
        parser.add_argument("masks", nargs="*", metavar="mask", help="2.4: user mask (* and ?) or ip[/bits]")

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from .ipc import AnvilGreeting

        conn = self.open_ipc(parsed_args.socket_path, "LIST-FULL")
        if conn is None:
            return super().take_action(parsed_args)
        from .v23 import check_list_v23, list_v23

        with conn:
            if self.check_v23(conn, parsed_args.socket_path, lambda: check_list_v23(parsed_args)) is None:
                return super().take_action(parsed_args)
            try:
                return list_v23(self, conn)
            except AnvilGreeting:
                pass
        self.late_greeting(parsed_args.socket_path)
        return super().take_action(parsed_args)


class ProxyKick(ProxyCommand, Kick):
    """Disconnect proxied sessions by user, alt username or destination (2.3: ipc KICK; 2.4: kick)."""

    usage = (
        "[-a <ipc (2.3) or anvil (2.4) socket path>] [-f <passdb field>] [-h <dest host>] "
        "[<user (mask)> ...] (2.3: -h <host> [<host> ...])"
    )
    #: ``dvadm help proxy kick`` and ``man dvadm-proxy-kick`` (doveadm_py.manual markup).
    manual_sections = (
        (
            "Description",
            """\
Disconnects proxied sessions, as the server's own doveadm proxy kick does.

- Dovecot 2.3 (<base_dir>/ipc): user ... kicks those users' proxies (KICK: exact names, no
  wildcards); with -f passdb_field the arguments are values of that alt username field
  (KICK-ALT); -h host [host ...] kicks proxies to those passdb hosts (KICK-HOST; the
  positionals are more hosts). Only proxies are kicked; the users' direct sessions stay. The
  count printed is the last login process's, not a sum (as doveadm 2.3: 0 without proxies,
  (null) when every proxying process is gone).
- Dovecot 2.4: this is dvadm kick (masks, networks, -f, -h dest_host, --dry-run), which
  reaches every session of a matching user, not only its proxies.""",
        ),
        (
            "Examples",
            """\
    dvadm proxy kick jane bob          their proxied sessions
    dvadm proxy kick -f user_alias a1  by an alternative username
    dvadm proxy kick -h 10.0.0.5       every proxy to backend 10.0.0.5""",
        ),
        (
            "Exit status",
            """\
0 success (also when nothing was kicked); 64 a bad command line (no user and no -h, -f without
users, an empty user or host; on 2.3 -f with -h, and --dry-run, which 2.3 cannot answer
truthfully: LIST-FULL shows the resolved backend IP, KICK-HOST matches the passdb host text),
nothing sent; 75 the socket is unreachable, the reply is an error, malformed or late.""",
        ),
        ("See also", "dvadm(1), dvadm-proxy-list(1), dvadm-kick(1), doveadm-proxy(1)"),
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_common_arguments(parser)
        parser.add_argument(
            "-h",
            "--dest-host",
            metavar="dest_host",
            help="kick proxies to this host (2.3: and to the others given)",
        )
        parser.add_argument("--force", action="store_true", help=argparse.SUPPRESS)  # refused with a reason
        parser.add_argument(
            "--dry-run", action="store_true", help="2.4: show the sessions that would be kicked"
        )
        parser.add_argument(
            "masks",
            nargs="*",
            metavar="user",
            help="2.3: user (exact), alt value or host; 2.4: user mask or ip[/bits]",
        )

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from .ipc import AnvilGreeting
        from .v23 import check_kick_v23, kick_v23

        if not parsed_args.masks and parsed_args.dest_host is None:
            if parsed_args.passdb_field is not None:
                raise UsageError("Username must be given with passdb-field parameter")
            raise UsageError("user or -h <host> must be specified.")
        conn = self.open_ipc(parsed_args.socket_path, "KICK")
        if conn is None:
            return self._kick_v24(parsed_args)
        with conn:
            command = self.check_v23(conn, parsed_args.socket_path, lambda: check_kick_v23(parsed_args))
            if command is None:
                return self._kick_v24(parsed_args)
            try:
                return kick_v23(self, conn, command)
            except AnvilGreeting:
                pass
        self.late_greeting(parsed_args.socket_path)
        return self._kick_v24(parsed_args)

    def _kick_v24(self, parsed_args: argparse.Namespace) -> int:
        client = self._probed
        if client is None or client.protocol != 2:  # never the 2.3 signalling path from proxy kick
            raise TempFailError("proxy kick: the server's generation could not be settled; nothing kicked")
        return super().take_action(parsed_args)
