"""A throwaway real Dovecot instance (2.3 on the host, 2.4 in a chroot), the reference server for tests.

Everything lives in one private work dir (config, passwd-file, base_dir with the anvil socket, mail homes,
logs), so an instance never touches the system's /run/dovecot or /var/lib/dovecot and several can run side by
side. Which Dovecot runs is a :class:`~doveadm_py.testing.servers.DovecotServer` (see that module for the
2.4 chroots); paths on an instance are host paths, :meth:`DovecotInstance.inner` gives the server's view.
The master runs in the foreground (``dovecot -F``) as our own child: we know its pid, can wait for
it and never leave a zombie behind, even under an init that does not reap orphans.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from doveadm_py.testing.servers import DovecotServer, get_server

DEFAULT_PASSWORD = "secret"
#: The users every default instance has (the set section 10 of the reference was observed with).
DEFAULT_USERS: Mapping[str, str] = {
    name: DEFAULT_PASSWORD for name in ("jane", "jano", "james", "foo", "bar@example.org")
}
#: Alternative usernames (``user_*`` passdb/userdb fields, tracked by 2.4 anvil) of the default users:
#: james and bar@example.org share one, as in the reference's 2.4 observations.
DEFAULT_USER_FIELDS: Mapping[str, Mapping[str, str]] = {
    "jane": {"user_alias": "jane-alias"},
    "jano": {"user_alias": "jano-alias"},
    "james": {"user_alias": "something"},
    "foo": {"user_alias": "foo-alias"},
    "bar@example.org": {"user_alias": "something"},
}
#: The sessions the reference's real-server observations used: (user, source IP); foo three times.
REFERENCE_SESSIONS: tuple[tuple[str, str], ...] = (
    ("jane", "127.0.0.1"),
    ("jano", "127.0.0.2"),
    ("james", "127.0.0.3"),
    ("foo", "127.0.0.5"),
    ("foo", "127.0.0.6"),
    ("foo", "127.0.1.9"),
    ("bar@example.org", "127.0.0.7"),
)
#: Environment variable naming the ``dovecot`` binary to use (doveadm/doveconf are looked for next to it).
BINARY_ENV = "DVADM_DOVECOT"
HOST = "127.0.0.1"
ANVIL_HANDSHAKE = b"VERSION\tanvil\t1\t0\n"
#: What a 2.4 (protocol 2) client sends first: its VERSION line and an empty line.
ANVIL_HANDSHAKE_V2 = b"VERSION\tanvil-client\t2\t0\n\n"

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_PORT_ATTEMPTS = 5
_POLL_SECONDS = 0.02


class DovecotError(RuntimeError):
    """The instance could not be started or stopped; the message carries the server's own output."""


class DumpEntry(NamedTuple):
    """One 2.3 CONNECT-DUMP line, fields as sent (not tab-unescaped: test users need no escaping).

    A 2.4 dump line (one per connection) is given the same shape: ``<service>/<ip>/<user>``, its pid, 1.
    """

    ident: str
    pid: int
    refcount: int


def dovecot_binary() -> str | None:
    """Path of the ``dovecot`` master binary ($DVADM_DOVECOT, else PATH plus the sbin dirs), or None."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS])
    return shutil.which("dovecot", path=search)


def tool_binary(name: str, dovecot: str | None = None) -> str | None:
    """Path of a Dovecot tool (``doveadm``, ``doveconf``): next to ``dovecot`` first, else on PATH."""
    dovecot = dovecot or dovecot_binary()
    if dovecot:
        sibling = Path(dovecot).with_name(name)
        if os.access(sibling, os.X_OK):
            return str(sibling)
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", *_SBIN_DIRS]))


def dovecot_version(binary: str | None = None) -> str | None:
    """``dovecot --version`` (e.g. ``2.3.19.1 (9b53102964)``), or None if it cannot be run."""
    binary = binary or dovecot_binary()
    if not binary:
        return None
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode(errors="replace").strip() or None


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close): callers must retry on a clash."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def anvil_exchange(path: str | os.PathLike[str], request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw ``request`` to a 2.3 anvil socket and return the reply up to its terminating empty line.

    The request must include the handshake (:data:`ANVIL_HANDSHAKE`). 2.3 anvil keeps the connection open
    after a dump, so we stop at the empty line (a lone ``\\n`` or a trailing ``\\n\\n``), not at EOF.
    """
    deadline = time.monotonic() + timeout
    reply = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(request)
        while reply != b"\n" and not reply.endswith(b"\n\n"):
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                raise DovecotError(f"anvil closed the connection after {reply!r}")
            reply += chunk
    return reply


