"""``dvadm who`` against the real ``doveadm who`` of Dovecot 2.3, 2.4.1 and 2.4.5, with fixed sessions.

Every scenario runs both tools on the same anvil state and compares exit code, stderr, titles and rows.
Row order is hash order upstream, so rows are compared as multisets. Byte-exactness is required for tab,
flow, pager and ``who -1`` tables. The aggregated table is compared field by field, because doveadm sizes
its columns from the first row only (it flushes after every row) and dvadm measures up to 100 rows. A
separate test checks that ``TableFormatter(buffer_rows=1)``, given doveadm's rows in doveadm's order,
reproduces doveadm's table exactly. doveadm 2.3's aggregated JSON is invalid (reference section 5): its
objects are picked out one by one, while dvadm's output must parse as a JSON array.

Scenarios run concurrently in one module fixture per server: each process start costs about 0.1 s.
Each server also holds a session logged in through its in-instance IMAP proxy: on 2.4 that is two
sessions (``imap-login`` with a ``dest_ip``, and the backend's ``imap``), on 2.3 one.
On a chroot server the reference doveadm runs inside the chroot, so paths in its arguments and messages
are the chroot's: dvadm's messages are compared with the chroot root taken out of their paths.
doveadm 2.4.1 prints empty table cells as blanks where later 2.4 print ``-`` (dvadm does as they do, see
README): for 2.4.1 only, the blank cells of its tables are filled with ``-`` before comparing.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from doveadm_py.output.table import TableFormatter
from doveadm_py.sessionview import AGGREGATED_V1, AGGREGATED_V2
from doveadm_py.testing import (
    DEFAULT_PASSWORD,
    DEFAULT_USER_FIELDS,
    DEFAULT_USERS,
    REFERENCE_SESSIONS,
    DovecotInstance,
    open_sessions,
)
from doveadm_py.testing.cli import run_dvadm
from doveadm_py.testing.fixtures import dovecot_servers
from doveadm_py.testing.servers import DovecotServer
from doveadm_py.testing.tables import dash_blank_cells, prints_blank_cells

pytestmark = [pytest.mark.dovecot, dovecot_servers()]

PROXIED = ("proxied", "127.0.3.7")  # logs in through the instance's IMAP proxy
USERS = {**DEFAULT_USERS, "12345": DEFAULT_PASSWORD, PROXIED[0]: DEFAULT_PASSWORD}
# Every user has a user_alias: doveadm 2.4.1 and 2.4.5 crash (SIGSEGV) on `who -1 -f user_alias MASK` when a
# session has no value for the field (dvadm's handling of that is tested on its own below).
USER_FIELDS = {**DEFAULT_USER_FIELDS, "12345": {"user_alias": "digits"}, PROXIED[0]: {"user_alias": "px"}}
SPECS = [
    *REFERENCE_SESSIONS,
    ("12345", "127.0.2.8"),  # a digits-only username, outside 127.0.0.0/24
]
ALL = ("jane", "jano", "james", "foo", "bar@example.org", "12345")
ALL_SESSIONS = tuple(user for user, _ in SPECS)
JA = ("jane", "jano", "james")
IN_24 = ("jane", "jano", "james", "foo", "foo", "bar@example.org")  # per session, 127.0.0.0/24


@dataclass(frozen=True)
class Scenario:
    """``args`` follow ``-c <config>``; ``{anvil}``, ``{base_dir}`` and ``{stale}`` are filled in at run time.

    ``users``: the usernames of the expected rows (repeated per session for ``-1``), so a scenario where
    both tools print nothing cannot pass by accident; ``proxied``: the proxied session's rows are expected
    too (see :func:`expected_users`). ``generations``: the anvil protocols the scenario applies to.
    """

    id: str
    args: tuple[str, ...]
    users: tuple[str, ...] = ()
    exit: int = 0
    proxied: bool = False
    generations: tuple[int, ...] = (1, 2)

    @property
    def formatter(self) -> str:
        head = self.args[: self.args.index("who")]
        return head[head.index("-f") + 1] if "-f" in head else "table"

    @property
    def hide_titles(self) -> bool:
        return "-h" in self.args[: self.args.index("who")]

    @property
    def separate(self) -> bool:
        return "-1" in self.args[self.args.index("who") :]


def sc(
    id_: str, *args: str, users: tuple[str, ...] = (), exit: int = 0, generations: tuple[int, ...] = (1, 2)
) -> Scenario:
    return Scenario(id_, args, users, exit, users in (ALL, ALL_SESSIONS), generations)


def expected_users(s: Scenario, generation: int) -> Counter[str]:
    """Usernames of the rows doveadm must print: 2.4 shows the proxied login as imap-login and as imap."""
    extra = [PROXIED[0]] * (generation if s.proxied else 0)
    return Counter(s.users) + Counter(extra)


V2 = (2,)

SCENARIOS = [
    sc("all", "who", users=ALL),
    sc("all-1", "who", "-1", users=ALL_SESSIONS),
    sc("wildcard-star", "who", "ja*", users=JA),
    sc("wildcard-star-1", "who", "-1", "ja*", users=JA),
    sc("wildcard-question", "who", "jan?", users=("jane", "jano")),
    sc("wildcard-icase", "who", "J*", users=JA),
    sc("wildcard-icase-1", "who", "-1", "J*", users=JA),
    sc("exact-icase", "who", "JANE", users=("jane",)),
    sc("no-match", "who", "nobody"),
    sc("no-match-1", "who", "-1", "nobody"),
    sc("ip", "who", "127.0.0.2", users=("jano",)),
    sc("ip-1", "who", "-1", "127.0.0.2", users=("jano",)),
    sc("ip-inet-aton", "who", "127.1", users=("jane",)),
    sc("range-24", "who", "127.0.0.0/24", users=ALL[:-1]),  # foo stays: one of its IPs is in the /24
    sc("range-24-1", "who", "-1", "127.0.0.0/24", users=IN_24),
    sc("range-16", "who", "127.0.0.0/16", users=ALL),
    sc("range-16-1", "who", "-1", "127.0.0.0/16", users=ALL_SESSIONS),
    sc("range-zero-twice", "who", "127.0.0.0/0", "127.0.0.0/0", users=ALL),
    sc("mask-and-range", "who", "foo", "127.0.0.0/24", users=("foo",)),
    sc("mask-and-range-1", "who", "-1", "foo", "127.0.0.0/24", users=("foo", "foo")),
    sc("mask-and-other-range", "who", "foo", "127.0.1.0/24", users=("foo",)),
    sc("mask-and-other-range-1", "who", "foo", "127.0.1.0/24", "-1", users=("foo",)),
    sc("digits-mask", "who", "12345", users=("12345",)),
    sc("digits-mask-1", "who", "-1", "12345", users=("12345",)),
    sc("tab", "-f", "tab", "who", users=ALL),
    sc("tab-1", "-f", "tab", "who", "-1", users=ALL_SESSIONS),
    sc("tab-no-match", "-f", "tab", "who", "nobody"),
    sc("flow", "-f", "flow", "who", users=ALL),
    sc("flow-1-mask", "-f", "flow", "who", "-1", "ja*", users=JA),
    sc("pager", "-f", "pager", "who", users=ALL),
    sc("pager-1", "-f", "pager", "who", "-1", users=ALL_SESSIONS),
    sc("json", "-f", "json", "who", users=ALL),
    sc("json-mask", "-f", "json", "who", "ja*", users=JA),
    sc("json-one-row", "-f", "json", "who", "127.0.0.2", users=("jano",)),
    sc("json-no-match", "-f", "json", "who", "nobody"),
    sc("json-1", "-f", "json", "who", "-1", users=ALL_SESSIONS),
    sc("json-1-range", "-f", "json", "who", "-1", "127.0.0.0/24", users=IN_24),
    sc("hide-titles", "-h", "who", users=ALL),
    sc("hide-titles-1", "-h", "who", "-1", users=ALL_SESSIONS),
    sc("hide-titles-tab", "-h", "-f", "tab", "who", users=ALL),
    sc("hide-titles-flow-ignored", "-h", "-f", "flow", "who", "-1", users=ALL_SESSIONS),
    sc("socket-path", "who", "-a", "{anvil}", users=ALL),
    sc("socket-path-1-long", "who", "--socket-path", "{anvil}", "-1", "jan?", users=("jane", "jano")),
    sc("base-dir-override", "-o", "base_dir={base_dir}", "who", users=ALL),
    sc("two-networks", "who", "127.0.0.0/24", "10.0.0.0/8", exit=64),
    sc("two-networks-after-user", "who", "foo", "127.0.0.0/24", "127.0.0.0/16", exit=64),
    sc("missing-socket", "who", "-a", "/nonexistent/anvil", exit=75),
    sc("refused-socket", "who", "-1", "-a", "{stale}", exit=75),
    sc("missing-base-dir", "-o", "base_dir=/nonexistent", "who", exit=75),
    # 2.4 only: alternative usernames (user_alias; james and bar@example.org share "something").
    sc(
        "alt-field-1",
        "who",
        "-1",
        "-f",
        "user_alias",
        "something",
        users=("james", "bar@example.org"),
        generations=V2,
    ),
    sc(
        "alt-field-1-tab",
        "-f",
        "tab",
        "who",
        "-1",
        "-f",
        "user_alias",
        "jane-alias",
        users=("jane",),
        generations=V2,
    ),
    sc("alt-field-aggregated-compares-username", "who", "-f", "user_alias", "something", generations=V2),
    sc("alt-field-without-mask-ignored", "who", "-1", "-f", "user_alias", users=ALL_SESSIONS, generations=V2),
    sc("alt-field-unknown", "who", "-1", "-f", "nosuchfield", "x", generations=V2),
    sc("service-login-1", "who", "-1", "127.0.3.7", users=(PROXIED[0],) * 2, generations=V2),
]
OK_SCENARIOS = [s for s in SCENARIOS if s.exit == 0]


@dataclass
class Runs:
    server: DovecotInstance
    doveadm: dict[str, subprocess.CompletedProcess[bytes]]
    dvadm: dict[str, subprocess.CompletedProcess[bytes]]

    @property
    def generation(self) -> int:
        return self.server.server.generation

    @property
    def blank_cells(self) -> bool:
        return prints_blank_cells(self.server.server)

    def applies(self, s: Scenario) -> bool:
        if self.generation not in s.generations:
            pytest.skip(f"{s.id} is for anvil protocol {s.generations}, not {self.generation}")
        return True

    def ours_stderr(self, s: Scenario) -> bytes:
        """dvadm's stderr with host paths into the chroot written as the chroot sees them (doveadm's view)."""
        root = self.server.server.root
        # dvadm's own "Hint: ..." lines (pointers to the fix after doveadm's message) are not doveadm's
        lines = self.dvadm[s.id].stderr.splitlines(keepends=True)
        stderr = b"".join(line for line in lines if not line.startswith(b"Hint: "))
        return stderr if root is None else stderr.replace(f"{root}/".encode(), b"/")


@pytest.fixture(scope="module")
def server(dovecot_server: DovecotServer) -> Iterator[DovecotInstance]:
    with (
        DovecotInstance(USERS, server=dovecot_server, user_fields=USER_FIELDS, proxy=True) as instance,
        open_sessions(instance, SPECS),
        open_sessions(instance, [PROXIED], port=instance.proxy_port),
    ):
        yield instance


@pytest.fixture(scope="module")
def runs(server: DovecotInstance) -> Runs:
    """Every scenario through both tools, concurrently, on a dump that must not change meanwhile."""
    stale = server.base_dir.parent / "stale-anvil"  # in the work dir: a chroot's doveadm must reach it too
    with socket.socket(socket.AF_UNIX) as sock:  # a socket file nobody listens on: ECONNREFUSED
        sock.bind(str(stale))
    paths = {"anvil": server.anvil_path, "base_dir": server.base_dir, "stale": stale}
    theirs = {key: server.inner(path) for key, path in paths.items()}
    mine = {key: str(path) for key, path in paths.items()}
    scenarios = [s for s in SCENARIOS if server.server.generation in s.generations]

    before = Counter(server.connect_dump())
    sessions = len(SPECS) + server.server.generation  # the proxied login counts twice on 2.4
    assert sum(e.refcount for e in before.elements()) == sessions
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        real = {s.id: pool.submit(server.doveadm, *[a.format(**theirs) for a in s.args]) for s in scenarios}
        ours = {
            s.id: pool.submit(
                run_dvadm, *server.dvadm_args(), *[a.format(**mine) for a in s.args], timeout=30
            )
            for s in scenarios
        }
        result = Runs(
            server, {k: f.result() for k, f in real.items()}, {k: f.result() for k, f in ours.items()}
        )
    assert Counter(server.connect_dump()) == before, "sessions changed while the scenarios ran"
    return result


# -- parsing both tools' output into comparable records ---------------------------------------------------


def lines(data: bytes) -> list[bytes]:
    assert data == b"" or data.endswith(b"\n"), data
    return data.splitlines()


def json_objects(data: bytes) -> list[dict[str, str]]:
    """The ``{...}`` objects of doveadm 2.3's JSON, which is invalid for aggregated ``who``."""
    return [json.loads(m) for m in re.findall(rb"\{[^{}]*\}", data)]


