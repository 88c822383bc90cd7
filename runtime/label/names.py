"""The rule for class names a person types: they become folder names, so nothing that leaves the folder."""
from __future__ import annotations

import unicodedata
from typing import Iterable, Optional

from edgecls.core.errors import InputError

MAX_LEN = 64
FORBIDDEN = set('/\\:*?"<>|')  # path separators, and what Windows refuses in a file name
RESERVED = ("uncertain", "unknown")  # the runtime reports these; a class may not be named so
RULE = (f"a class name is 1 to {MAX_LEN} characters, not '.' or '..', does not start with '.', contains no "
        f"'..', no path separator and none of {''.join(sorted(FORBIDDEN))} or control characters, and is not "
        f"{' or '.join(RESERVED)}")


def check_class_name(name: object) -> str:
    """``name`` normalised (NFC, outer spaces stripped), or InputError saying the rule."""
    if not isinstance(name, str):
        raise InputError(f"class name must be text, got {type(name).__name__}; {RULE}")
    n = unicodedata.normalize("NFC", name).strip()
    why: Optional[str] = None
    if not n:
        why = "it is empty"
    elif len(n) > MAX_LEN:
        why = f"it is {len(n)} characters long"
    elif n in (".", "..") or n.startswith(".") or ".." in n:
        why = "it names or contains '..' or starts with '.'"
    elif any(c in FORBIDDEN for c in n):
        why = "it contains a path separator or a character file names may not hold"
    elif any(unicodedata.category(c).startswith("C") for c in n):
        why = "it contains a control character"
    elif n.lower() in RESERVED:
        why = f"{n!r} is what the runtime reports for frames it cannot place"
    if why:
        raise InputError(f"class name {name!r} refused: {why}; {RULE}")
    return n


def same_name(a: str, b: str) -> bool:
    """Two names that would be one folder on a case-insensitive disk (macOS, Windows)."""
    return a.casefold() == b.casefold()


def find_duplicate(names: Iterable[str]) -> Optional[tuple]:
    """The first pair of names that are the same class (exactly, or but for case), else None."""
    seen = {}
    for i, n in enumerate(names):
        key = n.casefold()
        if key in seen:
            return seen[key], (i, n)
        seen[key] = (i, n)
    return None