def anvil_exchange_v2(
    path: str | os.PathLike[str], command: bytes, timeout: float = 5.0
) -> tuple[str, bytes]:
    """One command on a 2.4 anvil (handshake included); return (header line, the lines up to the empty one).

    The reply to CONNECT-DUMP is the server's VERSION line, a header line (the ``user_*`` field names anvil
    has seen, possibly empty), the session lines and an empty line.
    """
    deadline = time.monotonic() + timeout
    reply = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(ANVIL_HANDSHAKE_V2 + command)
        while True:
            lines = reply.split(b"\n")
            # [VERSION, header, *sessions, "" (the end), ""]: complete once an empty line follows the header.
            if len(lines) >= 4 and b"" in lines[2:-1]:
                break
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = sock.recv(65536)
            if not chunk:
                raise DovecotError(f"anvil closed the connection after {reply!r}")
            reply += chunk
    version, header, *rest = reply.split(b"\n")
    if not version.startswith(b"VERSION\tanvil-server\t2\t"):
        raise DovecotError(f"not a 2.4 anvil greeting: {version!r}")
    body = b"\n".join(rest[: rest.index(b"")])
    return header.decode(), body + b"\n" if body else b""


def parse_connect_dump_v2(body: bytes) -> list[DumpEntry]:
    """2.4 CONNECT-DUMP lines (pid, user, service, ip, guid, dest_ip, alt values...) as :class:`DumpEntry`."""
    entries = []
    for line in body.decode().split("\n"):
        if line:
            pid, user, service, ip, *_ = line.split("\t")
            entries.append(DumpEntry(f"{service}/{ip}/{user}", int(pid), 1))
    return entries


def parse_connect_dump(reply: bytes) -> list[DumpEntry]:
    """Split a 2.3 CONNECT-DUMP reply (as returned by :func:`anvil_exchange`) into entries."""
    entries = []
    for line in reply.decode().split("\n"):
        if line:
            ident, pid, refcount = line.split("\t")
            entries.append(DumpEntry(ident, int(pid), int(refcount)))
    return entries


