"""The print formatters against the worked examples of reference section 5 and doveadm's printer rules."""

from __future__ import annotations

import fcntl
import io
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest
from stevedore import ExtensionManager

from doveadm_py.errors import DoveadmError
from doveadm_py.output import BATCH_ROWS, FORMATTER_NAMESPACE, Formatter, Header, load_formatter
from doveadm_py.output.flow import FlowFormatter
from doveadm_py.output.formatted import NO_FORMAT_MESSAGE, FormattedFormatter
from doveadm_py.output.json import JsonFormatter
from doveadm_py.output.pager import PagerFormatter
from doveadm_py.output.tab import TabFormatter
from doveadm_py.output.table import TableFormatter, column_widths

# --- the data of the worked examples (section 5), in dump order -------------------------------------------

WHO_23 = [
    Header("username", "username"),
    Header("connections", "#", right=True),
    Header("service", "proto"),
    Header("pids", "(pids)"),
    Header("ips", "(ips)"),
]
WHO_23_ROWS = [
    ("alice", "2", "imap", "(1001)", "(192.0.2.10)"),
    ("bob@example.com", "1", "imap", "(1002)", "(2001:db8::5)"),
    ("alice", "1", "pop3", "(1003)", "(192.0.2.10)"),
    ("carol", "1", "lmtp", "(1004)", "()"),
]
WHO1_23 = [
    Header("username", "username", expand=True),
    Header("service", "proto"),
    Header("pid", "pid"),
    Header("ip", "ip"),
]
WHO1_23_ROWS = [
    ("alice", "imap", "1001", "192.0.2.10"),
    ("alice", "imap", "1001", "192.0.2.10"),
    ("bob@example.com", "imap", "1002", "2001:db8::5"),
    ("alice", "pop3", "1003", "192.0.2.10"),
    ("carol", "lmtp", "1004", ""),
]
WHO_24 = [*WHO_23[:2], Header("service", "service"), *WHO_23[3:]]
WHO_24_ROWS = [
    ("alice", "2", "imap", "(1001 1005)", "(192.0.2.10)"),
    ("bob@example.com", "1", "imap-login", "(2001)", "(2001:db8::5)"),
    ("carol", "1", "lmtp", "(1004)", "()"),
]
WHO1_24 = [
    Header("username", "username", expand=True),
    Header("service", "service"),
    Header("pid", "pid"),
    Header("ip", "ip"),
    Header("dest_ip", "dest_ip"),
    Header("user_account", "user_account"),
]
WHO1_24_ROWS = [
    ("alice", "imap", "1001", "192.0.2.10", "", "acct-1"),
    ("alice", "imap", "1005", "192.0.2.10", "", "acct-1"),
    ("bob@example.com", "imap-login", "2001", "2001:db8::5", "10.0.0.7", ""),
    ("carol", "lmtp", "1004", "", "", ""),
]


def render(cls: type[Formatter], headers, rows, **kwargs) -> str:
    out = io.StringIO()
    cls(out, **kwargs).write(headers, rows)
    return out.getvalue()


# --- table: the worked examples ----------------------------------------------------------------------------


def test_table_who_aggregated_23_as_doveadm_measures_only_the_first_row() -> None:
    # doveadm flushes after every aggregated row, so its widths come from the titles plus row 1 only:
    # 8, 1, 5, 6, 12 (total 36), and the last column gets (80 - 36) // 2 = 22 more. buffer_rows=1 is
    # exactly that behaviour; bob@example.com then overflows its 8-wide column.
    table = TableFormatter(io.StringIO(), generation=1, buffer_rows=1)
    table.write(WHO_23, WHO_23_ROWS)
    assert table.widths == [8, 1, 5, 6, 34]
    assert table.out.getvalue() == (
        "username # proto (pids) (ips)                             \n"
        "alice    2 imap  (1001) (192.0.2.10)                      \n"
        "bob@example.com 1 imap  (1002) (2001:db8::5)                     \n"
        "alice    1 pop3  (1003) (192.0.2.10)                      \n"
        "carol    1 lmtp  (1004) ()                                \n"
    )


