"""The file that remembers anvil sockets' generations: only a trustworthy file is believed.

Whatever is wrong with it (corrupt, foreign, group-writable, a symlink, huge, unwritable), the worst
outcome must be a first-contact wait: never an error, never a wrong generation.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from doveadm_py.anvil.generations import MAGIC, MAX_ENTRIES, Generations, default_file, socket_identity

NOBODY = 65534


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "anvil")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        yield path


def learned(tmp_path: Path, sock: str, generation: int = 2) -> Path:
    file = tmp_path / "cache" / "dvadm" / "anvil-generations"
    Generations(str(file)).remember(socket_identity(sock), generation)
    assert Generations(str(file)).lookup(socket_identity(sock)) == generation
    return file


def test_round_trip_and_file_format(tmp_path: Path, sock: str) -> None:
    file = learned(tmp_path, sock, 1)
    dev, ino, ctime = socket_identity(sock) or (0, 0, 0)
    assert file.read_text() == f"{MAGIC}\n{dev} {ino} {ctime} 1\n"
    assert file.stat().st_mode & 0o777 == 0o600 and file.parent.stat().st_mode & 0o777 == 0o700
    Generations(str(file)).remember(socket_identity(sock), 2)  # the socket changed its mind: last wins
    assert Generations(str(file)).lookup(socket_identity(sock)) == 2


def test_identity_is_the_socket_file_not_its_path(tmp_path: Path, sock: str) -> None:
    first = socket_identity(sock)
    os.unlink(sock)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(sock)
        assert socket_identity(sock) not in (None, first)
    assert socket_identity(str(tmp_path)) is None  # not a socket
    assert socket_identity(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    "damage",
    ["garbage", "no-magic", "huge", "group-writable", "foreign", "symlink", "directory", "dir-writable"],
)
def test_untrustworthy_file_is_ignored(tmp_path: Path, sock: str, damage: str) -> None:
    file = learned(tmp_path, sock)
    text = file.read_text()
    if damage == "garbage":
        file.write_bytes(MAGIC.encode() + b"\n\xff\x00 1 2\n1 2 3 x\n" + os.urandom(300))
        assert Generations(str(file)).lookup(socket_identity(sock)) is None
        return
    if damage == "no-magic":
        file.write_text(text.split("\n", 1)[1])
    elif damage == "huge":
        file.write_text(text + "1 2 3 1\n" * 4000)
    elif damage == "group-writable":
        file.chmod(0o620)
    elif damage == "foreign":
        os.chown(file, NOBODY, NOBODY)
    elif damage == "symlink":
        target = tmp_path / "elsewhere"
        file.rename(target)
        file.symlink_to(target)
    elif damage == "directory":
        file.unlink()
        file.mkdir()
    elif damage == "dir-writable":
        file.parent.chmod(0o777)
    assert Generations(str(file)).lookup(socket_identity(sock)) is None


def test_entries_are_capped_most_recent_kept(tmp_path: Path, sock: str) -> None:
    file = str(tmp_path / "generations")
    cache = Generations(file)
    for i in range(MAX_ENTRIES + 10):
        cache.remember((1, i, 1), 1)
    cache.remember(socket_identity(sock), 2)
    entries = Path(file).read_text().splitlines()[1:]
    assert len(entries) == MAX_ENTRIES and entries[-1].endswith(" 2")
    fresh = Generations(file)
    assert fresh.lookup((1, 0, 1)) is None and fresh.lookup((1, MAX_ENTRIES + 9, 1)) == 1


def test_unwritable_place_is_silent(tmp_path: Path, sock: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = Generations(str(blocker / "dvadm" / "anvil-generations"))  # a file where a directory must be
    cache.remember(socket_identity(sock), 1)
    assert cache.lookup(socket_identity(sock)) == 1  # kept for this run only
    assert Generations(cache.file).lookup(socket_identity(sock)) is None
    assert Generations(None).lookup(socket_identity(sock)) is None


def test_default_file_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_file() == str(tmp_path / "dvadm" / "anvil-generations")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_file() == str(tmp_path / "home" / ".cache" / "dvadm" / "anvil-generations")


def test_nothing_is_created_in_someone_elses_directory(tmp_path: Path, sock: str) -> None:
    """Root under sudo with a user's HOME must not leave root-owned directories in that home."""
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    cache = Generations(str(home / ".cache" / "dvadm" / "anvil-generations"))
    cache.remember(socket_identity(sock), 1)
    assert list(home.iterdir()) == []
