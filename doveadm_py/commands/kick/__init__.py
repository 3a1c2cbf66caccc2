"""``dvadm kick``: disconnect users by name, network and/or proxy destination.

Dovecot 2.4 (anvil protocol 2) kicks through anvil; Dovecot 2.3 (protocol 1) has no kick
in anvil, so doveadm signals the mail processes itself. dvadm does what the server's own
doveadm does, with safety added: see :mod:`~doveadm_py.commands.kick.v1` (2.3) and
:mod:`~doveadm_py.commands.kick.v2` (2.4).
Everything that can be checked without the server is checked before connecting, so bad
input never kicks anything.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ...command import DvadmCommand
from ...errors import DoveadmError, TempFailError, UsageError
from ...masks import CommandEventError, Filter, ReadingsError, parse_masks
from ...netmask import canonical_ip
from ...transport.options import add_socket_path_argument

if TYPE_CHECKING:
    from .report import KickReport

NO_MASKS = "user and/or ip[/bits] must be specified."


class Kick(DvadmCommand):
    """Disconnect users by user name and/or IP address (or proxy destination)."""

    usage = (
        "[-a <anvil socket path> | -S <server> ...] [-f <passdb field>] [-h <dest host>] [--force] "
        "[--dry-run] <user mask>[|]<ip/bits> [<user mask> ...]"
    )
    default_formatter = "formatted"
    changes_state = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_socket_path_argument(parser)
        parser.add_argument(
            "-f", "--passdb-field", metavar="passdb_field", help="kick by this alt username field (2.4)"
        )
        parser.add_argument("-h", "--dest-host", metavar="dest_host", help="kick proxies to this IP (2.4)")
        parser.add_argument(
            "--force", action="store_true", help="2.3: also kill processes shared with other users"
        )
        parser.add_argument("--dry-run", action="store_true", help="show the sessions that would be kicked")
        parser.add_argument("masks", nargs="*", metavar="mask", help="user mask (* and ?) or ip[/bits]")

    def take_action(self, parsed_args: argparse.Namespace) -> int:
        from .report import print_report

        self.server: str | None = parsed_args.socket_path
        if parsed_args.servers:
            from ...transport.kick import fleet_kick

            # fleet_kick audits each server's kick; a refusal before any server is asked, here.
            self.server = " ".join(f"-S {target}" for target in parsed_args.servers)
            self.audited = False
            try:
                return fleet_kick(self, parsed_args)
            except BaseException as err:  # Ctrl-C too: what was sent may have kicked
                if not self.audited:
                    self.audit(parsed_args, None, err)
                raise
        try:
            report = self.run_kick(parsed_args)
        except BaseException as err:  # Ctrl-C too: what was sent may have kicked
            self.audit(parsed_args, None, err)
            raise
        self.audit(parsed_args, report, None)
        code = print_report(self, report)
        if report.generation == 2 and not (report.count or report.sessions):
            self.hint_formatter_as_field(parsed_args.passdb_field, report.alt_fields)
        return code

    def run_kick(self, parsed_args: argparse.Namespace) -> KickReport:
        """Check the command line, kick (or dry-run) and return what happened; prints nothing."""
        command = self.cmd_name or "kick"  # as typed (a plugin's "proxy kick"): 2.4 names its event so
        try:
            filter_, dest_host = validate(parsed_args)
        except ReadingsError as err:  # worded apart by 2.3 and 2.4: as the local server's doveadm
            raise err.for_protocol(self.local_generation(parsed_args.socket_path), command) from None
        with self.local_transport(parsed_args.socket_path) as anvil:
            self.server = anvil.path
            try:
                return anvil.kick(filter_, dest_host, parsed_args)
            except CommandEventError as err:  # settled by the server's generation: 2.4's words
                raise err.for_command(command) from None

    def refused_before_run(self, argv: list[str], error: DoveadmError) -> None:
        """A kick refused for its command line (a bad option, an unknown formatter) before it ran:
        audited like any refusal, with the words as given (a dry run's are not)."""
        if "--dry-run" in argv[: argv.index("--") if "--" in argv else len(argv)]:
            return
        from ...audit import log_kick

        log_kick(argv, [], "(not resolved)", f"refused (exit {error.exit_code}): {error.message}")

    def audit(self, args: argparse.Namespace, report: KickReport | None, error: BaseException | None) -> None:
        """One syslog line per kick and per refused or failed kick (dry runs are not logged)."""
        if args.dry_run:
            return
        from ...audit import log_kick

        self.audited = True

        options = []
        for opt, value in (("-f", args.passdb_field), ("-h", args.dest_host)):
            if value is not None:
                options += [opt, value]
        if args.force:
            options.append("--force")
        if report is not None:
            result = report.summary()
        elif isinstance(error, DoveadmError):
            result = f"refused (exit {error.exit_code}): {error.message}"
        elif isinstance(error, KeyboardInterrupt):
            result = "interrupted (SIGINT): requests already sent may have kicked"
        else:
            result = f"failed: {type(error).__name__}"
        log_kick(args.masks, options, self.server or "(not resolved)", result)


def validate(args: argparse.Namespace) -> tuple[Filter, str | None]:
    """Everything about the command line that can be wrong, checked before any connection."""
    if not args.masks and args.dest_host is None:
        if args.passdb_field is not None:
            raise UsageError("Username must be given with passdb-field parameter")
        raise UsageError(NO_MASKS)
    filter_ = parse_masks(args.masks)
    check_filter(filter_, args)
    dest_host = None
    if args.dest_host is not None:
        dest_host = canonical_ip(args.dest_host, 2)  # net_addr2ip forms, as 2.4 accepts them
        if not dest_host:
            raise TempFailError(f"dest-host isn't a valid IP address: '{args.dest_host}'")
    return filter_, dest_host


def settle(filter_: Filter, protocol: int, args: argparse.Namespace, dump: Any) -> Filter:
    """The masks as the server's generation reads them, checked again (``fe80::1%eth0``).

    A :class:`CommandEventError` is raised unworded: the caller knows the command's name.
    """
    try:
        settled = filter_.for_protocol(protocol)
        if settled is not filter_:
            check_filter(settled, args)
    except UsageError:
        if dump is not None:
            dump.close()
        raise
    return settled


def check_filter(filter_: Filter, args: argparse.Namespace) -> None:
    if filter_.is_empty and args.dest_host is None:
        # Only /0 networks: doveadm 2.3 kicks everyone, 2.4 no one. Too easy a typo either way.
        raise UsageError(f"{NO_MASKS} A /0 network matches everyone: give '*' to kick every user")
    if args.passdb_field is not None:
        if not filter_.user_masks:
            raise UsageError("Username must be given with passdb-field parameter")
        if args.passdb_field == "":
            raise UsageError("-f passdb_field must not be empty")