def test_table_who_aggregated_default_measures_all_buffered_rows() -> None:
    # Deliberate difference from doveadm: dvadm's default buffers up to 100 rows for every command, so the
    # same data measures 15, 1, 5, 6, 13 (total 44) and the last column gets (80 - 44) // 2 = 18 -> 31.
    table = TableFormatter(io.StringIO(), generation=1)
    table.write(WHO_23, WHO_23_ROWS)
    assert table.widths == [15, 1, 5, 6, 31]
    lines = table.out.getvalue().splitlines(keepends=True)
    assert lines[0] == "username        # proto (pids) " + "(ips)".ljust(31) + "\n"
    assert lines[2] == "bob@example.com 1 imap  (1002) " + "(2001:db8::5)".ljust(31) + "\n"
    assert {len(line) for line in lines} == {15 + 1 + 5 + 6 + 31 + 4 + 1}


def test_table_who_minus_1_23() -> None:
    # Widths 15, 5, 4, 11 (total 38); username has EXPAND, so it gets (80 - 38) // 2 = 21 -> 36. A missing
    # IP stays empty on 2.3 (generation 1).
    assert render(TableFormatter, WHO1_23, WHO1_23_ROWS, generation=1) == (
        "username                             proto pid  ip         \n"
        "alice                                imap  1001 192.0.2.10 \n"
        "alice                                imap  1001 192.0.2.10 \n"
        "bob@example.com                      imap  1002 2001:db8::5\n"
        "alice                                pop3  1003 192.0.2.10 \n"
        "carol                                lmtp  1004            \n"
    )


def test_table_who_aggregated_24_as_doveadm_measures_only_the_first_row() -> None:
    # Widths from titles + row 1: 8, 1, 7, 11, 12 (total 43); the last column gets 18 -> 30.
    table = TableFormatter(io.StringIO(), generation=2, buffer_rows=1)
    table.write(WHO_24, WHO_24_ROWS)
    assert table.widths == [8, 1, 7, 11, 30]
    assert table.out.getvalue() == (
        "username # service (pids)      (ips)                         \n"
        "alice    2 imap    (1001 1005) (192.0.2.10)                  \n"
        "bob@example.com 1 imap-login (2001)      (2001:db8::5)                 \n"
        "carol    1 lmtp    (1004)      ()                            \n"
    )


def test_table_who_minus_1_24_prints_empty_values_as_dash() -> None:
    # Empty values measure 0 but print as "-": widths 15, 10, 4, 11, 8, 12 (total 65) -> username 22.
    assert render(TableFormatter, WHO1_24, WHO1_24_ROWS, generation=2) == (
        "username               service    pid  ip          dest_ip  user_account\n"
        "alice                  imap       1001 192.0.2.10  -        acct-1      \n"
        "alice                  imap       1005 192.0.2.10  -        acct-1      \n"
        "bob@example.com        imap-login 2001 2001:db8::5 10.0.0.7 -           \n"
        "carol                  lmtp       1004 -           -        -           \n"
    )


def test_table_dash_measures_as_zero_width() -> None:
    # An untitled column of empty values is 0 wide (total 0 + 1 + 1 = 2, the last column gets 39 -> 40):
    # its "-" overflows and pushes the rest of the line by one character.
    headers = [Header("a", ""), Header("b", "b")]
    table = TableFormatter(io.StringIO(), generation=2, hide_titles=True)
    table.write(headers, [("", "x")])
    assert table.widths == [0, 40]
    assert table.out.getvalue() == "- " + "x".ljust(40) + "\n"


def test_table_kick_single_column() -> None:
    assert render(TableFormatter, [Header("count", "count")], [("2",)]) == (
        "count" + " " * 37 + "\n" + "2" + " " * 41 + "\n"
    )