def as_multiset(objects: list[dict[str, str]]) -> Counter[tuple[tuple[str, str], ...]]:
    return Counter(tuple(obj.items()) for obj in objects)


def titles_and_rows(s: Scenario, data: bytes) -> tuple[list[bytes] | None, list[bytes]]:
    """(title line split into titles, or None when not shown; the row records as bytes)."""
    kind = s.formatter
    if kind == "pager":
        return None, [] if not data else data.split(b"\x0c\n")
    if kind == "flow":
        return None, lines(data)
    rows = lines(data)
    if s.hide_titles:
        return None, rows
    assert rows, f"no title line in {data!r}"
    sep = b"\t" if kind == "tab" else None
    return rows[0].split(sep), rows[1:]


def usernames(s: Scenario, data: bytes) -> list[str]:
    """The username of every row (one per session for ``-1``)."""
    if s.formatter == "json":
        return [obj["username"] for obj in json_objects(data)]
    _, rows = titles_and_rows(s, data)
    if s.formatter == "pager":
        return [record.split(b"\n", 1)[0].removeprefix(b"username: ").decode() for record in rows]
    if s.formatter == "flow":
        return [row.split(b" ", 1)[0].removeprefix(b"username=").decode() for row in rows]
    sep = b"\t" if s.formatter == "tab" else None
    return [row.split(sep)[0].decode() for row in rows]


