"""A C-FIND, or the instances under its matches, compiled to one parameterised DuckDB query.

Key attributes are matched on the typed columns of the level tables; every other attribute
(private ones too) on the long ``attributes`` table, where one row holds one value; sequences
item by item (C.2.2.2.6, nested ones too); date and time keys, when asked, as one datetime
range (C.2.2.2.5). :func:`compile_find` also plans what :mod:`.results` reads afterwards for
each match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from duckpacs.errors import QueryError
from duckpacs.index.query.conditions import Cond, all_of, any_of, value_cond
from duckpacs.index.query.model import (
    ALIASES,
    COMPUTED,
    DATE_TIME_PAIRS,
    FROM,
    INNER_UNIT,
    NOT_MATCHED,
    ORDER,
    OUTER_UNIT,
    OWNER_KEY,
    OWNER_TABLE,
    REP_IID,
    UNIQUE_KEY,
    Attr,
    level_name,
    resolve,
)
from duckpacs.index.query.values import TIME_END, parse_date, parse_time, split_range, values_of


@dataclass
class FindPlan:
    """A compiled C-FIND: SQL, parameters and how to turn rows into result dicts."""

    level: str
    sql: str
    params: list[Any]
    selects: list[str]  # result names of the selected columns after rep_iid
    post: list[Attr]  # attributes read from `attributes` for each match's representative
    sequences: list[tuple[Attr, list[Attr] | None]]
    order: list[str]  # every result name, in order
    scope: Cond | None = None  # column conditions bounding the attribute scans (image level)


IidRange = tuple[int, int] | None


def scope_sql(scope: Cond) -> tuple[str, list[Any]]:
    """SQL returning ``(min iid, max iid)`` of the instances meeting the column conditions."""
    return f"SELECT min(i.iid), max(i.iid) FROM instances i WHERE {scope.sql}", scope.params


def _seq_items(value: Any) -> list[dict[str, Any]] | None:
    if isinstance(value, Mapping):
        return [dict(value)]
    if isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value):
        return [dict(v) for v in value]
    return None


def _eav_wrap(level: str, inner: str) -> str:
    """Restrict the level's unit to instances whose iid is in the ``inner`` select."""
    if level == "image":
        return f"i.iid IN ({inner})"
    return (
        f"{OUTER_UNIT[level]} IN (SELECT {INNER_UNIT[level]} FROM instances i2 "
        f"WHERE i2.iid IN ({inner}))"
    )


def _key_cond(level: str, attr: Attr, value: Any, fuzzy: bool) -> Cond | None:
    key = attr.key
    if key is None:
        return None
    alias = ALIASES[level].get(key.level)
    if alias is not None:
        return value_cond(attr, value, f"{alias}.{key.column}", typed=key.sql_type, fuzzy=fuzzy)
    cond = value_cond(attr, value, f"i2.{key.column}", typed=key.sql_type, fuzzy=fuzzy)
    if cond is None:
        return None
    return Cond(
        f"{OUTER_UNIT[level]} IN (SELECT {INNER_UNIT[level]} FROM instances i2 WHERE {cond.sql})",
        cond.params,
    )


def _eav_cond(
    level: str, attr: Attr, value: Any, fuzzy: bool, iid_range: IidRange = None
) -> Cond | None:
    cond = value_cond(attr, value, "a.value", typed="VARCHAR", fuzzy=fuzzy, num_expr="a.num")
    if cond is None:
        return None
    inner = f"SELECT a.iid FROM attributes a WHERE a.parent = '' AND a.tag = ? AND {cond.sql}"
    inner, params = _scoped(inner, [attr.tag, *cond.params], iid_range)
    return Cond(_eav_wrap(level, inner), params)


def _sequence_cond(
    level: str, attr: Attr, items: list[dict[str, Any]], fuzzy: bool, iid_range: IidRange = None
) -> Cond | None:
    """Sequence matching (PS3.4 C.2.2.2.6), nested sequences included: true when one item
    of the sequence matches every non-universal key of the query item."""
    found = _items_matching(f"{attr.tag:08X}#[0-9]+", attr, items, fuzzy, iid_range)
    if found is None:
        return None
    return Cond(_eav_wrap(level, f"SELECT iid FROM ({found.sql})"), found.params)


