"""What a C-FIND query value means (PS3.4 C.2.2.2), before any SQL is written.

A key's value is split into its values (``\\`` or a Python list; empty or ``*`` alone means
universal matching, C.2.2.2.3), read as a range (C.2.2.2.5) or as a date or a possibly partial
time (PS3.5 6.2), and its wildcards (C.2.2.2.4) are translated into the two pattern languages
the compiled SQL uses: LIKE patterns and regular expressions. Everything here returns Python
values that travel as SQL parameters; :mod:`.conditions` writes the SQL text around them.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any

from duckpacs.errors import QueryError

# The last instant of a day: the upper bound of a date range given without a time.
TIME_END = time(23, 59, 59, 999999)


def values_of(value: Any) -> list[str] | None:
    """The query values of one key, or None for universal matching."""
    if value is None:
        return None
    if isinstance(value, str | int | float):
        items = str(value).split("\\")
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        raise QueryError(f"unsupported query value {value!r}")
    items = [i.strip() for i in items]
    items = [i for i in items if i]
    if not items or "*" in items:
        return None
    return items


def like_pattern(pattern: str) -> str:
    """DICOM wildcards as an SQL LIKE pattern, escaped with a backslash."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def regex_pattern(pattern: str) -> str:
    """DICOM wildcards as a regular expression, everything else literal."""
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def has_wildcard(text: str) -> bool:
    """Whether ``text`` asks for wildcard matching (C.2.2.2.4)."""
    return "*" in text or "?" in text


def parse_date(text: str) -> date:
    """A DA value (``YYYYMMDD``, or the old ``YYYY.MM.DD``) as a date."""
    digits = text.strip().replace(".", "")
    try:
        return datetime.strptime(digits, "%Y%m%d").date()
    except ValueError:
        raise QueryError(f"not a DICOM date (YYYYMMDD): {text!r}") from None


def parse_time(text: str) -> tuple[time, time]:
    """First and last instant covered by a possibly partial TM value (PS3.5 6.2)."""
    raw = text.strip().replace(":", "")
    whole, _, frac = raw.partition(".")
    if len(whole) not in (2, 4, 6) or not whole.isdigit() or (frac and not frac.isdigit()):
        raise QueryError(f"not a DICOM time (HHMMSS.FFFFFF): {text!r}")
    parts = [int(whole[i : i + 2]) for i in range(0, len(whole), 2)]
    try:
        if len(parts) == 3 and frac:
            micro = int(frac[:6].ljust(6, "0"))
            span = 10 ** (6 - len(frac[:6])) - 1
            return time(parts[0], parts[1], parts[2], micro), time(
                parts[0], parts[1], parts[2], micro + span
            )
        full = parts + [0, 0][len(parts) - 1 :]
        last = parts + [59, 59][len(parts) - 1 :]
        start = time(full[0], full[1], full[2])
        end = time(last[0], last[1], last[2], 999999)
    except ValueError:
        raise QueryError(f"not a DICOM time (HHMMSS.FFFFFF): {text!r}") from None
    return start, end


def split_range(text: str, vr: str) -> tuple[str, str] | None:
    """``(low, high)`` when ``text`` is a range; DT ranges must not be confused with offsets."""
    if "-" not in text:
        return None
    if vr == "DT" and text.count("-") != 1:
        raise QueryError(f"ambiguous datetime range {text!r}: give offsets with '+' or none")
    low, _, high = text.partition("-")
    return low.strip(), high.strip()
