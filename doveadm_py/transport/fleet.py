"""The fleet file, ``-S`` target selection, and asking every selected server at once.

The fleet file (TOML) is ``$DVADM_FLEET``, else ``/etc/dvadm/fleet.toml``, else
``~/.config/dvadm/fleet.toml``::

    [defaults]                      # optional: connect_timeout, timeout (seconds)
    [servers.backend1]
    url = "https://mail1.example.net:8080"
    api_key_file = "/etc/dvadm/backend1.key"   # or api_key_env, password_file, password_env
    groups = ["backends"]
    ca_file = "/etc/dvadm/ca.pem"              # optional; else the system CAs

A secret file that group or others may read is refused (as ssh refuses such a key).
Secrets are read only for the selected servers and never printed.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import TempFailError, UsageError
from .http import Credentials, HttpTransport

FLEET_ENV = "DVADM_FLEET"
SYSTEM_FLEET = "/etc/dvadm/fleet.toml"
USER_FLEET = "~/.config/dvadm/fleet.toml"
#: Secrets for a ``-S URL`` that is not in the fleet file (never on the command line).
URL_KEY_ENV = "DVADM_API_KEY"
URL_PASSWORD_ENV = "DVADM_PASSWORD"
#: dvadm's -o settings for remote servers (seconds; the pool size).
CONNECT_TIMEOUT = "dvadm_http_connect_timeout"
READ_TIMEOUT = "dvadm_http_timeout"
PARALLEL = "dvadm_fleet_parallel"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_PARALLEL = 32
SECRET_KEYS = ("api_key_file", "api_key_env", "password_file", "password_env")
SERVER_KEYS = frozenset({"url", "groups", "ca_file", "connect_timeout", "timeout", *SECRET_KEYS})
TIMEOUT_KEYS = ("connect_timeout", "timeout")


@dataclass
class Server:
    """One ``[servers.NAME]`` entry (or a ``-S URL`` not in the file)."""

    name: str
    url: str
    secret: tuple[str, str]  # (kind, file path or variable name)
    groups: tuple[str, ...] = ()
    ca_file: str | None = None
    timeouts: dict[str, float] = field(default_factory=dict)


@dataclass
class Fleet:
    path: str | None
    servers: dict[str, Server]  # in file order
    defaults: dict[str, float] = field(default_factory=dict)

    def groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for server in self.servers.values():
            for group in server.groups:
                groups.setdefault(group, []).append(server.name)
        return groups


def fleet_path() -> str | None:
    """The fleet file in use, or None when there is none."""
    configured = os.environ.get(FLEET_ENV)
    if configured:
        return configured
    for candidate in (SYSTEM_FLEET, os.path.expanduser(USER_FLEET)):
        if os.path.exists(candidate):
            return candidate
    return None


def load_fleet(path: str | None) -> Fleet:
    """Parse and check a fleet file; no path is an empty fleet (``-S URL`` still works)."""
    if path is None:
        return Fleet(None, {})
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise TempFailError(f"fleet file {path} not found") from None
    except OSError as err:
        raise TempFailError(f"cannot read fleet file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise TempFailError(f"fleet file {path}: invalid TOML: {err}") from None
    return parse_fleet(path, data)


def parse_fleet(path: str, data: dict[str, Any]) -> Fleet:
    def bad(message: str) -> TempFailError:
        return TempFailError(f"fleet file {path}: {message}")

    unknown = set(data) - {"servers", "defaults"}
    if unknown:
        raise bad(f"unknown table or key {sorted(unknown)[0]!r} (expected [servers.NAME], [defaults])")
    defaults = _timeouts(data.get("defaults", {}), "[defaults]", bad)
    servers_table = data.get("servers", {})
    if not isinstance(servers_table, dict):
        raise bad("servers must be a table of [servers.NAME] tables")
    servers: dict[str, Server] = {}
    for name, entry in servers_table.items():
        where = f"[servers.{name}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be a table")
        if name == "all" or not name or "://" in name:
            raise bad(f"{where}: {name!r} cannot be a server name")
        unknown = set(entry) - SERVER_KEYS
        if unknown:
            raise bad(f"{where}: unknown key {sorted(unknown)[0]!r}")
        url = entry.get("url")
        if not isinstance(url, str):
            raise bad(f"{where}: url is missing")
        check_url(url, lambda message: bad(f"{where}: {message}"))  # noqa: B023 (called at once)
        secrets = [k for k in SECRET_KEYS if k in entry]
        if len(secrets) != 1:
            raise bad(f"{where}: give exactly one of {', '.join(SECRET_KEYS)}")
        value = entry[secrets[0]]
        if not isinstance(value, str) or not value:
            raise bad(f"{where}: {secrets[0]} must be a non-empty string")
        groups = entry.get("groups", [])
        if not (isinstance(groups, list) and all(isinstance(g, str) and g for g in groups)):
            raise bad(f"{where}: groups must be a list of names")
        ca_file = entry.get("ca_file")
        if ca_file is not None and not isinstance(ca_file, str):
            raise bad(f"{where}: ca_file must be a path")
        servers[name] = Server(
            name, url, (secrets[0], value), tuple(groups), ca_file, _timeouts(entry, where, bad)
        )
    fleet = Fleet(path, servers, defaults)
    for group in fleet.groups():
        if group in servers:
            raise bad(f"group {group!r} has the name of a server")
        if group == "all":
            raise bad("'all' cannot be a group name: -S all means every server")
    return fleet


def _timeouts(table: Any, where: str, bad: Callable[[str], Exception]) -> dict[str, float]:
    if not isinstance(table, dict):
        raise bad(f"{where} must be a table")
    result = {}
    for key, value in table.items():
        if key not in TIMEOUT_KEYS:
            if where == "[defaults]":
                raise bad(f"{where}: unknown key {key!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
            raise bad(f"{where}: {key} must be a number of seconds greater than 0")
        result[key] = float(value)
    return result


def check_url(url: str, bad: Callable[[str], Exception]) -> None:
    scheme, sep, rest = url.partition("://")
    if "@" in (rest if sep else url).split("/", 1)[0]:  # checked first: the message must not show them
        raise bad("credentials do not belong in the url: use api_key_file, password_file or the *_env keys")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise bad(f"url {url!r} must be http://HOST:PORT or https://HOST:PORT")


def select(fleet: Fleet, targets: Sequence[str]) -> list[Server]:
    """The servers ``-S`` names (server, group, URL or ``all``): fleet-file order, then URLs given."""
    chosen: set[str] = set()
    extra: dict[str, Server] = {}
    groups = fleet.groups()
    by_url = {s.url.rstrip("/"): s.name for s in fleet.servers.values()}
    where = fleet.path or "(no fleet file: set $DVADM_FLEET or create /etc/dvadm/fleet.toml)"
    for target in targets:
        if target == "all":
            if not fleet.servers:
                raise UsageError(f"-S all: no servers in {where}")
            chosen.update(fleet.servers)
        elif target in fleet.servers:
            chosen.add(target)
        elif target in groups:
            chosen.update(groups[target])
        elif "://" in target:
            check_url(target, UsageError)
            known = by_url.get(target.rstrip("/"))
            if known is not None:
                chosen.add(known)
            elif target not in extra:
                extra[target] = url_server(target)
        else:
            raise UsageError(f"-S {target}: no such server or group in {where}")
    return [s for name, s in fleet.servers.items() if name in chosen] + list(extra.values())


def url_server(url: str) -> Server:
    if os.environ.get(URL_KEY_ENV):
        secret = ("api_key_env", URL_KEY_ENV)
    elif os.environ.get(URL_PASSWORD_ENV):
        secret = ("password_env", URL_PASSWORD_ENV)
    else:
        raise UsageError(
            f"-S {url}: not in the fleet file; set ${URL_KEY_ENV} or ${URL_PASSWORD_ENV} for its secret"
        )
    return Server(url, url, secret)


def read_secret(server: Server) -> Credentials:
    """The server's credentials; a secret file readable by group or others is refused."""
    kind, where = server.secret
    if kind.endswith("_env"):
        value = os.environ.get(where)
        if not value:
            raise TempFailError(f"{server.name}: environment variable {where} ({kind}) is not set")
    else:
        value = read_secret_file(server.name, where)
    if kind.startswith("api_key"):
        return Credentials(api_key=value)
    return Credentials(password=value)


