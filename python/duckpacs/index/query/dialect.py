"""The compiler's DuckDB SQL in PostgreSQL's dialect (the PostgreSQL index, issue 26).

The compiler writes DuckDB SQL, and the embedded index runs it unchanged. For PostgreSQL the
same text is rewritten here, construct by construct, so both backends share one compiler
and one set of PS3.4 C.2.2.2 rules. Every construct below is one the compiler itself writes
(:mod:`.conditions`, :mod:`.sql`, :mod:`.results`); the parity test
(``tests/test_index_parity.py``) runs the same queries on both backends and compares.

- ``list_bool_or(list_transform(L, lambda x: x LIKE ? ...))`` -> ``EXISTS`` over ``unnest(L)``
- ``regexp_matches(e, ?)`` -> ``e ~ ?`` (both search; ``(?is)`` options work in both)
- ``regexp_full_match(e, ?)`` -> ``e ~ ('^(?:' || ? || ')$')``
- ``contains(e, 'c')`` -> ``strpos(e, 'c') > 0``
- ``list_contains(string_split(e, '='), ?)`` -> ``? = ANY(string_to_array(e, '='))``
- ``TRY_CAST(e AS DOUBLE)`` -> ``dp_try_double(e)`` (a function of the PostgreSQL schema)
- unsigned array casts -> ``bigint[]`` (PostgreSQL has no unsigned integers)
- a subquery in FROM gets an alias (PostgreSQL 15 requires one)
- ``a.value = ?`` -> also ``left(a.value, 200) = left(?, 200)`` (the indexed prefix)
- ``?`` placeholders -> ``%s`` (psycopg), a literal ``%`` doubled
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

_SIMPLE = r"([\w.]+|lower\([\w.]+\))"
VALUE_PREFIX = 200  # characters of attributes.value in the index (duckpacs.index.pg.schema)
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"list_bool_or\(list_transform\((.+?), lambda x: x LIKE \? ESCAPE '\\'\)\)"),
        r"EXISTS (SELECT 1 FROM unnest(\1) AS x WHERE x LIKE ? ESCAPE '\\')",
    ),
    (re.compile(rf"regexp_matches\({_SIMPLE}, \?\)"), r"(\1 ~ ?)"),
    (re.compile(rf"regexp_full_match\({_SIMPLE}, \?\)"), r"(\1 ~ ('^(?:' || ? || ')$'))"),
    (re.compile(rf"(?<![\w.])contains\({_SIMPLE}, ('[^']*')\)"), r"(strpos(\1, \2) > 0)"),
    (
        re.compile(rf"list_contains\(string_split\({_SIMPLE}, ('[^']*')\), \?\)"),
        r"(? = ANY(string_to_array(\1, \2)))",
    ),
    (re.compile(r"TRY_CAST\((.+?) AS DOUBLE\)"), r"dp_try_double(\1)"),
    # Equality on an attribute value also through the index on its first characters
    # (a btree entry cannot hold a whole LT/UT value); ``?^`` repeats the parameter.
    (
        re.compile(r"(?<![\w.])a\.value = \?"),
        rf"(left(a.value, {VALUE_PREFIX}) = left(?, {VALUE_PREFIX}) AND a.value = ?^)",
    ),
    (re.compile(r"::(UBIGINT|UINTEGER|BIGINT)\[\]"), "::bigint[]"),
)


def to_postgres(sql: str, params: Sequence[Any] = ()) -> tuple[str, list[Any]]:
    """``sql`` (as the compiler writes it for DuckDB) and its parameters, for PostgreSQL
    through psycopg."""
    text, order = _translate(sql)
    return text, [params[i] for i in order]


@lru_cache(maxsize=4096)
def _translate(sql: str) -> tuple[str, tuple[int, ...]]:
    for pattern, replacement in _RULES:
        sql = pattern.sub(replacement, sql)
    sql = _alias_subqueries(sql)
    return _placeholders(sql)


def _placeholders(sql: str) -> tuple[str, tuple[int, ...]]:
    """``?`` outside string literals -> ``%s`` (``?^``: the previous parameter again); every
    literal ``%`` doubled. Returns the text and which parameter each ``%s`` takes."""
    out: list[str] = []
    order: list[int] = []
    fresh = 0  # parameters taken so far
    quoted = False
    i = 0
    while i < len(sql):
        ch = sql[i]
        if ch == "'":
            quoted = not quoted
            out.append(ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
            if sql.startswith("?^", i):
                order.append(fresh - 1)
                i += 1
            else:
                order.append(fresh)
                fresh += 1
        else:
            out.append(ch)
        i += 1
    return "".join(out), tuple(order)


_FROM_SUBQUERY = re.compile(r"\bFROM \(\s*(?=SELECT|\()", re.IGNORECASE)


def _alias_subqueries(sql: str) -> str:
    """Give every ``FROM (subquery)`` without an alias one (``_q1``, ``_q2``, ...)."""
    count = 0
    pos = 0
    while True:
        found = _FROM_SUBQUERY.search(sql, pos)
        if found is None:
            return sql
        start = found.end() - 1
        while sql[start] != "(":
            start -= 1
        end = _closing(sql, start)
        rest = sql[end + 1 :]
        if _has_alias(rest):
            pos = end + 1
            continue
        count += 1
        sql = f"{sql[: end + 1]} AS _q{count}{rest}"
        pos = start + 1


_KEYWORDS = frozenset(
    {"WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "UNION", "INTERSECT", "EXCEPT", "HAVING", "ON"}
)


def _has_alias(rest: str) -> bool:
    word = re.match(r"\s*(\w+)", rest)
    if word is None:
        return False
    return word.group(1).upper() not in _KEYWORDS


def _closing(sql: str, start: int) -> int:
    """Index of the parenthesis closing the one at ``start`` (string literals skipped)."""
    depth = 0
    quoted = False
    for i in range(start, len(sql)):
        ch = sql[i]
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in {sql!r}")