# -- the differential tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("s", SCENARIOS, ids=lambda s: s.id)
def test_exit_code_and_stderr_match(runs: Runs, s: Scenario) -> None:
    runs.applies(s)
    real, ours = runs.doveadm[s.id], runs.dvadm[s.id]
    assert real.returncode == s.exit, real.stderr
    assert ours.returncode == real.returncode, ours.stderr
    assert runs.ours_stderr(s) == real.stderr
    if s.exit:
        assert ours.stdout == b""


@pytest.mark.parametrize("s", OK_SCENARIOS, ids=lambda s: s.id)
def test_rows_match(runs: Runs, s: Scenario) -> None:
    runs.applies(s)
    real, ours = runs.doveadm[s.id].stdout, runs.dvadm[s.id].stdout
    assert Counter(usernames(s, real)) == expected_users(s, runs.generation), real
    if runs.blank_cells and s.formatter == "table" and s.separate:
        real = dash_blank_cells(real)
    if s.formatter == "json":
        parsed = json.loads(ours)  # dvadm's JSON is always valid
        assert isinstance(parsed, list) and ours.startswith(b"[") and ours.endswith(b"]")
        assert as_multiset(parsed) == as_multiset(json_objects(real))
        return
    real_titles, real_rows = titles_and_rows(s, real)
    our_titles, our_rows = titles_and_rows(s, ours)
    assert our_titles == real_titles
    if s.formatter == "table" and not s.separate:
        # Widths differ by design (see the module docstring): compare the fields, not the padding.
        assert Counter(tuple(row.split()) for row in our_rows) == Counter(tuple(r.split()) for r in real_rows)
        assert len({len(line) for line in lines(ours)}) == 1  # every line padded to the same widths
    else:
        assert Counter(our_rows) == Counter(real_rows)


