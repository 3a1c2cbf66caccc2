"""doveadm's username wildcards (``wildcard_match_icase`` in ``src/lib/wildcard-match.c``).

``*`` matches zero or more bytes and ``?`` exactly one byte (C works on bytes, so ``?`` never matches a
two-byte UTF-8 character); everything else is literal, with no escapes and no ``[]`` classes. Case is
folded for ASCII only (``i_toupper`` in the C locale), and the whole name must match. Names and masks are
compared as their UTF-8 encoding with ``surrogateescape``, which restores the bytes a non-UTF-8 name was
decoded from.

Masks compile to one bytes regex: bytes patterns fold case for ASCII only, as C does. Every ``*`` but
the last becomes an atomic lazy group, so a mask like ``*a*a*a*b`` cannot backtrack exponentially; taking
the earliest match of each middle segment is what the single-backtrack C algorithm does too. The group is
written ``(?=(?P<g>.*?seg))(?P=g)`` (a lookahead is atomic; the backreference consumes what it matched),
which Python 3.10 understands too and is as fast as 3.11's ``(?>...)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_CACHE_LIMIT = 1 << 16  # names remembered per predicate; cleared (not evicted) when full
_STARS = re.compile(rb"\*+")
_FLAGS = re.DOTALL | re.IGNORECASE
_single_masks: dict[bytes, Callable[[bytes], object]] = {}


def _to_bytes(text: str) -> bytes:
    """The bytes C would see; lone surrogates that surrogateescape cannot map are kept as-is."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _has_wildcards(mask: bytes) -> bool:
    return b"*" in mask or b"?" in mask


def _segment(segment: bytes) -> bytes:
    return b".".join(re.escape(literal) for literal in segment.split(b"?"))


def _mask_pattern(mask: bytes, tag: int = 0) -> bytes:
    """Regex source for one mask, to be used with fullmatch, re.DOTALL and re.IGNORECASE.

    ``tag`` keeps the group names unique when several masks are joined into one regex.
    """
    parts = _STARS.split(mask)
    if len(parts) == 1:
        return _segment(mask)
    middle = b"".join(
        b"(?=(?P<a%d_%d>.*?%s))(?P=a%d_%d)" % (tag, i, _segment(part), tag, i)
        for i, part in enumerate(parts[1:-1])
    )
    return _segment(parts[0]) + middle + b".*" + _segment(parts[-1])


def wildcard_match_icase(name: str, mask: str) -> bool:
    """Whether ``name`` matches ``mask`` as doveadm's wildcard_match_icase decides."""
    name_bytes, mask_bytes = _to_bytes(name), _to_bytes(mask)
    if not _has_wildcards(mask_bytes):
        return name_bytes.lower() == mask_bytes.lower()
    fullmatch = _single_masks.get(mask_bytes)
    if fullmatch is None:
        if len(_single_masks) >= 256:
            _single_masks.clear()
        fullmatch = _single_masks[mask_bytes] = re.compile(_mask_pattern(mask_bytes), _FLAGS).fullmatch
    return fullmatch(name_bytes) is not None


def compile_user_masks(masks: Sequence[str]) -> Callable[[str], bool]:
    """A predicate true when a name matches ANY of the masks (so always false for no masks).

    Plain masks are a set lookup of the ASCII-lowered bytes, wildcard masks one alternation regex; results
    are cached by name because the same users repeat throughout a dump.
    """
    plain: set[bytes] = set()
    patterns: list[bytes] = []
    for mask in masks:
        mask_bytes = _to_bytes(mask)
        if _has_wildcards(mask_bytes):
            patterns.append(b"(?:" + _mask_pattern(mask_bytes, len(patterns)) + b")")
        else:
            plain.add(mask_bytes.lower())
    fullmatch = re.compile(b"|".join(patterns), _FLAGS).fullmatch if patterns else None
    plain_set = frozenset(plain)
    cache: dict[str, bool] = {}

    def compute(name: str) -> bool:
        name_bytes = _to_bytes(name)
        if name_bytes.lower() in plain_set:
            return True
        return fullmatch is not None and fullmatch(name_bytes) is not None

    def predicate(name: str, _cached: Callable[[str], bool | None] = cache.get) -> bool:
        result = _cached(name)
        if result is None:
            result = compute(name)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[name] = result
        return result

    return predicate