def _items_matching(
    path: str, attr: Attr, items: list[dict[str, Any]], fuzzy: bool, iid_range: IidRange
) -> Cond | None:
    """SQL of ``(iid, item)`` for the items whose path fully matches the regex ``path`` and
    whose elements match the query item; None when the query item is universal."""
    if len(items) > 1:
        raise QueryError(f"{attr.name}: sequence matching takes one item (PS3.4 C.2.2.2.6)")
    conds: list[Cond] = []
    nested: list[Cond] = []
    for name, value in (items[0] if items else {}).items():
        sub = resolve(name)
        sub_items = _seq_items(value) if sub.vr == "SQ" else None
        if sub.vr == "SQ":
            inner = _items_matching(
                f"{path}/{sub.tag:08X}#[0-9]+", sub, sub_items or [], fuzzy, iid_range
            )
            if inner is not None:  # the enclosing item of each matching nested item
                nested.append(
                    Cond(
                        "SELECT iid, regexp_replace(item, '/[^/]*$', '') AS item "
                        f"FROM ({inner.sql})",
                        inner.params,
                    )
                )
            continue
        cond = value_cond(sub, value, "a.value", typed="VARCHAR", fuzzy=fuzzy, num_expr="a.num")
        if cond is not None:
            conds.append(Cond(f"(a.tag = ? AND {cond.sql})", [sub.tag, *cond.params]))
    parts = list(nested)
    if conds:
        either = any_of(conds)
        direct, params = _scoped(
            "SELECT a.iid, a.parent AS item FROM attributes a "
            f"WHERE regexp_full_match(a.parent, ?) AND {either.sql}",
            [path, *either.params],
            iid_range,
        )
        direct += f" GROUP BY a.iid, a.parent HAVING count(DISTINCT a.tag) = {len(conds)}"
        parts.insert(0, Cond(direct, params))
    if not parts:
        return None
    return Cond(
        " INTERSECT ".join(f"(SELECT iid, item FROM ({c.sql}))" for c in parts),
        [p for c in parts for p in c.params],
    )


def _combined(level: str, attrs: dict[str, tuple[Attr, Any]]) -> tuple[list[Cond], set[str]]:
    """Combined date-time range matching (PS3.4 C.2.2.2.5) for date/time key pairs."""
    conds: list[Cond] = []
    used: set[str] = set()
    for d_name, t_name in DATE_TIME_PAIRS:
        if d_name not in attrs or t_name not in attrs:
            continue
        (d_attr, d_val), (t_attr, t_val) = attrs[d_name], attrs[t_name]
        d_parts, t_parts = values_of(d_val), values_of(t_val)
        if d_parts is None or t_parts is None or len(d_parts) > 1 or len(t_parts) > 1:
            continue
        assert d_attr.key is not None and t_attr.key is not None
        alias = ALIASES[level].get(d_attr.key.level)
        if alias is None:
            continue
        d_span = split_range(d_parts[0], "DA") or (d_parts[0], d_parts[0])
        t_span = split_range(t_parts[0], "TM") or (t_parts[0], t_parts[0])
        expr = (
            f"({alias}.{d_attr.key.column} + coalesce({alias}.{t_attr.key.column}, "
            "TIME '00:00:00'))"
        )
        parts, params = [], []
        if d_span[0]:
            start = parse_time(t_span[0])[0] if t_span[0] else time(0)
            parts.append(f"{expr} >= ?")
            params.append(datetime.combine(parse_date(d_span[0]), start))
        if d_span[1]:
            end = parse_time(t_span[1])[1] if t_span[1] else TIME_END
            parts.append(f"{expr} <= ?")
            params.append(datetime.combine(parse_date(d_span[1]), end))
        if parts:
            conds.append(Cond(" AND ".join(parts), params))
        used |= {d_name, t_name}
    return conds, used


def _where(
    level: str,
    query: Mapping[str, Any],
    fuzzy: bool,
    combined_datetime: bool,
    iid_range: IidRange = None,
) -> tuple[Cond, list[Attr], Cond | None]:
    resolved: dict[str, tuple[Attr, Any]] = {}
    for name, value in query.items():
        attr = resolve(name)
        if attr.tag in NOT_MATCHED:
            continue
        resolved[attr.name] = (attr, value)
    conds: list[Cond] = []
    used: set[str] = set()
    if combined_datetime:
        conds, used = _combined(level, resolved)
    later: list[tuple[Attr, Any]] = []
    for name, (attr, value) in resolved.items():
        if name in used:
            continue
        cond: Cond | None
        if attr.vr == "SQ" or (name not in COMPUTED and attr.key is None):
            later.append((attr, value))
            continue
        if name in COMPUTED:
            cond = _computed_cond(level, attr, value)
        else:
            cond = _key_cond(level, attr, value, fuzzy)
        if cond is not None:
            conds.append(cond)
    # At image level the column conditions can bound the scan of `attributes` to an iid range
    # (see Index.find): the caller runs `scope` first and compiles again with `iid_range`.
    scope = all_of(conds) if level == "image" and conds and later else None
    for attr, value in later:
        if attr.vr == "SQ":
            cond = _sequence_cond(level, attr, _seq_items(value) or [], fuzzy, iid_range)
        else:
            cond = _eav_cond(level, attr, value, fuzzy, iid_range)
        if cond is not None:
            conds.append(cond)
    return all_of(conds), [a for a, _ in resolved.values()], scope


def _scoped(inner: str, params: list[Any], iid_range: IidRange) -> tuple[str, list[Any]]:
    """Bound a scan of `attributes` to an iid range (pruned by DuckDB's zone maps)."""
    if iid_range is None:
        return inner, params
    return f"{inner} AND a.iid BETWEEN ? AND ?", [*params, *iid_range]