# --- table: rules ------------------------------------------------------------------------------------------


def test_table_hide_titles_keeps_title_widths() -> None:
    out = render(TableFormatter, WHO1_23, WHO1_23_ROWS[:1], generation=1, hide_titles=True)
    # Widths still include the titles: 8 ("username"), 5 ("proto"), 4, 10 -> total 30, username + 25 = 33.
    assert out == "alice".ljust(33) + " imap  1001 192.0.2.10\n"


def test_table_header_line_skipped_only_if_every_title_is_hidden() -> None:
    some = [Header("a", "aa", hide_title=True), Header("b", "bb")]
    every = [Header("a", "aa", hide_title=True), Header("b", "bb", hide_title=True)]
    assert render(TableFormatter, some, [("x", "y")]).splitlines()[0].rstrip() == "aa bb"
    # Both 2 wide (total 5), the last column gets (80 - 5) // 2 = 37 -> 39.
    assert render(TableFormatter, every, [("x", "y")]) == "x  " + "y".ljust(39) + "\n"


def test_table_zero_rows_prints_header_sized_from_titles() -> None:
    # Titles only: 8, 1, 5, 6, 5 (total 29), the last column gets (80 - 29) // 2 = 25 -> 30.
    assert render(TableFormatter, WHO_23, []) == "username # proto (pids) " + "(ips)".ljust(30) + "\n"
    assert render(TableFormatter, WHO_23, [], hide_titles=True) == ""


def test_column_widths_last_column_absorbs_the_whole_excess() -> None:
    # name: 5 (min 3), desc: 40 (min 1); total 5 + 1 + 40 = 46 > 30. desc's slack 39 covers the excess
    # 16 (46 - 39 = 7 <= 30), so desc is cut by exactly 16 -> 24 and the pass stops.
    headers = [Header("name", "name"), Header("desc", "desc")]
    rows = [("alice", "x" * 40), ("bob", "y")]
    assert column_widths(headers, rows, 30) == [5, 24]
    out = render(TableFormatter, headers, rows, width=30)
    assert (
        out == "name  desc" + " " * 20 + "\n" + "alice " + "x" * 40 + "\n" + "bob   " + "y".ljust(24) + "\n"
    )


def test_column_widths_partial_cuts_then_an_earlier_column_finishes() -> None:
    # Titles are 2 long, so every min is 2. a=30 (slack 28), b=10 (slack 8), c=6 (slack 4): total 48 > 30,
    # excess 18. Pass from the last column: c: 48 - 4 = 44 > 30, cut 4 // 2 = 2 -> 4. b: 48 - 8 = 40 > 30,
    # cut 8 // 2 = 4 -> 6. a: 48 - 28 = 20 <= 30, cut exactly 18 -> 12, total := 30, stop. The partial cuts
    # were never subtracted, so the real total is 12 + 6 + 4 + 2 = 24 and nothing is expanded.
    headers = [Header("a", "aa"), Header("b", "bb"), Header("c", "cc")]
    rows = [("A" * 30, "B" * 10, "C" * 6)]
    assert column_widths(headers, rows, 30) == [12, 6, 4]
    out = render(TableFormatter, headers, rows, width=30)
    assert out == "aa".ljust(12) + " bb     cc  \n" + "A" * 30 + " " + "B" * 10 + " " + "C" * 6 + "\n"


def test_column_widths_single_pass_when_no_column_can_finish() -> None:
    # a=20 (slack 18), b=20 (slack 18), c=12 (slack 10): total 54, width 30. c: 44 > 30, cut 5 -> 7;
    # b: 36 > 30, cut 9 -> 11; a: 36 > 30, cut 9 -> 11. The total (54) did not change, so doveadm stops
    # after this one pass, still 31 wide.
    headers = [Header("a", "aa"), Header("b", "bb"), Header("c", "cc")]
    assert column_widths(headers, [("A" * 20, "B" * 20, "C" * 12)], 30) == [11, 11, 7]


