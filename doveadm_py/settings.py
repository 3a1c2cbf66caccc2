"""Dovecot settings every command shares, resolved the way doveadm resolves them.

Only ``base_dir`` matters so far (it locates ``<base_dir>/anvil``). It is resolved
lazily, so a command given ``-a`` never reads the config or runs doveconf.

A machine may carry two Dovecots (Debian's 2.3 and a 2.4 built into ``/opt/dovecot``, a
normal migration): ``-c PREFIX/etc/dovecot/dovecot.conf`` is then asked from
``PREFIX/bin/doveconf`` (or ``sbin``) when there is one, and when doveconf cannot parse the
file (another version's syntax) ``base_dir`` is read from the file itself (with its
``!include`` files). doveconf runs with a deadline, and is killed when it passes.
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
ANVIL_DEADLINE = "dvadm_anvil_deadline"  # a whole exchange: a dump, or all kicks (doveadm: none)
DOVECONF_TIMEOUT = "dvadm_doveconf_timeout"  # the whole doveconf run (doveadm waits forever)
DOVECONF_OUTPUT_LIMIT = 1 << 20  # bytes of doveconf output read at most (it prints one line)


class Settings:
    """``base_dir`` from ``-o base_dir=``, else the config (doveconf when installed), else the default."""

    def __init__(self, options: GlobalOptions, *, doveconf: str | None = "auto") -> None:
        """``doveconf``: its path, ``"auto"`` to find the config's own or PATH's, None to read the file."""
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
        doveconf = self.doveconf_path()
        if not doveconf:
            if opts.instance:
                raise TempFailError(f"-i {opts.instance} needs doveconf to find the instance's config")
            return read_base_dir(config) or DEFAULT_BASE_DIR
        try:
            return self._ask_doveconf(doveconf) or DEFAULT_BASE_DIR
        except DoveconfFailed as failure:
            if opts.instance or not failure.parse_error:
                raise
            # Another Dovecot's syntax (2.4's dovecot_config_version to a 2.3 doveconf): its
            # base_dir may still be in the file. The built-in default would be this
            # doveconf's installation, not that config's: never guess it.
            value = read_base_dir(config)
            if value is None:
                raise TempFailError(
                    f"{failure.message}; {config} sets no base_dir either (give -o base_dir=DIR or -a)"
                ) from None
            return value

    def doveconf_path(self) -> str | None:
        """The doveconf to ask: the config's own installation's, else the one on PATH."""
        if self._doveconf != "auto":
            return self._doveconf
        return installation_doveconf(self.options.config_file) or shutil.which("doveconf")

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
        timeout = self.seconds(DOVECONF_TIMEOUT, 10.0)
        try:
            status, out, err = run_captured(argv, timeout=timeout)
        except TimeoutError:
            raise TempFailError(f"doveconf {doveconf} did not answer within {timeout:g} s (killed)") from None
        except OSError as error:
            raise TempFailError(f"cannot run doveconf {doveconf}: {error.strerror or error}") from None
        if status != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()
            last = detail[-1][:300] if detail else f"exit status {status}"
            # Exit 89 (FATAL_DEFAULT) is how doveconf reports a config it cannot parse.
            raise DoveconfFailed(f"doveconf failed: {last}", parse_error=status == 89)
        return out.decode(errors="surrogateescape").strip()


class DoveconfFailed(TempFailError):
    """doveconf ran and failed; ``parse_error`` when it could not parse the config."""

    def __init__(self, message: str, *, parse_error: bool) -> None:
        super().__init__(message)
        self.parse_error = parse_error


def installation_doveconf(config: str | None) -> str | None:
    """``PREFIX/bin/doveconf`` (or ``sbin``) for a config at ``PREFIX/etc[/dovecot]/*.conf``.

    Only for a ``-c`` outside the system's own ``/etc``, whose doveconf PATH already finds.
    """
    if not config:
        return None
    directory = os.path.dirname(os.path.abspath(config))
    if os.path.basename(directory) == "dovecot":
        directory = os.path.dirname(directory)
    if os.path.basename(directory) != "etc":
        return None
    prefix = os.path.dirname(directory)
    if prefix in ("/", "/usr"):
        return None
    for sub in ("bin", "sbin"):
        candidate = os.path.join(prefix, sub, "doveconf")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def read_base_dir(path: str) -> str | None:
    """The top-level ``base_dir = ...`` of a dovecot.conf and its includes (see :mod:`.configfile`)."""
    from .configfile import read_top_level

    return read_top_level(path, "base_dir")


def run_captured(
    argv: list[str], *, timeout: float = 10.0, limit: int = DOVECONF_OUTPUT_LIMIT
) -> tuple[int, bytes, bytes]:
    """Run a short helper and capture its output, without importing :mod:`subprocess`.

    subprocess costs several milliseconds of imports on every ``dvadm who``; doveconf
    prints a line, so two pipes and ``posix_spawn`` are all it takes. The whole run is
    bounded by ``timeout`` and its output by ``limit``: past either, the child is killed
    (with its process group), reaped, and TimeoutError raised. OSError when it cannot be started;
    no descriptor outlives the call.
    """
    import select
    import signal
    import time

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = None
    try:
        actions = [
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
            (os.POSIX_SPAWN_CLOSE, out_r),
            (os.POSIX_SPAWN_CLOSE, err_r),
        ]
        try:
            # Its own process group, so that a kill also reaches what it started (a wrapper script's child).
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setpgroup=0)
        finally:
            os.close(out_w)
            os.close(err_w)
        deadline = time.monotonic() + timeout
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        poller = select.poll()
        for fd in chunks:
            poller.register(fd, select.POLLIN)
        open_fds = 2
        total = 0
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0 or total > limit:
                raise TimeoutError(f"{argv[0]} ran past {timeout:g} s or wrote over {limit} bytes")
            for fd, _ in poller.poll(max(1, int(left * 1000))):
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                    total += len(data)
                else:
                    poller.unregister(fd)
                    open_fds -= 1
        status = _wait(pid, deadline)
        pid = None
        return os.waitstatus_to_exitcode(status), b"".join(chunks[out_r]), b"".join(chunks[err_r])
    finally:
        if pid is not None:  # timed out or failed midway: never leave it running or unreaped
            os.killpg(pid, signal.SIGKILL)  # our unreaped child's group: the id cannot be anyone else's
            os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)


def _wait(pid: int, deadline: float) -> int:
    """waitpid with a deadline (the child closed its output but may not have exited)."""
    import time

    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"pid {pid} did not exit in time")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
