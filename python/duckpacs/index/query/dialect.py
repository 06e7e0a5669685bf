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
- ``?`` placeholders -> ``%s`` (psycopg), a literal ``%`` doubled
"""

from __future__ import annotations

import re
from functools import lru_cache

_SIMPLE = r"([\w.]+|lower\([\w.]+\))"
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
    (re.compile(r"::(UBIGINT|UINTEGER|BIGINT)\[\]"), "::bigint[]"),
)


@lru_cache(maxsize=4096)
def to_postgres(sql: str) -> str:
    """``sql`` (as the compiler writes it for DuckDB) in PostgreSQL's dialect, with psycopg
    placeholders."""
    for pattern, replacement in _RULES:
        sql = pattern.sub(replacement, sql)
    sql = _alias_subqueries(sql)
    return _placeholders(sql)


def _placeholders(sql: str) -> str:
    """``?`` outside string literals -> ``%s``; every literal ``%`` doubled."""
    out: list[str] = []
    quoted = False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
            out.append(ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


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