def test_column_widths_slack_of_one_is_cut_by_one() -> None:
    # a=40 (slack 38), c=3 (slack 1): total 44, excess 14. c: 43 > 30, slack 1 -> cut 1 -> 2.
    # a: 44 - 38 = 6 <= 30 -> cut 14 -> 26.
    headers = [Header("a", "aa"), Header("c", "cc")]
    assert column_widths(headers, [("A" * 40, "CCC")], 30) == [26, 2]


def test_column_widths_expand_goes_to_first_expand_column() -> None:
    headers = [Header("a", "a"), Header("b", "b", expand=True), Header("c", "c", expand=True)]
    # total 5, (80 - 5) // 2 = 37 goes to b only.
    assert column_widths(headers, [], 80) == [1, 38, 1]


def test_table_pads_in_code_points_and_right_justifies() -> None:
    headers = [Header("user", "user"), Header("n", "#", right=True)]
    # user: "jürgen" is 6 code points (7 UTF-8 bytes); "#": 2 -> total 9, the last column + 35 -> 37.
    out = render(TableFormatter, headers, [("jürgen", "7"), ("ab", "12")])
    assert out.splitlines(keepends=True) == [
        "user   " + "#".rjust(37) + "\n",
        "jürgen " + "7".rjust(37) + "\n",
        "ab     " + "12".rjust(37) + "\n",
    ]


def _set_pty_columns(fd: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))


def _read_pty(master: int, size: int) -> bytes:
    data = b""
    deadline = time.monotonic() + 5
    while len(data) < size and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            data += os.read(master, 4096)
    return data


def test_table_width_comes_from_the_terminal() -> None:
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", encoding="utf-8", closefd=False) as tty:
            _set_pty_columns(slave, 100)
            table = TableFormatter(tty)
            assert table.width == 100
            table.write([Header("count", "count")], [("2",)])
            tty.flush()
            _set_pty_columns(slave, 20)
            assert TableFormatter(tty).width == 30  # doveadm's minimum
        # 5 wide, total 5: the only column gets (100 - 5) // 2 = 47 -> 52. The pty turns \n into \r\n.
        expected = ("count".ljust(52) + "\r\n" + "2".ljust(52) + "\r\n").encode()
        assert _read_pty(master, len(expected)) == expected
    finally:
        os.close(slave)
        os.close(master)


def test_table_width_is_80_off_tty() -> None:
    assert TableFormatter(io.StringIO()).width == 80


class _RecordingOut(io.StringIO):
    """Notes how many rows the generator had produced at each write, to prove the output streams."""

    def __init__(self, produced: list[int]) -> None:
        super().__init__()
        self.produced = produced
        self.seen_at_write: list[int] = []

    def write(self, s: str) -> int:
        self.seen_at_write.append(self.produced[0])
        return super().write(s)


def _counting(rows: Iterator[tuple[str, ...]], produced: list[int]) -> Iterator[tuple[str, ...]]:
    for row in rows:
        produced[0] += 1
        yield row


def test_table_streams_and_keeps_the_widths_of_the_first_100_rows() -> None:
    headers = [Header("name", "name"), Header("num", "num", right=True)]

    def rows() -> Iterator[tuple[str, str]]:
        for i in range(250):
            yield ("x" * (i % 7 + 1) if i < 100 else "y" * 20), str(i)

    produced = [0]
    out = _RecordingOut(produced)
    table = TableFormatter(out)
    table.write(headers, _counting(rows(), produced))
    # First 100 rows: name up to 7, num up to 3 ("num") -> total 11, the last column + 34 -> 37.
    assert table.widths == [7, 37]
    lines = out.getvalue().splitlines(keepends=True)
    assert len(lines) == 251
    assert lines[6] == "xxxxxx  " + "5".rjust(37) + "\n"
    assert lines[151] == "y" * 20 + " " + "150".rjust(37) + "\n"
    assert lines[250] == "y" * 20 + " " + "249".rjust(37) + "\n"
    assert out.seen_at_write[0] <= 101  # header written after buffering only 100 rows


