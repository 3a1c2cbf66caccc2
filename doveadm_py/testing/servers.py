"""The Dovecot servers tests can ask for: the host's own 2.3, and Debian's 2.4 builds in debootstrap chroots.

A chroot server runs its master as ``unshare --mount`` + ``chroot``: /dev is bind-mounted and /proc mounted in
a private mount namespace of that one master, so no mount leaks to the host or collides with another instance,
and the mounts vanish with the instance's last process. The master is still our direct child (``unshare``
without ``--fork`` and ``chroot`` both exec), so it is stopped by its pid like the host's. Its tools (the
reference ``doveadm``, ``doveconf``) run with a plain ``chroot``. Everything an instance writes lives in a
work dir under the chroot's /tmp; the host sees it as ``<root>/tmp/...`` (the anvil socket included).

The chroots are built by ``.ci/build-dovecot-chroots`` into ``$DVADM_DOVECOT_CHROOTS`` (default
/var/cache/dvadm) as ``dovecot-<suite>``; a directory only appears there once its build has succeeded.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHROOTS_ENV = "DVADM_DOVECOT_CHROOTS"
DEFAULT_CHROOTS = "/var/cache/dvadm"
#: The test programs run inside a chroot's own /tmp (visible from the host under the chroot root).
CHROOT_TMP = "/tmp"
#: Where the chroot tools (util-linux ``unshare``, ``mount``, coreutils ``chroot``) are looked for after PATH.
_SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
CHROOT_TOOLS = ("unshare", "mount", "chroot")


def system_tool(name: str) -> str | None:
    """Path of a system program (PATH, then the usual system directories), or None."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *_SYSTEM_DIRS]))


#: ``dovecot --version`` of each chroot, asked once per process (a chroot does not change under us).
_CHROOT_VERSIONS: dict[Path, str | None] = {}


