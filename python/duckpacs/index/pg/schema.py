"""The index tables in PostgreSQL: the embedded schema's tables, typed for PostgreSQL.

The tables, columns and meaning are those of :mod:`duckpacs.index.schema` (so the query
compiler and ``duckpacs sql`` see the same names); only the types differ:

- no unsigned integers: ``UBIGINT``/``UINTEGER`` are ``bigint``, ``USMALLINT`` ``integer``;
- text is ``COLLATE "C"``: ordered by bytes, as DuckDB orders it (UIDs, names);
- ``instances.sop_instance_uid`` is **unique**: two nodes that receive the same instance
  store it once (``INSERT ... ON CONFLICT DO NOTHING`` behind a transaction lock);
- ``instances.iid`` comes from the sequence ``dp_iid`` and is indexed (PostgreSQL has no
  zone maps: without the index every non-key query scanned a million instances, 100-211 ms
  p95 in docs/CLUSTER-EVALUATION.md);
- ``store_marks`` is keyed by ``(node, pack)`` and ``instances`` has a ``node`` column: each
  writing node keeps its own marks, and store locations are matched within its own rows;
- ``nodes`` numbers the writing nodes and holds their heartbeats (:mod:`.nodes`).
"""

from __future__ import annotations

import re
from typing import Final

from duckpacs.index import schema
from duckpacs.index.pg import nodes
from duckpacs.index.query.dialect import VALUE_PREFIX

SCHEMA_VERSION: Final = 1  # of the PostgreSQL layout (the embedded one has its own)

_TYPES: Final = (
    (re.compile(r"\bVARCHAR\[\]"), 'text[] COLLATE "C"'),
    (re.compile(r"\bVARCHAR\b"), 'text COLLATE "C"'),
    (re.compile(r"\bUBIGINT\b"), "bigint"),
    (re.compile(r"\bUINTEGER\b"), "bigint"),
    (re.compile(r"\bUSMALLINT\b"), "integer"),
    (re.compile(r"\bDOUBLE\b"), "double precision"),
    (re.compile(r"\bTIMESTAMPTZ\b"), "timestamptz"),
)


def pg_types(ddl: str) -> str:
    """DuckDB column types in ``ddl`` as PostgreSQL ones."""
    for pattern, replacement in _TYPES:
        ddl = pattern.sub(replacement, ddl)
    return ddl


def _tables() -> list[str]:
    """The embedded schema's tables (not its indexes or marks) in PostgreSQL types."""
    skip = set(schema.INDEX_STATEMENTS) | {schema.MARKS_DDL}
    return [pg_types(s) for s in schema.create_statements() if s not in skip]


# Lookups the write path, the compiler and the level refresh make.
INDEXES: Final = (
    "CREATE UNIQUE INDEX IF NOT EXISTS instances_sop ON instances (sop_instance_uid)",
    "CREATE UNIQUE INDEX IF NOT EXISTS instances_iid ON instances (iid)",
    "CREATE INDEX IF NOT EXISTS instances_study ON instances (study_instance_uid)",
    "CREATE INDEX IF NOT EXISTS instances_series ON instances (series_instance_uid)",
    "CREATE INDEX IF NOT EXISTS instances_patient ON instances (patient_id)",
    'CREATE INDEX IF NOT EXISTS instances_location ON instances (node, pack, "offset")',
    "CREATE INDEX IF NOT EXISTS attributes_iid ON attributes (iid)",
    "CREATE INDEX IF NOT EXISTS attributes_tag_num ON attributes (tag, num)",
    # Value matching on non-key and private attributes: a btree entry is limited to about
    # 2.7 kB, so the first characters are indexed (the dialect adds the prefix condition).
    f"CREATE INDEX IF NOT EXISTS attributes_tag_value ON attributes "
    f"(tag, left(value, {VALUE_PREFIX}))",
    "CREATE UNIQUE INDEX IF NOT EXISTS studies_uid ON studies (study_instance_uid)",
    "CREATE INDEX IF NOT EXISTS studies_patient ON studies (patient_id)",
    "CREATE INDEX IF NOT EXISTS studies_date ON studies (study_date)",
    "CREATE UNIQUE INDEX IF NOT EXISTS series_uid ON series (series_instance_uid)",
    "CREATE INDEX IF NOT EXISTS series_study ON series (study_instance_uid)",
    "CREATE UNIQUE INDEX IF NOT EXISTS patients_id ON patients (patient_id)",
)

