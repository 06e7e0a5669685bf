"""Index schema: the header batch contract, the DuckDB tables and their migrations.

Two shapes are defined here, both as DuckDB types (no Arrow library is needed to read them).

The **header batch** is the Arrow data a batch builder (the Rust one in ``duckpacs._core``,
or the tests' pydicom oracle ``tests/index_rows.py``) hands to
:meth:`duckpacs.index.Index.add_batch`, which scans it with DuckDB. :data:`BATCH_SCHEMA`
lists its columns with the DuckDB type each one reads as: one row per instance with

- one ``VARCHAR`` (Arrow ``string``) column per key attribute (:data:`KEY_ATTRIBUTES`),
  holding the decoded value as text (Specific Character Set applied, multiple values joined
  with ``\\``, padding removed), null when the attribute is absent;
- the location and provenance columns (:data:`LOCATION_FIELDS`);
- ``attrs``: a list of every element of the dataset, top-level and nested, private ones
  included (:data:`ATTR_FIELDS`), one entry per value.

The **DuckDB tables** are ``instances`` (typed key columns, location), ``attributes`` (every
other element of every instance, long form: nested ones, private ones, and every top-level
attribute that is not a key column) and the per-level aggregates ``series``, ``studies`` and
``patients`` that carry the computed return keys of PS3.4 C.6.1.1 / C.6.2.1 (numbers of related
instances, ModalitiesInStudy, SOPClassesInStudy). The level tables are recomputed for the
studies a batch touches, so they always equal a GROUP BY over ``instances``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SCHEMA_VERSION: Final = 3

LEVELS: Final = ("patient", "study", "series", "image")


@dataclass(frozen=True)
class KeyAttribute:
    """An attribute held in a typed column of the level tables.

    Attributes
    ----------
    keyword : DICOM keyword (PS3.6).
    tag : ``group << 16 | element``.
    vr : value representation from the data dictionary.
    level : the query level it belongs to (PS3.4 C.6.1.1 / C.6.2.1).
    column : the column name in the batch and in the tables.
    """

    keyword: str
    tag: int
    vr: str
    level: str
    column: str

    @property
    def sql_type(self) -> str:
        """DuckDB type of the column in the tables (the batch always carries text)."""
        return {"DA": "DATE", "TM": "TIME", "IS": "INTEGER", "US": "INTEGER"}.get(
            self.vr, "VARCHAR"
        )


def _snake(keyword: str) -> str:
    out: list[str] = []
    for i, ch in enumerate(keyword):
        if (
            ch.isupper()
            and i
            and (
                not keyword[i - 1].isupper() or (i + 1 < len(keyword) and keyword[i + 1].islower())
            )
        ):
            out.append("_")
        out.append(ch.lower())
    return "".join(out).replace("i_d", "id").replace("u_i_d", "uid")


_COLUMN_OVERRIDES: Final = {
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "StudyID": "study_id",
    "Rows": "pixel_rows",
    "Columns": "pixel_columns",
}

# Keyword, tag and VR (PS3.6) of each key attribute, per level. Written out rather than looked
# up so that the index needs no data dictionary to start (a test checks them against pydicom's).
_KEYS_BY_LEVEL: Final = {
    "patient": (
        ("PatientName", 0x00100010, "PN"),
        ("PatientID", 0x00100020, "LO"),
        ("IssuerOfPatientID", 0x00100021, "LO"),
        ("PatientBirthDate", 0x00100030, "DA"),
        ("PatientSex", 0x00100040, "CS"),
    ),
    "study": (
        ("StudyInstanceUID", 0x0020000D, "UI"),
        ("StudyDate", 0x00080020, "DA"),
        ("StudyTime", 0x00080030, "TM"),
        ("AccessionNumber", 0x00080050, "SH"),
        ("StudyID", 0x00200010, "SH"),
        ("StudyDescription", 0x00081030, "LO"),
        ("ReferringPhysicianName", 0x00080090, "PN"),
    ),
    "series": (
        ("SeriesInstanceUID", 0x0020000E, "UI"),
        ("Modality", 0x00080060, "CS"),
        ("SeriesNumber", 0x00200011, "IS"),
        ("SeriesDescription", 0x0008103E, "LO"),
        ("SeriesDate", 0x00080021, "DA"),
        ("SeriesTime", 0x00080031, "TM"),
        ("BodyPartExamined", 0x00180015, "CS"),
        ("StationName", 0x00081010, "SH"),
        ("InstitutionName", 0x00080080, "LO"),
        ("Manufacturer", 0x00080070, "LO"),
        ("ProtocolName", 0x00181030, "LO"),
    ),
    "image": (
        ("SOPInstanceUID", 0x00080018, "UI"),
        ("SOPClassUID", 0x00080016, "UI"),
        ("InstanceNumber", 0x00200013, "IS"),
        ("ContentDate", 0x00080023, "DA"),
        ("ContentTime", 0x00080033, "TM"),
        ("NumberOfFrames", 0x00280008, "IS"),
        ("Rows", 0x00280010, "US"),
        ("Columns", 0x00280011, "US"),
    ),
}


KEY_ATTRIBUTES: Final = tuple(
    KeyAttribute(keyword, tag, vr, level, _COLUMN_OVERRIDES.get(keyword) or _snake(keyword))
    for level, keys in _KEYS_BY_LEVEL.items()
    for keyword, tag, vr in keys
)
KEYS_BY_KEYWORD: Final = {k.keyword: k for k in KEY_ATTRIBUTES}
KEYS_BY_TAG: Final = {k.tag: k for k in KEY_ATTRIBUTES}


@dataclass(frozen=True)
class Field:
    """A column of the header batch (or a field of an ``attrs`` entry).

    Attributes
    ----------
    name : the column name.
    type : the DuckDB type the Arrow column reads as (``VARCHAR`` is Arrow ``string``,
        ``UBIGINT`` ``uint64``, ``TIMESTAMPTZ`` ``timestamp[us, tz=UTC]``, ...).
    nullable : whether the Arrow field may hold nulls.
    """

    name: str
    type: str
    nullable: bool = True


# Location of the record in the store and provenance of the instance (the store's Location is
# (pack, offset, length); sha256 and size describe the original bytes as received).
LOCATION_FIELDS: Final = (
    Field("transfer_syntax", "VARCHAR"),
    Field("pack", "UBIGINT"),
    Field("offset", "UBIGINT"),
    Field("length", "UBIGINT"),
    Field("sha256", "VARCHAR"),
    Field("size", "UBIGINT"),
    Field("received_at", "TIMESTAMPTZ"),
    Field("source_ae", "VARCHAR"),
)

# One element value. ``parent`` names the sequence item holding it: "" at top level, else
# "SSSSSSSS#n" (sequence tag in hex, item index from 0), nested items joined with "/".
# ``creator`` is the Private Creator of a private element (PS3.5 7.8.1), else null. A
# sequence element itself is one entry with vr "SQ" and a null value; an element with no
# value is one entry with a null value; binary values (OB, OW, UN, ...) are not kept.
# The ``attributes`` table has these columns after ``iid``.
ATTR_FIELDS: Final = (
    Field("parent", "VARCHAR", nullable=False),
    Field("tag", "UINTEGER", nullable=False),
    Field("vr", "VARCHAR", nullable=False),
    Field("creator", "VARCHAR"),
    Field("vm_index", "USMALLINT", nullable=False),
    Field("value", "VARCHAR"),
    Field("num", "DOUBLE"),
)
ATTRS_TYPE: Final = "STRUCT(" + ", ".join(f'"{f.name}" {f.type}' for f in ATTR_FIELDS) + ")[]"

BATCH_SCHEMA: Final = (
    tuple(Field(k.column, "VARCHAR") for k in KEY_ATTRIBUTES)
    + LOCATION_FIELDS
    + (Field("attrs", ATTRS_TYPE),)
)

# Value representations whose values are numbers (kept in ``attributes.num`` too).
NUMERIC_VRS: Final = frozenset({"DS", "IS", "FL", "FD", "SS", "US", "SL", "UL", "SV", "UV"})
# Value representations matched with date/time range semantics (PS3.4 C.2.2.2.5).
DATETIME_VRS: Final = frozenset({"DA", "TM", "DT"})


# Hierarchy keys: an instance lacking one still belongs to a (nameless) patient/study/series.
HIERARCHY_COLUMNS: Final = frozenset({"patient_id", "study_instance_uid", "series_instance_uid"})


def _typed(k: KeyAttribute, source: str) -> str:
    if k.column in HIERARCHY_COLUMNS:
        return f"coalesce({source}, '')"
    if k.vr == "DA":
        return f"dp_date({source})"
    if k.vr == "TM":
        return f"dp_time({source})"
    if k.sql_type == "INTEGER":
        return f"TRY_CAST(trim({source}) AS INTEGER)"
    return source


# Temporary macros every connection defines (kept out of the file so the schema stays plain).
MACROS: Final = (
    # DA (PS3.5 6.2): YYYYMMDD; the ACR-NEMA form YYYY.MM.DD is accepted too.
    "CREATE OR REPLACE TEMP MACRO dp_date(s) AS "
    "try_strptime(replace(trim(s), '.', ''), '%Y%m%d')::DATE",
    # TM (PS3.5 6.2): HH[MM[SS[.F{1,6}]]]; the ACR-NEMA form HH:MM:SS is accepted too. The
    # subquery computes the cleaned text and its integer-part length once (this ran 2.7x
    # faster than repeating them: TM parsing was the costliest part of appending instances).
    "CREATE OR REPLACE TEMP MACRO dp_time(s) AS ("
    "SELECT CASE WHEN n IN (2, 4, 6) THEN try_strptime(rpad(left(t, n), 6, '0') || '.' || "
    "rpad(substr(t, n + 2, 6), 6, '0'), '%H%M%S.%f')::TIME END "
    "FROM (SELECT t, coalesce(nullif(strpos(t, '.'), 0) - 1, length(t)) AS n "
    "FROM (SELECT replace(trim(s), ':', '') AS t)))",
)


def _columns_ddl(level_filter: tuple[str, ...]) -> str:
    return ",\n  ".join(
        f"{k.column} {k.sql_type}" for k in KEY_ATTRIBUTES if k.level in level_filter
    )


def _fields_ddl(fields: tuple[Field, ...]) -> str:
    return ", ".join(f'"{f.name}" {f.type}' + ("" if f.nullable else " NOT NULL") for f in fields)


def create_statements() -> list[str]:
    """DDL of schema version :data:`SCHEMA_VERSION` (idempotent)."""
    all_levels = LEVELS
    return [
        "CREATE TABLE IF NOT EXISTS duckpacs_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        f"""CREATE TABLE IF NOT EXISTS instances (
  iid BIGINT NOT NULL,
  {_columns_ddl(all_levels)},
  {_fields_ddl(LOCATION_FIELDS)})""",
        f"CREATE TABLE IF NOT EXISTS attributes (iid BIGINT NOT NULL, {_fields_ddl(ATTR_FIELDS)})",
        f"""CREATE TABLE IF NOT EXISTS series (
  series_instance_uid VARCHAR, study_instance_uid VARCHAR,
  {_columns_ddl(("series",)).replace("series_instance_uid VARCHAR,", "")},
  number_of_series_related_instances BIGINT, rep_iid BIGINT)""",
        f"""CREATE TABLE IF NOT EXISTS studies (
  {_columns_ddl(("patient", "study"))},
  study_datetime TIMESTAMP, modalities_in_study VARCHAR[], sop_classes_in_study VARCHAR[],
  number_of_study_related_series BIGINT, number_of_study_related_instances BIGINT,
  rep_iid BIGINT)""",
        f"""CREATE TABLE IF NOT EXISTS patients (
  {_columns_ddl(("patient",))},
  number_of_patient_related_studies BIGINT, number_of_patient_related_series BIGINT,
  number_of_patient_related_instances BIGINT, rep_iid BIGINT)""",
        *INDEX_STATEMENTS,
        MARKS_DDL,
    ]


# Version 3: how far into each store pack the index has applied the records (the store is
# the log, the index a view of it). Written in the same transaction as the rows, so an
# archive opened for writing indexes exactly the records past these marks first
# (duckpacs.archive.recovery). An index migrated from version 2 has no marks: its first
# catch-up reads every pack once.
MARKS_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS store_marks (pack UBIGINT PRIMARY KEY, indexed_to UBIGINT)"
)


# Version 2: ART indexes on the instance UIDs. Without them, at a million instances, every
# lookup of one instance (each C-STORE's duplicate check, each WADO request) scanned the whole
# column (33 ms, 0.7 ms with the index) and adding ten instances took 120 ms, most of it
# scans for the series and study rows to refresh. A bulk load into an empty index builds them
# at the end instead (Index.bulk_load).
INDEXED_COLUMNS: Final = ("sop_instance_uid", "series_instance_uid", "study_instance_uid")
INDEX_STATEMENTS: Final = tuple(
    f"CREATE INDEX IF NOT EXISTS instances_{c} ON instances ({c})" for c in INDEXED_COLUMNS
)
DROP_INDEX_STATEMENTS: Final = tuple(f"DROP INDEX IF EXISTS instances_{c}" for c in INDEXED_COLUMNS)


def typed_select(source: str = "") -> str:
    """The SELECT list converting batch text columns into the typed ``instances`` columns."""
    prefix = f"{source}." if source else ""
    keys = ", ".join(_typed(k, f"{prefix}{k.column}") for k in KEY_ATTRIBUTES)
    loc = ", ".join(f'{prefix}"{f.name}"' for f in LOCATION_FIELDS)
    return f"{keys}, {loc}"


def column_list() -> str:
    """Column names of ``instances`` after ``iid``, in the order of :func:`typed_select`."""
    keys = ", ".join(k.column for k in KEY_ATTRIBUTES)
    loc = ", ".join(f'"{f.name}"' for f in LOCATION_FIELDS)
    return f"{keys}, {loc}"


def level_columns(level: str) -> list[str]:
    """Key columns stored in the table of ``level`` (upper-level keys included for study)."""
    if level == "patient":
        levels: tuple[str, ...] = ("patient",)
    elif level == "study":
        levels = ("patient", "study")
    elif level == "series":
        levels = ("series",)
    else:
        levels = LEVELS
    return [k.column for k in KEY_ATTRIBUTES if k.level in levels]
