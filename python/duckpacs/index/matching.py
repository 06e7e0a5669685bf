"""The query engine: PS3.4 C.2.2.2 attribute matching compiled to parameterised DuckDB SQL.

A query is a mapping of attribute (keyword or ``ggggeeee``) to a DICOM query value. Each key
becomes one SQL condition, all values travel as parameters. Key attributes are matched on the
typed columns of the level tables; every other attribute (private ones too) on the long
``attributes`` table, where one row holds one value: a multi-valued attribute matches when any
of its values does.

Rules (PS3.4 C.2.2.2):

- empty value, or ``*`` alone: universal matching (C.2.2.2.3);
- UI with ``\\`` or a Python list: list of UID matching (C.2.2.2.2);
- ``*`` / ``?`` in any other string: wildcard matching (C.2.2.2.4);
- ``A-B``, ``A-``, ``-B`` on DA, TM, DT: range matching, bounds inclusive (C.2.2.2.5); a
  partial time (``HH``, ``HHMM``) covers its whole hour or minute; with
  ``combined_datetime`` a date and a time key form one datetime range;
- PN: matched against the whole value and against each component group (so ``Yamada^Tarou``
  and ``山田^太郎`` both find ``Yamada^Tarou=山田^太郎=やまだ^たろう``); with ``fuzzy``
  case-insensitively and with an implied trailing ``*`` (C.2.2.2.1.1 leaves fuzzy semantics
  to the implementation);
- numbers (IS, DS, FL, FD, US, ...): numeric equality, so ``2`` matches ``2.0``;
- a sequence given as ``[{item keys}]``: sequence matching (C.2.2.2.6), true when one item
  matches every non-universal item key;
- anything else: single value matching, exact and case-sensitive (C.2.2.2.1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

import duckdb
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from duckpacs.errors import QueryError
from duckpacs.index.schema import DATETIME_VRS, KEYS_BY_TAG, NUMERIC_VRS, KeyAttribute

LEVEL_ALIASES = {
    "patient": "patient",
    "study": "study",
    "series": "series",
    "image": "image",
    "instance": "image",
}
FROM = {
    "patient": "patients p",
    "study": "studies s",
    "series": "series se JOIN studies s ON se.study_instance_uid = s.study_instance_uid",
    "image": "instances i",
}
# Which table alias holds the key columns of each level, per query level.
ALIASES = {
    "patient": {"patient": "p"},
    "study": {"patient": "s", "study": "s"},
    "series": {"patient": "s", "study": "s", "series": "se"},
    "image": {"patient": "i", "study": "i", "series": "i", "image": "i"},
}
OUTER_UNIT = {
    "patient": "p.patient_id",
    "study": "s.study_instance_uid",
    "series": "se.series_instance_uid",
    "image": "i.iid",
}
INNER_UNIT = {
    "patient": "coalesce(i2.patient_id, '')",
    "study": "i2.study_instance_uid",
    "series": "i2.series_instance_uid",
    "image": "i2.iid",
}
REP_IID = {"patient": "p.rep_iid", "study": "s.rep_iid", "series": "se.rep_iid", "image": "i.iid"}
ORDER = {
    "patient": "p.patient_id",
    "study": "s.study_instance_uid",
    "series": "se.series_instance_uid",
    "image": "i.study_instance_uid, i.series_instance_uid, i.instance_number, i.sop_instance_uid",
}
UNIQUE_KEY = {
    "patient": "PatientID",
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "image": "SOPInstanceUID",
}

# Computed return keys (PS3.4 C.6.1.1.x, C.6.2.1.x): keyword -> (level, column, VR).
COMPUTED = {
    "NumberOfPatientRelatedStudies": ("patient", "number_of_patient_related_studies", "IS"),
    "NumberOfPatientRelatedSeries": ("patient", "number_of_patient_related_series", "IS"),
    "NumberOfPatientRelatedInstances": ("patient", "number_of_patient_related_instances", "IS"),
    "NumberOfStudyRelatedSeries": ("study", "number_of_study_related_series", "IS"),
    "NumberOfStudyRelatedInstances": ("study", "number_of_study_related_instances", "IS"),
    "ModalitiesInStudy": ("study", "modalities_in_study", "CS"),
    "SOPClassesInStudy": ("study", "sop_classes_in_study", "UI"),
    "NumberOfSeriesRelatedInstances": ("series", "number_of_series_related_instances", "IS"),
}
DATE_TIME_PAIRS = (
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("ContentDate", "ContentTime"),
)
TIME_END = time(23, 59, 59, 999999)
_HEX = re.compile(r"^[0-9A-Fa-f]{8}$")


@dataclass(frozen=True)
class Attr:
    """A resolved query attribute."""

    tag: int
    name: str
    vr: str
    key: KeyAttribute | None


def level_name(level: str) -> str:
    """Normalise a Query/Retrieve Level (PS3.4 C.6: PATIENT, STUDY, SERIES, IMAGE)."""
    name = LEVEL_ALIASES.get(level.strip().lower())
    if name is None:
        raise QueryError(f"unknown query level {level!r} (patient, study, series or image)")
    return name


def resolve(name: str) -> Attr:
    """Resolve a keyword, ``ggggeeee``, ``gggg,eeee`` or ``(gggg,eeee)`` to an attribute."""
    text = name.strip()
    compact = text.strip("()").replace(",", "").replace(" ", "")
    if _HEX.match(compact):
        tag = int(compact, 16)
    else:
        found = tag_for_keyword(text)
        if found is None:
            raise QueryError(f"unknown attribute {name!r} (use a DICOM keyword or ggggeeee)")
        tag = int(found)
    try:
        vr = dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        vr = "UN"  # private or unknown: matched as text
    keyword = keyword_for_tag(tag) or f"{tag:08X}"
    return Attr(tag, keyword, vr, KEYS_BY_TAG.get(tag))


# -- values ---------------------------------------------------------------------------------


def _like(pattern: str) -> str:
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


def _regex(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


def _has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


def parse_date(text: str) -> date:
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


def _split_range(text: str, vr: str) -> tuple[str, str] | None:
    """``(low, high)`` when ``text`` is a range; DT ranges must not be confused with offsets."""
    if "-" not in text:
        return None
    if vr == "DT" and text.count("-") != 1:
        raise QueryError(f"ambiguous datetime range {text!r}: give offsets with '+' or none")
    low, _, high = text.partition("-")
    return low.strip(), high.strip()


@dataclass
class Cond:
    """An SQL condition with its parameters."""

    sql: str
    params: list[Any] = field(default_factory=list)


def _or(conds: list[Cond]) -> Cond:
    if len(conds) == 1:
        return conds[0]
    return Cond("(" + " OR ".join(c.sql for c in conds) + ")", [p for c in conds for p in c.params])


def _typed_range(expr: str, vr: str, text: str) -> Cond:
    """Range or single matching on a typed DATE/TIME column."""
    span = _split_range(text, vr)

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
    span = _split_range(text, vr)
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
    group_regex = "^(?:[^=]*=)*" + _regex(pattern) + "(?:=.*)?$"
    if fuzzy:
        return Cond(
            f"(lower({expr}) LIKE lower(?) ESCAPE '\\' OR regexp_matches({expr}, ?))",
            [_like(pattern), "(?is)" + group_regex],
        )
    if not _has_wildcard(pattern):
        return Cond(
            f"({expr} = ? OR (contains({expr}, '=') AND "
            f"list_contains(string_split({expr}, '='), ?)))",
            [pattern, pattern],
        )
    return Cond(
        f"({expr} LIKE ? ESCAPE '\\' OR (contains({expr}, '=') AND regexp_matches({expr}, ?)))",
        [_like(pattern), "(?s)" + group_regex],
    )


def _string(expr: str, part: str) -> Cond:
    if _has_wildcard(part):
        return Cond(f"{expr} LIKE ? ESCAPE '\\'", [_like(part)])
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


def _parts(value: Any) -> list[str] | None:
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


def value_cond(
    attr: Attr, value: Any, expr: str, *, typed: str, fuzzy: bool, num_expr: str | None = None
) -> Cond | None:
    """Condition matching ``value`` against ``expr`` or None when universal.

    ``typed`` is the SQL type of ``expr``: DATE, TIME, INTEGER, VARCHAR, or LIST for the
    computed list columns (ModalitiesInStudy, SOPClassesInStudy).
    """
    parts = _parts(value)
    if parts is None:
        return None
    vr = attr.vr
    if typed == "LIST":
        conds = [
            Cond(
                f"list_bool_or(list_transform({expr}, lambda x: x LIKE ? ESCAPE '\\'))", [_like(p)]
            )
            for p in parts
        ]
        return _or(conds)
    if vr == "UI":
        if len(parts) == 1:
            return Cond(f"{expr} = ?", parts)
        return Cond(f"{expr} IN ({', '.join('?' for _ in parts)})", parts)
    if vr in DATETIME_VRS:
        if typed in ("DATE", "TIME"):
            return _or([_typed_range(expr, vr, p) for p in parts])
        return _or([_text_range(expr, vr, p) for p in parts])
    if vr == "PN":
        return _or([_pn(expr, p, fuzzy) for p in parts])
    if vr in NUMERIC_VRS:
        return _or([_number(expr, num_expr, p, typed == "INTEGER") for p in parts])
    return _or([_string(expr, p) for p in parts])


# -- compiling ------------------------------------------------------------------------------


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
    if len(items) > 1:
        raise QueryError(f"{attr.name}: sequence matching takes one item (PS3.4 C.2.2.2.6)")
    conds = []
    for name, value in (items[0] if items else {}).items():
        sub = resolve(name)
        if _seq_items(value) is not None and value:
            raise QueryError(
                f"{attr.name}.{sub.name}: nested sequence matching is not "
                "supported; match the nested item's keys with `duckpacs sql`"
            )
        cond = value_cond(sub, value, "a.value", typed="VARCHAR", fuzzy=fuzzy, num_expr="a.num")
        if cond is not None:
            conds.append(Cond(f"(a.tag = ? AND {cond.sql})", [sub.tag, *cond.params]))
    if not conds:
        return None
    either = _or(conds)
    inner, params = _scoped(
        "SELECT a.iid FROM attributes a WHERE starts_with(a.parent, ?) "
        f"AND NOT contains(a.parent, '/') AND {either.sql}",
        [f"{attr.tag:08X}#", *either.params],
        iid_range,
    )
    inner += f" GROUP BY a.iid, a.parent HAVING count(DISTINCT a.tag) = {len(conds)}"
    return Cond(_eav_wrap(level, inner), params)


def _combined(level: str, attrs: dict[str, tuple[Attr, Any]]) -> tuple[list[Cond], set[str]]:
    """Combined date-time range matching (PS3.4 C.2.2.2.5) for date/time key pairs."""
    conds: list[Cond] = []
    used: set[str] = set()
    for d_name, t_name in DATE_TIME_PAIRS:
        if d_name not in attrs or t_name not in attrs:
            continue
        (d_attr, d_val), (t_attr, t_val) = attrs[d_name], attrs[t_name]
        d_parts, t_parts = _parts(d_val), _parts(t_val)
        if d_parts is None or t_parts is None or len(d_parts) > 1 or len(t_parts) > 1:
            continue
        assert d_attr.key is not None and t_attr.key is not None
        alias = ALIASES[level].get(d_attr.key.level)
        if alias is None:
            continue
        d_span = _split_range(d_parts[0], "DA") or (d_parts[0], d_parts[0])
        t_span = _split_range(t_parts[0], "TM") or (t_parts[0], t_parts[0])
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
    scope = _and(conds) if level == "image" and conds and later else None
    for attr, value in later:
        if attr.vr == "SQ":
            cond = _sequence_cond(level, attr, _seq_items(value) or [], fuzzy, iid_range)
        else:
            cond = _eav_cond(level, attr, value, fuzzy, iid_range)
        if cond is not None:
            conds.append(cond)
    return _and(conds), [a for a, _ in resolved.values()], scope


def _and(conds: list[Cond]) -> Cond:
    return Cond(" AND ".join(c.sql for c in conds) or "TRUE", [p for c in conds for p in c.params])


def _scoped(inner: str, params: list[Any], iid_range: IidRange) -> tuple[str, list[Any]]:
    """Bound a scan of `attributes` to an iid range (pruned by DuckDB's zone maps)."""
    if iid_range is None:
        return inner, params
    return f"{inner} AND a.iid BETWEEN ? AND ?", [*params, *iid_range]


def _computed_cond(level: str, attr: Attr, value: Any) -> Cond | None:
    owner, column, _vr = COMPUTED[attr.name]
    alias = ALIASES[level].get(owner)
    if alias is None or level == "image":
        raise QueryError(f"{attr.name} cannot be matched at the {level} level")
    typed = "LIST" if column in ("modalities_in_study", "sop_classes_in_study") else "INTEGER"
    return value_cond(attr, value, f"{alias}.{column}", typed=typed, fuzzy=False)


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
        alias = ALIASES[level].get(owner)
        return f"{alias}.{column}" if alias and level != "image" else "NULL"
    if attr.key is None:
        return None
    alias = ALIASES[level].get(attr.key.level)
    return f"{alias}.{attr.key.column}" if alias else None


def compile_locations(
    level: str, query: Mapping[str, Any], *, fuzzy: bool = False, iid_range: IidRange = None
) -> tuple[str, list[Any], Cond | None]:
    """SQL listing the location of every instance under the matches of ``query``."""
    level = level_name(level)
    where, _, scope = _where(level, query, fuzzy, False, iid_range)
    scope = None if iid_range else scope
    columns = 'i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax, i.pack, i."offset", i.length'
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


# -- results --------------------------------------------------------------------------------


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
                    result.append({_tag_name(t): v for t, v in sorted(values.items())})
                else:
                    result.append({s.name: values.get(s.tag) for s in sub})
            out[key] = result
    return out


def _tag_name(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"
