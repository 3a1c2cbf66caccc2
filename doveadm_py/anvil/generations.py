"""Which anvil protocol a socket speaks, remembered per socket, so that no run has to guess.

Why: Dovecot 2.3 never speaks first and 2.4 greets, so silence is the only sign of a 2.3, and a
loaded 2.4 can be silent for a while. A client that takes silence for 2.3 too early sends a
protocol 1 line, which 2.4 logs as "Anvil client not compatible". With the generation
remembered, a run speaks at once to a known 2.3 and waits for a known 2.4's greeting as long as
needed; only the first contact with a socket waits to see whether it greets.

A socket is known by (st_dev, st_ino, st_ctime_ns) of the socket file. Dovecot creates the socket
anew whenever it starts, so a restart (perhaps an upgrade to the other generation) is a new,
unknown socket: an entry never outlives the socket it describes.

The entries live in one small file, ``$XDG_CACHE_HOME/dvadm/anvil-generations`` (default
``~/.cache/dvadm/...``). It is used only if it is a regular file (no symlink) owned by the
effective user, not writable by group or others, and small; every line that does not parse is
ignored. Nothing is created in a directory another user owns (root under sudo keeping a user's
HOME). So a missing, corrupt or foreign file costs at most the first-contact wait, and every
failure to read or write it is silent.
"""

from __future__ import annotations

import contextlib
import os
import stat

MAGIC = "dvadm anvil generations 1"
MAX_ENTRIES = 64  # the most recent ones; more sockets than that is a test suite, not a server
MAX_BYTES = 16 * 1024

Identity = tuple[int, int, int]


def socket_identity(path: str) -> Identity | None:
    """(st_dev, st_ino, st_ctime_ns) of the UNIX socket at ``path``; None for anything else."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISSOCK(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def default_file() -> str | None:
    """``$XDG_CACHE_HOME/dvadm/anvil-generations``, else under ``~/.cache``; None without a home."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG rule: a relative value is ignored
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "dvadm", "anvil-generations")


class Generations:
    """The remembered generations in ``file`` (None: remember nothing)."""

    def __init__(self, file: str | None) -> None:
        self.file = file
        self._entries: dict[Identity, int] | None = None

    @classmethod
    def default(cls) -> Generations:
        return cls(default_file())

    def lookup(self, identity: Identity | None) -> int | None:
        """1 or 2 if the socket with this identity was seen speaking it, else None."""
        if identity is None:
            return None
        return self._load().get(identity)

    def remember(self, identity: Identity | None, generation: int) -> None:
        """Record what the socket spoke (best effort: a failure leaves the file as it was)."""
        if identity is None or self.file is None or generation not in (1, 2):
            return
        entries = self._load()
        if entries.get(identity) == generation:
            return
        entries.pop(identity, None)
        entries[identity] = generation  # last: the most recent
        while len(entries) > MAX_ENTRIES:
            del entries[next(iter(entries))]
        with contextlib.suppress(OSError, ValueError):
            self._write(entries)

    def _load(self) -> dict[Identity, int]:
        if self._entries is None:
            try:
                self._entries = self._read()
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def _read(self) -> dict[Identity, int]:
        if self.file is None:
            return {}
        fd = os.open(self.file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not _trusted(os.fstat(fd)) or not _trusted_dir(os.path.dirname(self.file)):
                return {}
            data = os.read(fd, MAX_BYTES + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_BYTES:
            return {}
        lines = data.decode("utf-8", "replace").split("\n")
        if lines[0] != MAGIC:
            return {}
        entries: dict[Identity, int] = {}
        for line in lines[1:]:
            fields = line.split(" ")
            if len(fields) == 4 and all(f.isascii() and f.isdigit() and len(f) < 30 for f in fields):
                dev, ino, ctime, generation = map(int, fields)
                if generation in (1, 2):
                    entries[(dev, ino, ctime)] = generation
        return entries

    def _write(self, entries: dict[Identity, int]) -> None:
        assert self.file is not None
        directory = os.path.dirname(self.file)
        if not _ours(directory):  # e.g. root under sudo with a user's HOME: leave that home alone
            return
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _trusted_dir(directory):
            return
        text = MAGIC + "\n" + "".join(f"{d} {i} {c} {g}\n" for (d, i, c), g in entries.items())
        temp = f"{self.file}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temp, self.file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


def _trusted(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _ours(directory: str) -> bool:
    """Whether the nearest existing ancestor of ``directory`` (or itself) is owned by us."""
    path = os.path.abspath(directory)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.lstat(path).st_uid == os.geteuid()


def _trusted_dir(directory: str) -> bool:
    st = os.lstat(directory)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022
