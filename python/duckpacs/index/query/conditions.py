"""One key's value as an SQL condition, per VR (PS3.4 C.2.2.2.1-5).

:func:`value_cond` writes the condition for the values of one key against one column
expression: a typed column of a level table, or ``a.value`` of the long ``attributes`` table.
The rules are listed in :mod:`duckpacs.index.query`; the values themselves are read by
:mod:`.values` and always travel as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, time
from typing import Any

from duckpacs.errors import QueryError
from duckpacs.index.query.model import Attr
from duckpacs.index.query.values import (
    has_wildcard,
    like_pattern,
    parse_date,
    parse_time,
    regex_pattern,
    split_range,
    values_of,
)
from duckpacs.index.schema import DATETIME_VRS, NUMERIC_VRS


@dataclass
class Cond:
    """An SQL condition with its parameters."""

    sql: str
    params: list[Any] = field(default_factory=list)


def any_of(conds: list[Cond]) -> Cond:
    """The disjunction of ``conds`` (one condition stays as it is)."""
    if len(conds) == 1:
        return conds[0]
    return Cond("(" + " OR ".join(c.sql for c in conds) + ")", [p for c in conds for p in c.params])


def all_of(conds: list[Cond]) -> Cond:
    """The conjunction of ``conds``; TRUE when there are none."""
    return Cond(" AND ".join(c.sql for c in conds) or "TRUE", [p for c in conds for p in c.params])


def _typed_range(expr: str, vr: str, text: str) -> Cond:
    """Range or single matching on a typed DATE/TIME column."""
    span = split_range(text, vr)

    def parse_low(t: str) -> date | time:
        return parse_date(t) if vr == "DA" else parse_time(t)[0]

    def parse_high(t: str) -> date | time:
        return parse_date(t) if vr == "DA" else parse_time(t)[1]

    if span is None:
        if vr == "DA":
            return Cond(f"{expr} = ?", [parse_date(text)])
        first, last = parse_time(text)
        return Cond(f"{expr} BETWEEN ? AND ?", [first, last])
    low, high = span
    parts: list[str] = []
    params: list[Any] = []
    if low:
        parts.append(f"{expr} >= ?")
        params.append(parse_low(low))
    if high:
        parts.append(f"{expr} <= ?")
        params.append(parse_high(high))
    if not parts:
        raise QueryError(f"empty range {text!r}")
    return Cond(" AND ".join(parts), params)


def _text_range(expr: str, vr: str, text: str) -> Cond:
    """Range or single matching on DA/TM/DT text (values compare as padded digit strings)."""
    clean = (lambda t: t.replace(".", "")) if vr == "DA" else (lambda t: t.replace(":", ""))
    span = split_range(text, vr)
    if span is None:
        if vr == "DA":
            return Cond(f"{expr} = ?", [clean(text)])
        value = clean(text)
        return Cond(f"{expr} BETWEEN ? AND ?", [value, value + "~"])
    low, high = span
    parts, params = [], []
    if low:
        parts.append(f"{expr} >= ?")
        params.append(clean(low))
    if high:
        parts.append(f"{expr} <= ?")
        params.append(clean(high) + "~")
    if not parts:
        raise QueryError(f"empty range {text!r}")
    return Cond(" AND ".join(parts), params)


def _pn(expr: str, pattern: str, fuzzy: bool) -> Cond:
    """Person name matching over the whole value and each component group (PS3.5 6.2.1)."""
    if fuzzy and not pattern.endswith("*"):
        pattern += "*"
    group_regex = "^(?:[^=]*=)*" + regex_pattern(pattern) + "(?:=.*)?$"
    if fuzzy:
        return Cond(
            f"(lower({expr}) LIKE lower(?) ESCAPE '\\' OR regexp_matches({expr}, ?))",
            [like_pattern(pattern), "(?is)" + group_regex],
        )
    if not has_wildcard(pattern):
        return Cond(
            f"({expr} = ? OR (contains({expr}, '=') AND "
            f"list_contains(string_split({expr}, '='), ?)))",
            [pattern, pattern],
        )
    return Cond(
        f"({expr} LIKE ? ESCAPE '\\' OR (contains({expr}, '=') AND regexp_matches({expr}, ?)))",
        [like_pattern(pattern), "(?s)" + group_regex],
    )


def _string(expr: str, part: str) -> Cond:
    if has_wildcard(part):
        return Cond(f"{expr} LIKE ? ESCAPE '\\'", [like_pattern(part)])
    return Cond(f"{expr} = ?", [part])


def _number(expr: str, num_expr: str | None, part: str, typed_int: bool) -> Cond:
    try:
        number = float(part)
    except ValueError:
        return _string(expr, part)
    if typed_int:
        return Cond(f"{expr} = ?", [number])
    if num_expr is None:
        return Cond(f"TRY_CAST({expr} AS DOUBLE) = ?", [number])
    return Cond(f"{num_expr} = ?", [number])


def value_cond(
    attr: Attr, value: Any, expr: str, *, typed: str, fuzzy: bool, num_expr: str | None = None
) -> Cond | None:
    """Condition matching ``value`` against ``expr`` or None when universal.

    ``typed`` is the SQL type of ``expr``: DATE, TIME, INTEGER, VARCHAR, or LIST for the
    computed list columns (ModalitiesInStudy, SOPClassesInStudy).
    """
    parts = values_of(value)
    if parts is None:
        return None
    vr = attr.vr
    if typed == "LIST":
        conds = [
            Cond(
                f"list_bool_or(list_transform({expr}, lambda x: x LIKE ? ESCAPE '\\'))",
                [like_pattern(p)],
            )
            for p in parts
        ]
        return any_of(conds)
    if vr == "UI":
        if len(parts) == 1:
            return Cond(f"{expr} = ?", parts)
        return Cond(f"{expr} IN ({', '.join('?' for _ in parts)})", parts)
    if vr in DATETIME_VRS:
        if typed in ("DATE", "TIME"):
            return any_of([_typed_range(expr, vr, p) for p in parts])
        return any_of([_text_range(expr, vr, p) for p in parts])
    if vr == "PN":
        return any_of([_pn(expr, p, fuzzy) for p in parts])
    if vr in NUMERIC_VRS:
        return any_of([_number(expr, num_expr, p, typed == "INTEGER") for p in parts])
    return any_of([_string(expr, p) for p in parts])