def process_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (os.kill(pid, 0) cannot tell a zombie apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_cmdline(pid: int) -> bytes:
    """``/proc/PID/cmdline`` (NUL-separated; Dovecot rewrites it to its process title), b"" if gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def child_processes(parent: int) -> dict[int, str]:
    """Live children of ``parent`` as pid -> start time (the start time guards against pid reuse)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # fields[0] is field 3 of stat(5): state, ppid, ..., starttime (field 22).
        if fields[1] == str(parent) and fields[0] != "Z":
            children[int(entry)] = fields[19]
    return children


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _check_field(kind: str, value: str) -> None:
    if not value or any(ch in value for ch in ":\r\n\t\0"):
        raise ValueError(
            f"{kind} {value!r} cannot go into a passwd-file (empty, or has ':', TAB, CR, LF, NUL)"
        )


class DovecotInstance:
    """One throwaway Dovecot server with IMAP on a free 127.0.0.1 port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``users`` maps usernames to plain-text
    passwords; ``user_fields`` maps usernames to extra passdb/userdb fields such as ``user_alias`` (default:
    :data:`DEFAULT_USER_FIELDS` for the default users). ``extra_conf`` is appended verbatim to the generated
    dovecot.conf (later settings win, so it can override anything; mind the generation's syntax).
    ``auth_failure_delay`` is in seconds (Dovecot's default of 2 slows failed logins; 2.4 records anvil
    penalties only with a delay: give 1 there). ``server`` is a name
    from :data:`~doveadm_py.testing.servers.SERVERS` (default ``"2.3"``, the host's own Dovecot) or a
    :class:`~doveadm_py.testing.servers.DovecotServer`. ``proxy=True`` adds a second IMAP listener on
    :attr:`proxy_port` that proxies every login to this same instance's :attr:`imap_port` (so ``imap-login``
    sessions with a ``dest_ip`` exist; the backend sees the client's own IP); with ``backend_port`` it proxies
    to that port instead (another instance's ``imap_port``: the proxy's and the backend's sessions are then
    in two anvils, as on real proxies, and a kick of both cannot hit 2.4 anvil's panic on one kick reaching
    a proxy and its own backend). ``lmtp=True`` adds an LMTP
    listener on :attr:`lmtp_port` (the server's ``dovecot-lmtpd`` must be installed): a delivery held open
    after ``RCPT TO`` is an ``lmtp`` session in anvil (:mod:`doveadm_py.testing.lmtp`). Requires root: the
    mail processes run as the ``dovecot`` user, logins chroot as ``dovenull``.
    """

    host: str = HOST

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        extra_conf: str = "",
        *,
        user_fields: Mapping[str, Mapping[str, str]] | None = None,
        proxy: bool = False,
        backend_port: int | None = None,
        lmtp: bool = False,
        server: str | DovecotServer | None = None,
        auth_failure_delay: int = 0,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        binary: str | None = None,
    ) -> None:
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        for user, password in self.users.items():
            _check_field("username", user)
            _check_field("password", password)
        self.user_fields: dict[str, dict[str, str]] = {
            user: dict(fields)
            for user, fields in (DEFAULT_USER_FIELDS if user_fields is None else user_fields).items()
            if user in self.users
        }
        for fields in self.user_fields.values():
            for key, value in fields.items():
                _check_field("field name", key)
                if not value or any(ch in value for ch in ": \r\n\t\0"):
                    raise ValueError(f"field {key}={value!r}: the value cannot go into a passwd-file")
        self.server = get_server(server)
        self.proxy = proxy
        self.proxy_port: int | None = None
        self.backend_port = backend_port
        self.lmtp = lmtp
        self.lmtp_port: int | None = None
        self.extra_conf = extra_conf
        self.auth_failure_delay = auth_failure_delay
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.binary = binary or self.server.binary()
        self.work_dir: Path | None = None
        self.imap_port: int | None = None
        self.master_pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()
        self._final_log = ""

    # -- paths -----------------------------------------------------------------------------------------------

    def _work(self) -> Path:
        if self.work_dir is None:
            raise DovecotError("instance not started")
        return self.work_dir

    @property
    def base_dir(self) -> Path:
        """Dovecot's base_dir: master.pid, anvil and the other service sockets."""
        return self._work() / "run"

    @property
    def anvil_path(self) -> Path:
        return self.base_dir / "anvil"

    @property
    def config_path(self) -> Path:
        return self._work() / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self._work() / "dovecot.log"

    @property
    def _startup_output_path(self) -> Path:
        return self._work() / "master.out"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- configuration ---------------------------------------------------------------------------------------

    def inner(self, path: str | os.PathLike[str]) -> str:
        """A host path in the work dir as this instance's own processes (and its doveadm) see it."""
        return self.server.inner(path)

    def config_text(self) -> str:
        """The dovecot.conf this instance runs with (needs the work dir and port, so only once started)."""
        from doveadm_py.testing.dovecot_conf import config_v1, config_v2

        make = config_v1 if self.server.generation == 1 else config_v2
        return make(self)

    def dvadm_args(self) -> list[str]:
        """Global options that point ``dvadm`` at this instance from the host.

        ``-c <config>`` for the host's 2.3; ``-o base_dir=<host path>`` for a chroot server, whose config
        names paths inside the chroot and whose 2.4 syntax the host's 2.3 doveconf cannot read.
        """
        if self.server.root is None:
            return ["-c", str(self.config_path)]
        return ["-o", f"base_dir={self.base_dir}"]

    def _write_files(self) -> None:
        from doveadm_py.testing.dovecot_conf import passwd_lines, proxy_passwd_lines

        work = self._work()
        uid, gid = self.server.account("dovecot")
        homes = work / "home"
        homes.mkdir(exist_ok=True)
        os.chown(homes, uid, gid)
        files = {"passwd": passwd_lines(self, self.inner(homes), uid, gid)}
        if self.proxy:
            files.update(proxy_passwd_lines(self))
        for name, text in files.items():
            path = work / name
            path.write_text(text)
            os.chown(path, 0, gid)
            path.chmod(0o640)
        self.config_path.write_text(self.config_text())

    # -- life cycle ------------------------------------------------------------------------------------------

    def start(self) -> DovecotInstance:
        """Start the server and wait (bounded) until IMAP accepts and the anvil socket exists."""
        if self._process is not None:
            raise DovecotError("instance already started")
        if not self.binary:
            raise DovecotError("no dovecot binary found")
        self.work_dir = Path(tempfile.mkdtemp(prefix="dvadm-dovecot-", dir=self.server.tmp_dir))
        # mkdtemp makes it 0700: the dovecot and dovenull users must traverse it to reach homes and base_dir.
        self.work_dir.chmod(0o755)
        _RUNNING[id(self)] = self
        try:
            for attempt in range(_PORT_ATTEMPTS):
                self.imap_port = free_port(self.host)
                self.proxy_port = free_port(self.host) if self.proxy else None
                self.lmtp_port = free_port(self.host) if self.lmtp else None
                self._write_files()
                if self._launch() or attempt == _PORT_ATTEMPTS - 1:
                    break
        except BaseException:
            self.stop()
            raise
        if not self.running:
            output = self.log_text()
            self.stop()
            raise DovecotError(f"dovecot did not start after {_PORT_ATTEMPTS} port attempts:\n{output}")
        return self

    def _launch(self) -> bool:
        """Run the master once; False if it lost the port to another process (so retry on a new port)."""
        with self._startup_output_path.open("wb") as out:
            args = ["-F", "-c", self.inner(self.config_path)]
            command = self.server.master_command(args) if self.server.root else [self.binary or "", *args]
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._work(),
                start_new_session=True,  # keep the terminal's Ctrl-C away from it: we stop it ourselves
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                output = self.log_text()
                self._process = None
                if "Address already in use" in output:
                    return False
                raise DovecotError(f"dovecot exited during start-up:\n{output}")
            if self._ready():
                self.master_pid = int((self.base_dir / "master.pid").read_text().strip())
                return True
            time.sleep(_POLL_SECONDS)
        output = self.log_text()
        raise DovecotError(f"dovecot not ready after {self.start_timeout} s:\n{output}")

    def _ready(self) -> bool:
        if not (self.anvil_path.exists() and (self.base_dir / "master.pid").exists()):
            return False
        # imap-login greets only once the auth service answers, so a greeting means logins will work.
        try:
            with socket.create_connection((self.host, self.imap_port or 0), timeout=1.0) as probe:
                return probe.recv(1024).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the master (its pid only), wait bounded for it and its children, then remove the work dir.

        A master stuck past ``stop_timeout`` gets SIGKILL. Its former children still alive then get SIGTERM,
        then SIGKILL, by pid, checked against their start time so a reused pid is never hit. Idempotent.
        """
        if os.getpid() != self._owner_pid:  # a forked child must not stop its parent's server
            return
        process, self._process = self._process, None
        if process is not None:
            children = child_processes(process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=self.stop_timeout)
            self._reap_children(children)
        if self.work_dir is not None:
            with contextlib.suppress(OSError):
                self._final_log = self.log_text()
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None
        _RUNNING.pop(id(self), None)

    def _reap_children(self, children: Mapping[int, str]) -> None:
        """Make the master's former children go, by pid.

        A 2.3 mail process outlives its master by about 10 s (it waits that long after the master's status
        pipe closes before it says BYE), and the log and stats processes stay until their clients are gone.
        A SIGTERM makes imap say ``* BYE Server shutting down.`` at once, as shutdown_clients would.
        """

        def leftovers() -> list[int]:
            return [
                pid for pid, started in children.items() if _start_time(pid) == started and process_alive(pid)
            ]

        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in leftovers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + self.stop_timeout
            while leftovers() and time.monotonic() < deadline:
                time.sleep(_POLL_SECONDS)

    def __enter__(self) -> DovecotInstance:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """The master's start-up output and the instance log (after stop: as they were at stop)."""
        if self.work_dir is None:
            return self._final_log
        parts = []
        for path in (self._startup_output_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def doveadm(
        self, *args: str, timeout: float = 10.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the server's own ``doveadm -c <config> ARGS``, the reference for differential tests.

        Any exit code is returned. On a chroot server it runs inside the chroot: paths in ARGS must be as
        :meth:`inner` gives them.
        """
        return self._tool("doveadm", args, timeout, input)

    def doveconf(self, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[bytes]:
        """Run the real ``doveconf -c <config> ARGS``."""
        return self._tool("doveconf", args, timeout, None)

    def _tool(
        self, name: str, args: tuple[str, ...], timeout: float, input: bytes | None
    ) -> subprocess.CompletedProcess[bytes]:
        if self.server.root is None:
            binary = tool_binary(name, self.binary)
            if not binary:
                raise DovecotError(f"no {name} binary found")
            command = [binary, "-c", str(self.config_path), *args]
        else:
            command = self.server.tool_command(name, ["-c", self.inner(self.config_path), *args])
        return subprocess.run(
            command,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def anvil_request(self, command: bytes, timeout: float = 5.0) -> bytes:
        """One raw command (e.g. ``b"PENALTY-DUMP\\n"``) on this 2.3 instance's anvil, handshake included."""
        if self.server.generation != 1:
            raise DovecotError("anvil_request speaks protocol 1 (2.3); use anvil_exchange_v2 on 2.4")
        return anvil_exchange(self.anvil_path, ANVIL_HANDSHAKE + command, timeout)

    def connect_dump(self, timeout: float = 5.0) -> list[DumpEntry]:
        """The sessions anvil knows, straight from the socket (no doveadm, no dvadm code involved)."""
        if self.server.generation == 1:
            return parse_connect_dump(self.anvil_request(b"CONNECT-DUMP\n", timeout))
        _, body = anvil_exchange_v2(self.anvil_path, b"CONNECT-DUMP\n", timeout)
        return parse_connect_dump_v2(body)

    def __repr__(self) -> str:
        state = f"work_dir={self.work_dir} imap_port={self.imap_port} master_pid={self.master_pid}"
        return f"<DovecotInstance {self.server.name} {state}>"


#: Started and not yet stopped instances, stopped at interpreter exit as a safety net.
_RUNNING: dict[int, DovecotInstance] = {}


def running_instances() -> Iterator[DovecotInstance]:
    """The instances this process started and has not stopped yet."""
    return iter(list(_RUNNING.values()))


@atexit.register
def _stop_all() -> None:
    for instance in running_instances():
        with contextlib.suppress(Exception):
            instance.stop()
