"""Text as term lists compare it: case-folded, compatibility-normalised, accents, zero-width and format characters
dropped, so `ＦＡＬＣＯＮ`, `Fal\u200bcon` and `Fálcon` all read `falcon`.

`folded(text)` returns the folded text and, for each of its characters, the index of the character it came from,
so a match found in the folded text masks the right span of the original. ASCII text (most of it) folds by
`lower()` alone, index for index.
"""

from __future__ import annotations

import unicodedata

_DROPPED = frozenset({"Mn", "Me", "Cf"})  # combining marks (accents), format characters (zero-width joiners ...)


def folded(text: str) -> tuple[str, list[int] | None]:
    """The folded text and where each of its characters came from (None: index for index)."""
    if text.isascii():
        return text.lower(), None
    out: list[str] = []
    where: list[int] = []
    for index, char in enumerate(text):
        if char.isascii():
            out.append(char.lower())
            where.append(index)
            continue
        for part in unicodedata.normalize("NFKD", char):
            if unicodedata.category(part) in _DROPPED:
                continue
            for piece in part.casefold():
                out.append(piece)
                where.append(index)
    return "".join(out), where


def fold(text: str) -> str:
    return folded(text)[0]


def original_span(where: list[int] | None, start: int, end: int, length: int) -> tuple[int, int]:
    """The span of the original text that folded[start:end] came from."""
    if where is None:
        return start, end
    first = where[start] if start < len(where) else length
    last = where[end - 1] + 1 if end > 0 and end - 1 < len(where) else length
    return first, last