def read_secret_file(name: str, path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise TempFailError(f"{name}: cannot read secret file {path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise TempFailError(f"{name}: secret file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise TempFailError(
                f"{name}: secret file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        data = f.read(64 * 1024)
    text = data.decode("utf-8", "strict").strip("\r\n") if data else ""
    if not text:
        raise TempFailError(f"{name}: secret file {path} is empty")
    return text


def timeout_for(server: Server, fleet: Fleet, overrides: dict[str, float], key: str, default: float) -> float:
    """-o wins, then the server's entry, then [defaults], then dvadm's default."""
    if key in overrides:
        return overrides[key]
    return server.timeouts.get(key, fleet.defaults.get(key, default))


def transports(
    fleet: Fleet,
    servers: Sequence[Server],
    overrides: dict[str, float],
    debug: Callable[[str], None] | None = None,
) -> list[HttpTransport | ServerFailure]:
    """A transport per server, or the failure that keeps it from having one (e.g. its secret)."""
    result: list[HttpTransport | ServerFailure] = []
    for server in servers:
        try:
            credentials = read_secret(server)
        except (TempFailError, UnicodeDecodeError) as err:
            message = err.message if isinstance(err, TempFailError) else f"{server.name}: secret is not UTF-8"
            result.append(ServerFailure(server.name, message))
            continue
        result.append(
            HttpTransport(
                server.name,
                server.url,
                credentials,
                ca_file=server.ca_file,
                connect_timeout=timeout_for(
                    server, fleet, overrides, "connect_timeout", DEFAULT_CONNECT_TIMEOUT
                ),
                timeout=timeout_for(server, fleet, overrides, "timeout", DEFAULT_READ_TIMEOUT),
                debug=debug,
            )
        )
    return result


class ServerFailure(NamedTuple):
    """A server that could not give its result; ``message`` starts with its name."""

    name: str
    message: str


class Answer(NamedTuple):
    """One server's result, in the order the servers were selected."""

    name: str
    value: Any


def ask_all(
    targets: Sequence[HttpTransport | ServerFailure],
    ask: Callable[[HttpTransport], Any],
    parallel: int = DEFAULT_PARALLEL,
) -> list[Answer | ServerFailure]:
    """``ask(transport)`` for every server at once (a bounded pool); failures stay per server."""
    from ..errors import DoveadmError

    def run(target: HttpTransport | ServerFailure) -> Answer | ServerFailure:
        if isinstance(target, ServerFailure):
            return target
        try:
            return Answer(target.name, ask(target))
        except DoveadmError as err:
            message = err.message
            if not message.startswith(target.name + ":"):
                message = f"{target.name}: {message}"
            return ServerFailure(target.name, message)
        except Exception as err:  # a bug must not cost the other servers' results
            return ServerFailure(target.name, f"{target.name}: internal error: {type(err).__name__}: {err}")
        finally:
            target.close()

    if len(targets) <= 1:
        return [run(t) for t in targets]
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(targets)))) as pool:
        return list(pool.map(run, targets))