def _computed_expr(level: str, owner: str, column: str) -> str | None:
    """A computed key of ``owner``'s level seen from ``level`` (None below it)."""
    own = {"patient": "p", "study": "s", "series": "se"}
    if owner == level:
        return f"{own[level]}.{column}"
    if level == "series" and owner == "study":
        return f"s.{column}"
    key = OWNER_KEY[level].get(owner)
    if key is None:
        return None
    table, key_column = OWNER_TABLE[owner]
    return f"(SELECT o.{column} FROM {table} o WHERE o.{key_column} = {key})"


def _computed_cond(level: str, attr: Attr, value: Any) -> Cond | None:
    owner, column, _vr = COMPUTED[attr.name]
    expr = _computed_expr(level, owner, column)
    if expr is None:
        raise QueryError(f"{attr.name} cannot be matched at the {level} level")
    typed = "LIST" if column in ("modalities_in_study", "sop_classes_in_study") else "INTEGER"
    return value_cond(attr, value, expr, typed=typed, fuzzy=False)


def compile_find(
    level: str,
    query: Mapping[str, Any],
    return_keys: Sequence[str],
    *,
    fuzzy: bool = False,
    combined_datetime: bool = False,
    iid_range: IidRange = None,
) -> FindPlan:
    """Compile a C-FIND at ``level`` (see :meth:`duckpacs.index.Index.find`).

    When the plan's ``scope`` is set, running :func:`scope_sql` first and compiling again with
    the ``iid_range`` it returns makes the attribute scans touch only that range.
    """
    level = level_name(level)
    where, query_attrs, scope = _where(level, query, fuzzy, combined_datetime, iid_range)
    wanted: list[Attr] = [
        resolve(UNIQUE_KEY[level]),
        *query_attrs,
        *(resolve(k) for k in return_keys),
    ]
    seen: set[str] = set()
    selects: list[str] = []
    exprs: list[str] = []
    post: list[Attr] = []
    sequences: list[tuple[Attr, list[Attr] | None]] = []
    order: list[str] = []
    for attr in wanted:
        if attr.name in seen:
            continue
        seen.add(attr.name)
        order.append(attr.name)
        expr = _return_expr(level, attr)
        if expr is not None:
            selects.append(attr.name)
            exprs.append(expr)
        elif attr.vr == "SQ":
            items = _seq_items(query.get(attr.name) or query.get(f"{attr.tag:08X}"))
            sub = [resolve(k) for k in items[0]] if items and items[0] else None
            sequences.append((attr, sub))
        else:
            post.append(attr)
    columns = ", ".join([REP_IID[level], *exprs])
    sql = f"SELECT {columns} FROM {FROM[level]} WHERE {where.sql} ORDER BY {ORDER[level]}"
    return FindPlan(
        level, sql, where.params, selects, post, sequences, order, None if iid_range else scope
    )


def _return_expr(level: str, attr: Attr) -> str | None:
    if attr.name in COMPUTED:
        owner, column, _vr = COMPUTED[attr.name]
        return _computed_expr(level, owner, column) or "NULL"
    if attr.key is None:
        return None
    alias = ALIASES[level].get(attr.key.level)
    return f"{alias}.{attr.key.column}" if alias else None


def compile_condition(
    level: str,
    query: Mapping[str, Any],
    *,
    iid_range: IidRange = None,
    calling_ae: Any = None,
) -> Cond:
    """The condition alone of ``query`` at ``level`` (the aliases of ``FROM[level]``: ``i``
    for instances, ``s`` for studies), for callers that write their own SELECT: routing
    rules over new instances, retention over studies. ``calling_ae`` matches the AE title
    that sent the instance (image level only) with the same rules as a text key."""
    level = level_name(level)
    where, _, _ = _where(level, query, False, False, iid_range)
    if calling_ae is None:
        return where
    if level != "image":
        raise QueryError("CallingAE can only be matched on instances")
    sender = Attr(0, "CallingAE", "AE", None)
    cond = value_cond(sender, calling_ae, "coalesce(i.source_ae, '')", typed="VARCHAR", fuzzy=False)
    return where if cond is None else all_of([where, cond])


# What compile_locations selects, in this order (a Location).
LOCATION_COLUMNS = (
    'i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax, i.pack, i."offset", i.length'
)


def compile_locations(
    level: str, query: Mapping[str, Any], *, fuzzy: bool = False, iid_range: IidRange = None
) -> tuple[str, list[Any], Cond | None]:
    """SQL listing the location of every instance under the matches of ``query``."""
    level = level_name(level)
    where, _, scope = _where(level, query, fuzzy, False, iid_range)
    scope = None if iid_range else scope
    columns = LOCATION_COLUMNS
    order = "i.series_instance_uid, i.instance_number, i.sop_instance_uid"
    if level == "image":
        sql = f"SELECT {columns} FROM instances i WHERE {where.sql} ORDER BY {order}"
        return sql, where.params, scope
    inner = INNER_UNIT[level].replace("i2.", "i.")
    sql = (
        f"SELECT {columns} FROM instances i WHERE {inner} IN "
        f"(SELECT {OUTER_UNIT[level]} FROM {FROM[level]} WHERE {where.sql}) ORDER BY {order}"
    )
    return sql, where.params, scope