@pytest.mark.parametrize(
    "s", [s for s in OK_SCENARIOS if s.formatter == "json" and len(s.users) > 1], ids=lambda s: s.id
)
def test_json_validity_as_the_reference_says(runs: Runs, s: Scenario) -> None:
    """2.3 closes the array at its first flush: aggregated who is broken, who -1 is valid (section 5).

    2.4's JSON is valid either way.
    """
    runs.applies(s)
    real = runs.doveadm[s.id].stdout
    if s.separate or runs.generation == 2:
        assert as_multiset(json.loads(real)) == as_multiset(json_objects(real))
    else:
        assert real.startswith(b"[{") and b"}],{" in real and real.endswith(b"}")
        with pytest.raises(json.JSONDecodeError):
            json.loads(real)


def parse_aggregated_table(data: bytes) -> list[tuple[str, ...]]:
    """doveadm's aggregated table rows in its own order: username, #, proto, (pids), (ips)."""
    row = re.compile(r"(\S+) +(\d+) (\S+) +(\([^)]*\)) +(\([^)]*\)) *")
    parsed = []
    for line in lines(data)[1:]:
        match = row.fullmatch(line.decode())
        assert match, line
        parsed.append(match.groups())
    return parsed


@pytest.mark.parametrize("scenario_id", ["all", "range-24", "wildcard-star"])
def test_first_row_table_rule_reproduces_doveadm_bytes(runs: Runs, scenario_id: str) -> None:
    """doveadm's aggregated table is what dvadm's table printer makes when it measures only row one."""
    real = runs.doveadm[scenario_id].stdout
    rows = parse_aggregated_table(real)
    assert len(rows) > 1
    out = io.StringIO()
    headers = AGGREGATED_V1 if runs.generation == 1 else AGGREGATED_V2
    TableFormatter(out, generation=runs.generation, buffer_rows=1, width=80).write(headers, rows)
    assert out.getvalue().encode() == real