EXTRA: Final = (
    "CREATE SEQUENCE IF NOT EXISTS dp_iid",
    """CREATE TABLE IF NOT EXISTS store_marks (
        node text COLLATE "C" NOT NULL, pack bigint NOT NULL, indexed_to bigint,
        PRIMARY KEY (node, pack))""",
    """CREATE TABLE IF NOT EXISTS dicom_dictionary (
        tag bigint, keyword text COLLATE "C", vr text COLLATE "C", name text COLLATE "C")""",
    # TRY_CAST(x AS DOUBLE) of the compiler (see duckpacs.index.query.dialect).
    """CREATE OR REPLACE FUNCTION dp_try_double(t text) RETURNS double precision
        LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN RETURN trim(t)::double precision; EXCEPTION WHEN others THEN RETURN NULL; END $$""",
    """CREATE OR REPLACE VIEW elements AS
       SELECT i.sop_instance_uid, i.series_instance_uid, i.study_instance_uid, a.parent,
              upper(lpad(to_hex(a.tag), 8, '0')) AS tag, d.keyword, a.vr, a.creator,
              a.vm_index, a.value, a.num
       FROM attributes a JOIN instances i USING (iid)
       LEFT JOIN dicom_dictionary d ON d.tag = a.tag""",
)


# Which node's store holds the instance's record: store locations (pack, offset) are a
# node's own, so tombstones and compaction touch only that node's rows.
NODE_COLUMN: Final = (
    "ALTER TABLE instances ADD COLUMN IF NOT EXISTS node text COLLATE \"C\" NOT NULL DEFAULT ''"
)


def create_statements() -> list[str]:
    """DDL of the PostgreSQL index (idempotent)."""
    return [*_tables(), NODE_COLUMN, *INDEXES, *EXTRA, nodes.DDL]


def _last(column: str, order: str) -> str:
    """DuckDB's ``arg_max(column, order)``: the non-null value of the row with the greatest
    ``order``."""
    return f"(array_agg({column} ORDER BY {order} DESC) FILTER (WHERE {column} IS NOT NULL))[1]"


def refresh_levels_sql() -> list[str]:
    """Recompute the series, studies and patients rows touched (``_dp_touched``): the
    statements of the embedded index's ``_refresh_levels``, in PostgreSQL's SQL."""
    series_cols = [c for c in schema.level_columns("series") if c != "series_instance_uid"]
    study_other = [c for c in schema.level_columns("study") if c != "study_instance_uid"]
    patient_other = [c for c in schema.level_columns("patient") if c != "patient_id"]

    def lasts(columns: list[str], order: str) -> str:
        return ", ".join(f"{_last(c, order)}" for c in columns)

    distinct = (
        "coalesce(array_agg(DISTINCT {0} ORDER BY {0}) FILTER (WHERE {0} IS NOT NULL), '{{}}')"
    )
    return [
        "DELETE FROM series WHERE series_instance_uid IN "
        "(SELECT series_instance_uid FROM _dp_touched)",
        f"""INSERT INTO series (series_instance_uid, study_instance_uid,
              {", ".join(series_cols)}, number_of_series_related_instances, rep_iid)
            SELECT series_instance_uid, {_last("study_instance_uid", "iid")},
              {lasts(series_cols, "iid")}, count(*), max(iid)
            FROM instances WHERE series_instance_uid IN
              (SELECT series_instance_uid FROM _dp_touched)
            GROUP BY series_instance_uid""",
        "DELETE FROM studies WHERE study_instance_uid IN "
        "(SELECT study_instance_uid FROM _dp_touched)",
        f"""INSERT INTO studies (study_instance_uid, {", ".join(study_other)},
              study_datetime, modalities_in_study, sop_classes_in_study,
              number_of_study_related_series, number_of_study_related_instances, rep_iid)
            SELECT study_instance_uid, {lasts(study_other, "iid")},
              {_last("study_date", "iid")} + coalesce({_last("study_time", "iid")},
                TIME '00:00:00'),
              {distinct.format("modality")}, {distinct.format("sop_class_uid")},
              count(DISTINCT series_instance_uid), count(*), max(iid)
            FROM instances WHERE study_instance_uid IN
              (SELECT study_instance_uid FROM _dp_touched)
            GROUP BY study_instance_uid""",
        "DELETE FROM patients WHERE patient_id IN (SELECT patient_id FROM _dp_touched)",
        f"""INSERT INTO patients (patient_id, {", ".join(patient_other)},
              number_of_patient_related_studies, number_of_patient_related_series,
              number_of_patient_related_instances, rep_iid)
            SELECT coalesce(patient_id, ''), {lasts(patient_other, "rep_iid")}, count(*),
              sum(number_of_study_related_series)::bigint,
              sum(number_of_study_related_instances)::bigint, max(rep_iid)
            FROM studies WHERE coalesce(patient_id, '') IN (SELECT patient_id FROM _dp_touched)
            GROUP BY coalesce(patient_id, '')""",
    ]
