"""Dovecot settings every command shares, resolved the way doveadm resolves them.

Only ``base_dir`` matters so far (it locates ``<base_dir>/anvil``). It is resolved
lazily, so a command given ``-a`` never reads the config or runs doveconf.
"""

from __future__ import annotations

import os
import shutil
from functools import cached_property

from .errors import TempFailError, UsageError
from .globalopts import GlobalOptions

DEFAULT_BASE_DIR = "/run/dovecot"
DEFAULT_CONFIG = "/etc/dovecot/dovecot.conf"
#: dvadm's own settings, given like Dovecot's with ``-o key=value``: seconds to wait.
ANVIL_TIMEOUT = "dvadm_anvil_timeout"  # connecting and each read (doveadm waits forever)
KICK_TIMEOUT = "dvadm_kick_timeout"  # each 2.4 kick reply (doveadm: 25 s)


class Settings:
    """``base_dir`` from ``-o base_dir=``, else the config (doveconf when installed), else the default."""

    def __init__(self, options: GlobalOptions, *, doveconf: str | None = "auto") -> None:
        """``doveconf``: its path, ``"auto"`` to look it up on PATH, None to read the file instead."""
        self.options = options
        self._doveconf = doveconf

    @cached_property
    def base_dir(self) -> str:
        opts = self.options
        if "base_dir" in opts.overrides:
            return opts.overrides["base_dir"]
        if opts.no_config:
            return DEFAULT_BASE_DIR
        self.check()
        config = opts.config_file or DEFAULT_CONFIG
        doveconf = shutil.which("doveconf") if self._doveconf == "auto" else self._doveconf
        if doveconf:
            return self._ask_doveconf(doveconf) or DEFAULT_BASE_DIR
        if opts.instance:
            raise TempFailError(f"-i {opts.instance} needs doveconf to find the instance's config")
        return read_base_dir(config) or DEFAULT_BASE_DIR

    @property
    def anvil_path(self) -> str:
        # Not os.path.join: an empty base_dir must still give a path ("/anvil"), never a
        # word that would be taken for a TCP host.
        return f"{self.base_dir.rstrip('/')}/anvil"

    def seconds(self, key: str, default: float) -> float:
        """A positive number of seconds from ``-o key=N``, else ``default``."""
        text = self.options.overrides.get(key)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value < 1e6:
            raise UsageError(f"-o {key}={text}: expected a number of seconds greater than 0")
        return value

    def check(self) -> None:
        """Fail early, as doveadm does, on a ``-c`` config file that does not exist."""
        path = self.options.config_file
        if path and not self.options.no_config and not os.path.exists(path):
            raise TempFailError(f"config file {path} not found (given with -c)")

    def _ask_doveconf(self, doveconf: str) -> str:
        argv = [doveconf]
        if self.options.config_file:
            argv += ["-c", self.options.config_file]
        if self.options.instance:
            argv += ["-i", self.options.instance]
        argv += ["-h", "base_dir"]
        status, out, err = run_captured(argv)
        if status != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()
            raise TempFailError(f"doveconf failed: {detail[-1] if detail else f'exit status {status}'}")
        return out.decode(errors="surrogateescape").strip()


def read_base_dir(path: str) -> str | None:
    """The top-level ``base_dir = ...`` of a dovecot.conf, without includes or sections.

    Used only when doveconf is not installed; a missing file is an error as in doveadm.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as conf:
            lines = conf.readlines()
    except FileNotFoundError:
        raise TempFailError(f"config file {path} not found") from None
    except OSError as err:
        raise TempFailError(f"cannot read config file {path}: {err.strerror}") from None
    depth = 0
    value = None
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if depth == 0 and line.startswith("base_dir"):
            key, sep, val = line.partition("=")
            if sep and key.strip() == "base_dir":
                value = val.strip().strip('"')
        depth += line.count("{") - line.count("}")
    return value


def run_captured(argv: list[str]) -> tuple[int, bytes, bytes]:
    """Run a short helper and capture its output, without importing :mod:`subprocess`.

    subprocess costs several milliseconds of imports on every ``dvadm who``; doveconf
    prints a line, so two pipes and ``posix_spawn`` are all it takes.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
        (os.POSIX_SPAWN_CLOSE, out_r),
        (os.POSIX_SPAWN_CLOSE, err_r),
    ]
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    finally:
        os.close(out_w)
        os.close(err_w)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        stdout = out.read()
        stderr = err.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stdout, stderr