def test_tab_streams_in_bounded_batches() -> None:
    produced = [0]
    out = _RecordingOut(produced)
    TabFormatter(out).write(
        [Header("n", "n")], _counting(((str(i),) for i in range(3 * BATCH_ROWS)), produced)
    )
    assert out.seen_at_write[1] <= BATCH_ROWS + 1
    assert out.getvalue() == "n\n" + "".join(f"{i}\n" for i in range(3 * BATCH_ROWS))


# --- tab, flow, pager --------------------------------------------------------------------------------------


def test_tab_who_23() -> None:
    out = render(TabFormatter, WHO_23, WHO_23_ROWS)
    assert out.startswith("username\t#\tproto\t(pids)\t(ips)\nalice\t2\timap\t(1001)\t(192.0.2.10)\n")
    assert out.splitlines()[1:] == ["\t".join(row) for row in WHO_23_ROWS]
    assert out.endswith("\tlmtp\t(1004)\t()\n")


def test_tab_hide_titles_zero_rows_and_no_escaping() -> None:
    assert render(TabFormatter, WHO_23, [], hide_titles=True) == ""
    assert render(TabFormatter, WHO_23, []) == "username\t#\tproto\t(pids)\t(ips)\n"
    headers = [Header("a", "a", hide_title=True), Header("b", "b")]
    assert render(TabFormatter, headers, [("x\ty", "1\n2")], hide_titles=True) == "x\ty\t1\n2\n"
    assert render(TabFormatter, headers, [("x", "")]) == "a\tb\nx\t\n"


def test_flow_who_23_and_24_first_row() -> None:
    out = render(FlowFormatter, WHO_23, WHO_23_ROWS, hide_titles=True)  # -h is ignored by flow
    assert out.startswith("username=alice #=2 proto=imap (pids)=(1001) (ips)=(192.0.2.10)\n")
    assert out.splitlines()[3] == "username=carol #=1 proto=lmtp (pids)=(1004) (ips)=()"
    out = render(FlowFormatter, WHO1_24, WHO1_24_ROWS[:1])
    assert out == "username=alice service=imap pid=1001 ip=192.0.2.10 dest_ip= user_account=acct-1\n"


def test_flow_hide_title_flag_and_percent_in_titles() -> None:
    headers = [Header("a", "a%s", hide_title=True), Header("b", "100%")]
    assert render(FlowFormatter, headers, [("x", "%d")]) == "x 100%=%d\n"
    assert render(FlowFormatter, headers, []) == ""


def test_pager_separates_records_across_batches() -> None:
    headers = [Header("user", "user"), Header("n", "n", hide_title=True)]
    rows = [(f"u{i}", str(i)) for i in range(BATCH_ROWS + 3)]
    out = render(PagerFormatter, headers, rows, hide_titles=True)
    assert out.startswith("user: u0\n0\n\f\nuser: u1\n1\n\f\n")
    assert out.count("\f\n") == len(rows) - 1
    assert out.split("\f\n")[BATCH_ROWS] == f"user: u{BATCH_ROWS}\n{BATCH_ROWS}\n"
    assert render(PagerFormatter, headers, []) == ""


# --- json --------------------------------------------------------------------------------------------------


def test_json_who_is_valid_and_uses_keys() -> None:
    for generation in (1, 2):
        out = render(JsonFormatter, WHO_23, WHO_23_ROWS, generation=generation)
        assert out.startswith(
            '[{"username":"alice","connections":"2","service":"imap","pids":"(1001)","ips":"(192.0.2.10)"},'
            '{"username":"bob@example.com",'
        )
        assert out.endswith('"ips":"()"}]')  # valid even for aggregated who, and no trailing newline
        assert json.loads(out) == [
            dict(zip([h.key for h in WHO_23], row, strict=True)) for row in WHO_23_ROWS
        ]