@dataclass(frozen=True)
class DovecotServer:
    """One Dovecot installation a test instance can be started from.

    ``name`` is what tests ask for and what their ids show; ``generation`` is the anvil protocol (1: 2.3,
    2: 2.4) and selects the config syntax; ``suite`` names the Debian chroot (None: the host's own Dovecot);
    ``version_prefix`` is what ``dovecot --version`` must start with for the server to count as available.
    """

    name: str
    generation: int
    version_prefix: str
    suite: str | None = None

    @property
    def root(self) -> Path | None:
        """The chroot directory, or None for the host's Dovecot."""
        if self.suite is None:
            return None
        return Path(os.environ.get(CHROOTS_ENV) or DEFAULT_CHROOTS) / f"dovecot-{self.suite}"

    @property
    def tmp_dir(self) -> str | None:
        """Where instance work dirs go, as a host path (None: the system's temp dir)."""
        root = self.root
        return None if root is None else str(root / CHROOT_TMP.lstrip("/"))

    def inner(self, path: str | os.PathLike[str]) -> str:
        """``path`` (a host path) as the server's own processes see it (the same path on the host server)."""
        root = self.root
        if root is None:
            return os.fspath(path)
        relative = Path(path).relative_to(root)
        return "/" + relative.as_posix()

    def outer(self, inner_path: str) -> Path:
        """A path as the server sees it, as a host path."""
        root = self.root
        return Path(inner_path) if root is None else root / inner_path.lstrip("/")

    # -- programs --------------------------------------------------------------------------------------------

    def binary(self) -> str | None:
        """The ``dovecot`` master as a host path, or None if missing."""
        from doveadm_py.testing.dovecot import dovecot_binary

        root = self.root
        if root is None:
            return dovecot_binary()
        path = root / "usr/sbin/dovecot"
        return str(path) if os.access(path, os.X_OK) else None

    def tool(self, name: str) -> str | None:
        """A Dovecot tool (``doveadm``, ``doveconf``) as a host path, or None if missing."""
        from doveadm_py.testing.dovecot import tool_binary

        root = self.root
        if root is None:
            return tool_binary(name, self.binary())
        path = root / "usr/bin" / name
        return str(path) if os.access(path, os.X_OK) else None

    def master_command(self, args: list[str]) -> list[str]:
        """The command line that runs ``dovecot ARGS`` as our direct child (pid = master pid)."""
        root = self.root
        if root is None:
            return [self.binary() or "dovecot", *args]
        script = 'root=$1; shift; mount --bind /dev "$root/dev" && mount -t proc proc "$root/proc" && '
        script += 'exec chroot "$root" "$@"'
        unshare = [system_tool("unshare") or "unshare", "--mount", "--propagation", "private", "--"]
        return [*unshare, "sh", "-c", script, "sh", str(root), "/usr/sbin/dovecot", *args]

    def tool_command(self, name: str, args: list[str]) -> list[str]:
        """The command line that runs the server's own tool ``name ARGS`` (paths in ARGS as :meth:`inner`)."""
        root = self.root
        if root is None:
            return [self.tool(name) or name, *args]
        return [system_tool("chroot") or "chroot", str(root), f"/usr/bin/{name}", *args]

    # -- users -----------------------------------------------------------------------------------------------

    def account(self, user: str) -> tuple[int, int]:
        """(uid, gid) of a system user (``dovecot``, ``dovenull``) as the server knows it."""
        root = self.root
        if root is None:
            entry = pwd.getpwnam(user)
            return entry.pw_uid, entry.pw_gid
        for line in (root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[0] == user:
                return int(fields[2]), int(fields[3])
        raise KeyError(f"no user {user!r} in {root}/etc/passwd")

    # -- availability ----------------------------------------------------------------------------------------

    def version(self) -> str | None:
        """``dovecot --version`` (e.g. ``2.4.1-4 (7d8c0e5759)``), or None if it cannot be run."""
        from doveadm_py.testing.dovecot import dovecot_version

        root = self.root
        if root is None:
            return dovecot_version(self.binary())
        if root not in _CHROOT_VERSIONS:
            try:
                done = subprocess.run(
                    [system_tool("chroot") or "chroot", str(root), "/usr/sbin/dovecot", "--version"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
                text = done.stdout.decode(errors="replace").strip() if done.returncode == 0 else ""
            except (OSError, subprocess.TimeoutExpired):
                text = ""
            _CHROOT_VERSIONS[root] = text or None
        return _CHROOT_VERSIONS[root]

    def unavailable_reason(self) -> str | None:
        """Why no instance of this server can run here, or None if one can."""
        root = self.root
        if root is not None and not root.is_dir():
            return (
                f"no Debian {self.suite} chroot at {root} for Dovecot {self.name} "
                "(build it with .ci/build-dovecot-chroots)"
            )
        if root is not None:
            missing = [tool for tool in CHROOT_TOOLS if not system_tool(tool)]
            if missing:
                return (
                    f"Dovecot {self.name} runs in a chroot, which needs {' and '.join(missing)} (util-linux)"
                )
        binary = self.binary()
        if not binary:
            return f"no dovecot binary found for Dovecot {self.name}"
        for tool in ("doveadm", "doveconf"):
            if not self.tool(tool):
                return f"no {tool} binary found for Dovecot {self.name} (next to {binary})"
        version = self.version()
        if not version or not version.startswith(self.version_prefix):
            return f"{binary} is Dovecot {version or '(unknown version)'}, not {self.version_prefix}x"
        if os.geteuid() != 0:
            return "a Dovecot test instance needs root (mail processes switch to the dovecot user)"
        return None


#: Every server the harness knows, by name. Test ids use these names.
SERVERS: dict[str, DovecotServer] = {
    server.name: server
    for server in (
        DovecotServer("2.3", generation=1, version_prefix="2.3."),
        DovecotServer("2.4-trixie", generation=2, version_prefix="2.4.", suite="trixie"),
        DovecotServer("2.4-sid", generation=2, version_prefix="2.4.", suite="sid"),
    )
}
#: Names for ``pytest.mark.parametrize("dovecot_server", ALL_SERVERS, indirect=True)``.
ALL_SERVERS: tuple[str, ...] = tuple(SERVERS)
DEFAULT_SERVER = "2.3"


def get_server(server: str | DovecotServer | None) -> DovecotServer:
    """The server called ``server`` (a :class:`DovecotServer` is returned as is; None: the host's 2.3)."""
    if isinstance(server, DovecotServer):
        return server
    name = server or DEFAULT_SERVER
    try:
        return SERVERS[name]
    except KeyError:
        raise ValueError(f"unknown Dovecot server {name!r}; known: {', '.join(SERVERS)}") from None
