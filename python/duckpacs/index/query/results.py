"""Rows of a compiled C-FIND turned into result dicts of DICOM text.

The main query returns the typed columns; what it could not select (attributes kept only in
the long ``attributes`` table, and sequences) is read afterwards for each match's
representative instance, in one query per kind rather than one per match.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

import duckdb

from duckpacs.index.query.model import Attr, keyword_of
from duckpacs.index.query.sql import FindPlan


def dicom_text(value: Any) -> str | None:
    """A column value as DICOM text (DA ``YYYYMMDD``, TM ``HHMMSS[.FFFFFF]``, lists ``a\\b``)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d%H%M%S")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    if isinstance(value, time):
        text = value.strftime("%H%M%S")
        return f"{text}.{value.microsecond:06d}" if value.microsecond else text
    if isinstance(value, list | tuple):
        return "\\".join(str(v) for v in value if v is not None)
    return str(value)


def finish(
    con: duckdb.DuckDBPyConnection, plan: FindPlan, rows: list[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """Turn result rows into dicts, adding values read from ``attributes``."""
    reps = [int(r[0]) for r in rows if r[0] is not None]
    post = _post_values(con, reps, plan.post)
    seqs = _sequence_values(con, reps, plan.sequences)
    out = []
    for row in rows:
        rep = row[0]
        found: dict[str, Any] = {
            name: dicom_text(v) for name, v in zip(plan.selects, row[1:], strict=True)
        }
        for attr in plan.post:
            found[attr.name] = post.get((rep, attr.tag))
        for attr, _sub in plan.sequences:
            found[attr.name] = seqs.get((rep, attr.tag))
        out.append({name: found.get(name) for name in plan.order})
    return out


def _post_values(
    con: duckdb.DuckDBPyConnection, reps: list[int], attrs: list[Attr]
) -> dict[tuple[int, int], str]:
    if not reps or not attrs:
        return {}
    keys = [a for a in attrs if a.key is not None]
    out: dict[tuple[int, int], str] = {}
    if keys:  # top-level key attributes live in the typed columns of `instances` only
        columns = ", ".join(a.key.column for a in keys if a.key is not None)
        for iid, *values in con.execute(
            f"SELECT iid, {columns} FROM instances WHERE iid IN (SELECT unnest(?::BIGINT[]))",
            [reps],
        ).fetchall():
            for attr, value in zip(keys, values, strict=True):
                if value is not None:
                    out[(int(iid), attr.tag)] = dicom_text(value) or ""
    others = [a for a in attrs if a.key is None]
    if not others:
        return out
    rows = con.execute(
        """SELECT a.iid, a.tag, string_agg(coalesce(a.value, ''), '\\' ORDER BY a.vm_index)
           FROM attributes a
           WHERE a.iid IN (SELECT unnest(?::BIGINT[])) AND a.parent = ''
             AND a.tag IN (SELECT unnest(?::UINTEGER[]))
           GROUP BY a.iid, a.tag""",
        [reps, [a.tag for a in others]],
    ).fetchall()
    out.update({(int(i), int(t)): v for i, t, v in rows})
    return out


def _sequence_values(
    con: duckdb.DuckDBPyConnection, reps: list[int], seqs: list[tuple[Attr, list[Attr] | None]]
) -> dict[tuple[int, int], list[dict[str, str | None]]]:
    out: dict[tuple[int, int], list[dict[str, str | None]]] = {}
    for attr, sub in seqs:
        if not reps:
            break
        prefix = f"{attr.tag:08X}#"
        present = con.execute(
            "SELECT DISTINCT iid FROM attributes WHERE iid IN (SELECT unnest(?::BIGINT[])) "
            "AND parent = '' AND tag = ?",
            [reps, attr.tag],
        ).fetchall()
        for (iid,) in present:
            out[(int(iid), attr.tag)] = []
        rows = con.execute(
            """SELECT a.iid, a.parent, a.tag,
                      string_agg(coalesce(a.value, ''), '\\' ORDER BY a.vm_index)
               FROM attributes a
               WHERE a.iid IN (SELECT unnest(?::BIGINT[])) AND starts_with(a.parent, ?)
                 AND NOT contains(a.parent, '/')
               GROUP BY a.iid, a.parent, a.tag""",
            [reps, prefix],
        ).fetchall()
        items: dict[tuple[int, int], dict[int, dict[int, str | None]]] = {}
        for iid, parent, tag, value in rows:
            index = int(parent[len(prefix) :])
            items.setdefault((int(iid), attr.tag), {}).setdefault(index, {})[int(tag)] = value
        for key, by_index in items.items():
            result = []
            for _i, values in sorted(by_index.items()):
                if sub is None:
                    result.append({keyword_of(t): v for t, v in sorted(values.items())})
                else:
                    result.append({s.name: values.get(s.tag) for s in sub})
            out[key] = result
    return out
