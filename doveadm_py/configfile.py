"""Read a top-level setting from a dovecot.conf without doveconf, includes followed.

Used when doveconf is missing or cannot parse the file (another Dovecot version's
syntax). It understands what locating a setting needs: ``key = value`` lines, ``#``
comments, quoted values, ``section {`` ... ``}`` (settings inside are not top-level), and
``!include`` / ``!include_try`` with paths relative to the including file and glob
patterns (matches in sorted order, as Dovecot reads them). The last assignment wins.
"""

from __future__ import annotations

import glob
import os

from .errors import TempFailError

MAX_INCLUDE_DEPTH = 20


def read_top_level(path: str, key: str) -> str | None:
    """The value of top-level ``key`` in ``path`` and the files it includes, or None."""
    found: list[str] = []
    _read(path, key, found, 0)
    return found[-1] if found else None


def _read(path: str, key: str, found: list[str], depth: int) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        raise TempFailError(f"config file {path}: !include nested more than {MAX_INCLUDE_DEPTH} deep")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as conf:
            lines = conf.readlines()
    except FileNotFoundError:
        raise TempFailError(f"config file {path} not found") from None
    except OSError as err:
        raise TempFailError(f"cannot read config file {path}: {err.strerror}") from None
    level = 0
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if level == 0 and line.startswith("!include"):
            word, _, target = line.partition(" ")
            if word in ("!include", "!include_try") and target.strip():
                _include(path, target.strip().strip('"'), word == "!include_try", key, found, depth)
            continue
        if level == 0 and line.startswith(key):
            name, sep, value = line.partition("=")
            if sep and name.strip() == key:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                found.append(value)
        level += line.count("{") - line.count("}")


def _include(path: str, target: str, optional: bool, key: str, found: list[str], depth: int) -> None:
    pattern = os.path.join(os.path.dirname(path), os.path.expanduser(target))
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    for match in matches:
        if optional and not os.path.exists(match):
            continue
        _read(match, key, found, depth + 1)
    if not matches and not optional:
        raise TempFailError(f"config file {path}: !include {target}: no matches")
