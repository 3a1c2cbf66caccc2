"""A reference wildcard matcher the tests compare dvadm's with (shared: test_masks, test_properties, ...)."""

from __future__ import annotations

import functools


def reference_match(name: bytes, mask: bytes) -> bool:
    """Plain recursive glob over bytes, ASCII case-insensitive."""
    name, mask = name.lower(), mask.lower()

    @functools.cache
    def match(i: int, j: int) -> bool:
        if j == len(mask):
            return i == len(name)
        if mask[j] == ord("*"):
            return match(i, j + 1) or (i < len(name) and match(i + 1, j))
        if i == len(name):
            return False
        return (mask[j] == ord("?") or mask[j] == name[i]) and match(i + 1, j + 1)

    return match(0, 0)


def as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