def connect(
    targets: Sequence[str], overrides: dict[str, str], seconds: Callable[[str, float], float], debug: Any
) -> list[HttpTransport | ServerFailure]:
    """Transports for ``-S`` targets: reads the fleet file, the -o timeouts and the secrets."""
    fleet = load_fleet(fleet_path())
    servers = select(fleet, targets)
    given = {}
    for option, key in ((CONNECT_TIMEOUT, "connect_timeout"), (READ_TIMEOUT, "timeout")):
        if option in overrides:
            given[key] = seconds(option, 0.0)
    return transports(fleet, servers, given, debug)


def merge(parts: Sequence[tuple[str, Sequence[Any], Any, int]]) -> tuple[list[Any], Any, int]:
    """One result from each server's (name, headers, rows, generation): a leading ``server``
    column, the union of the columns (2.4's titles when the fleet mixes generations; a value a
    server lacks is empty), rows in server order."""
    from ..output import Header

    generation = max((p[3] for p in parts), default=2)
    headers: dict[str, Any] = {"server": Header("server", "server")}
    for _, part_headers, _, _ in sorted(parts, key=lambda p: -p[3]):
        for header in part_headers:
            headers.setdefault(header.key, header)
    keys = list(headers)

    def rows() -> Any:
        for name, part_headers, part_rows, _ in parts:
            part_keys = [h.key for h in part_headers]
            if part_keys == keys[1:]:
                for row in part_rows:
                    yield (name, *row)
                continue
            index = {k: i for i, k in enumerate(part_keys)}
            picks = [index.get(k) for k in keys[1:]]
            for row in part_rows:
                yield (name, *("" if i is None else row[i] for i in picks))

    return list(headers.values()), rows(), generation
