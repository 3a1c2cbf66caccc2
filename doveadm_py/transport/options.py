"""The options that choose a command's transport: ``-a`` the local anvil, ``-S`` remote servers."""

from __future__ import annotations

import argparse


def add_socket_path_argument(parser: argparse.ArgumentParser) -> None:
    """``-a anvil_socket_path``, as every anvil command has it, and ``-S target`` for remote servers."""
    parser.add_argument(
        "-a", "--socket-path", metavar="anvil_socket_path", help="anvil socket (default <base_dir>/anvil)"
    )
    parser.add_argument(
        "-S",
        "--server",
        dest="servers",
        action="append",
        metavar="target",
        help="remote server(s) through the doveadm HTTP API: a fleet file name, group, URL or 'all'",
    )