def test_json_zero_rows() -> None:
    assert render(JsonFormatter, WHO_23, []) == "[]"


@pytest.mark.parametrize(("generation", "hex_digits"), [(1, "1f"), (2, "1F")])
def test_json_escapes(generation: int, hex_digits: str) -> None:
    value = 'a\x01\x1f\b\f\n\r\t"\\/é\x7f\u2028\u2029\udc80z'
    expected = f'a\\u0001\\u00{hex_digits}\\b\\f\\n\\r\\t\\"\\\\/é\x7f\\u2028\\u2029\ufffdz'
    headers = [Header('k"\n', "title"), Header("v", "v")]
    rows = [("plain", "x")] * 3 + [(value, "y")]
    out = render(JsonFormatter, headers, rows, generation=generation)
    assert out.endswith('{"k\\"\\n":"' + expected + '","v":"y"}]')
    assert out.startswith('[{"k\\"\\n":"plain","v":"x"},')
    parsed = json.loads(out)
    assert parsed[3]['k"\n'] == value.replace("\udc80", "\ufffd")


# --- formatted ---------------------------------------------------------------------------------------------


def test_formatted_kick_formats() -> None:
    count = [Header("count", "count")]
    assert render(FormattedFormatter, count, [("2",)], format="%{count} connections kicked\n") == (
        "2 connections kicked\n"
    )
    result = [Header("result", "result")]
    assert render(FormattedFormatter, result, [("alice",), ("bob",)], format="%{result} ") == "alice bob "
    assert render(FormattedFormatter, result, [], format="%{result} ") == ""


def test_formatted_literals() -> None:
    headers = [Header("a", "A"), Header("b", "B")]
    fmt = "%{b}|%%|%x|{}|%{a}|%{a"
    assert render(FormattedFormatter, headers, [("1", "2")], format=fmt) == "2|%|%x|{}|1|%{a"


def test_formatted_errors() -> None:
    with pytest.raises(DoveadmError) as err:
        render(FormattedFormatter, [Header("a", "a")], [("1",)])
    assert (err.value.message, err.value.exit_code) == (NO_FORMAT_MESSAGE, 75)
    assert NO_FORMAT_MESSAGE.startswith("formatted formatter cannot be used without a format")
    with pytest.raises(DoveadmError) as err:
        render(FormattedFormatter, [Header("a", "a")], [("1",)], format="%{nope}")
    assert err.value.exit_code == 70
    assert "%{nope}" in err.value.message


# --- load_formatter ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["table", "tab", "flow", "pager", "json", "formatted"])
def test_load_formatter_known_names(name: str) -> None:
    cls = load_formatter(name)
    assert issubclass(cls, Formatter)
    assert cls.name == name


def test_load_formatter_unknown_name() -> None:
    with pytest.raises(DoveadmError) as err:
        load_formatter("nope")
    assert (err.value.message, err.value.exit_code) == ("Unknown print formatter: nope", 75)


@pytest.mark.parametrize("target", ["doveadm_py_no_such_module:Formatter", "os:sep"])
def test_load_formatter_broken_plugin(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    broken = EntryPoint(name="broken", value=target, group=FORMATTER_NAMESPACE)
    monkeypatch.setitem(ExtensionManager.ENTRY_POINT_CACHE, FORMATTER_NAMESPACE, [broken])
    with pytest.raises(DoveadmError) as err:
        load_formatter("broken")
    assert err.value.exit_code == 70
    assert "broken" in err.value.message


def test_load_formatter_imports_only_the_chosen_formatter() -> None:
    code = (
        "import sys; from doveadm_py.output import load_formatter; load_formatter('tab'); "
        "print(sorted(m for m in sys.modules if m.startswith('doveadm_py.output.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "['doveadm_py.output.tab']"