def test_digits_only_mask_is_a_username_never_an_ip(runs: Runs) -> None:
    """``12345`` would be the IP 0.0.48.57 through inet_aton; both tools take it as a username."""
    for tool in (runs.doveadm, runs.dvadm):
        assert b"127.0.2.8" in tool["digits-mask"].stdout


def test_aggregated_range_keeps_all_ips_of_a_matching_user(runs: Runs) -> None:
    """foo has 127.0.1.9 outside the /24 and still shows it (any IP in the network keeps the user)."""
    for tool in (runs.doveadm, runs.dvadm):
        foo = [line for line in lines(tool["mask-and-range"].stdout) if line.startswith(b"foo ")]
        assert len(foo) == 1 and b"127.0.1.9" in foo[0] and b" 3 imap " in foo[0]
        assert b"127.0.1.9" not in tool["mask-and-range-1"].stdout


def test_scenarios_ran_against_the_expected_server(runs: Runs) -> None:
    assert Path(runs.server.anvil_path).is_socket()
    assert len(SCENARIOS) >= 12 and len({s.id for s in SCENARIOS}) == len(SCENARIOS)


def test_a_session_without_the_alt_field_is_no_match(dovecot_server: DovecotServer, dovecot_factory) -> None:
    """``who -1 -f user_alias MASK`` where a session has no ``user_alias``: dvadm lists the matching ones.

    doveadm 2.4.1 and 2.4.5 crash there (SIGSEGV, nothing printed), so their output is compared only where
    they do not: without ``-f``, where the missing value is an empty cell (``-`` in dvadm's table).
    """
    if dovecot_server.generation != 2:
        pytest.skip("alternative usernames are 2.4's")
    instance = dovecot_factory(user_fields={"jane": {"user_alias": "jane-alias"}})  # jano has none
    with open_sessions(instance, [("jane", "127.0.0.1"), ("jano", "127.0.0.2")]):
        ours = run_dvadm(*instance.dvadm_args(), "-f", "tab", "who", "-1", "-f", "user_alias", "jane-alias")
        assert (ours.returncode, ours.stderr) == (0, b"")
        assert [row.split(b"\t")[0] for row in lines(ours.stdout)[1:]] == [b"jane"]
        theirs = instance.doveadm("-f", "tab", "who", "-1", "-f", "user_alias", "jane-alias")
        if theirs.returncode == 0:  # a doveadm that does not crash
            assert ours.stdout == theirs.stdout
        for formatter in ("tab", "table"):
            ours = run_dvadm(*instance.dvadm_args(), "-f", formatter, "who", "-1")
            theirs = instance.doveadm("-f", formatter, "who", "-1")
            real = theirs.stdout
            if formatter == "table" and prints_blank_cells(dovecot_server):
                real = dash_blank_cells(real)
            assert (ours.returncode, Counter(lines(ours.stdout))) == (theirs.returncode, Counter(lines(real)))
