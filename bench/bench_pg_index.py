"""The index on PostgreSQL beside the embedded DuckDB index (issue 26's first question).

Before a shared index is built, this measures what it would cost, on the same synthetic
archive as ``bench_index.py`` (its generator: realistic UIDs, names, dates, modalities and 16
attribute rows per instance):

1. **Ingest as ``serve`` does it**: batches of 512 new instances, each a durable commit with
   the duplicate check by SOP Instance UID. Embedded: ``Index.add_batch``. PostgreSQL: the
   same Arrow batch split into instance and attribute rows, copied in with ADBC's
   PostgreSQL driver (COPY BINARY straight from Arrow) or psycopg 3's COPY (rows through
   Python), then ``INSERT ... ON CONFLICT DO NOTHING`` from a temporary table. The issue's
   target: at least 0.7x embedded.
2. **The C-FIND queries of bench_index** at N instances (1,000,000 by default), p50/p95:
   embedded through ``Index.find`` (the product's path, return keys fetched as C-FIND does),
   PostgreSQL by the same SQL in its dialect with the same follow-up fetch. Target: p95 under
   50 ms at 1 M instances.
3. **Size**: the PostgreSQL database against the DuckDB file, per instance.

PostgreSQL is Debian's (``postgresql``), started here in a temporary cluster on a free port
(initdb as the ``postgres`` user when run as root) and removed at the end. Needs the dev
extras (pyarrow, adbc-driver-postgresql, psycopg).

    python bench/bench_pg_index.py [--instances N] [--batches N] [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_index import FAMILY, GIVEN, MODALITIES, batches, generate, index_all, plan, timed  # noqa: E402
from duckpacs.index import Index  # noqa: E402

ECHO_TIME, REPETITION_TIME, PRIVATE = 0x00180081, 0x00180080, 0x00191001
# The C-FIND queries of bench_index.py, asked of both sides with the same values.
QUERIES = (
    "study level, PatientName wildcard",
    "study level, StudyDate range + modality",
    "series level, by StudyInstanceUID",
    "image level, EchoTime (non-key) within a study",
    "whole archive, private (0019,1001) non-key",
    "whole archive, count of an EchoTime value",
)
TABLES = ("instances", "attributes", "studies", "series", "patients")
PG_INDEXES = (
    # The unique key is what lets two nodes that receive the same instance store it once.
    "CREATE UNIQUE INDEX ON instances (sop_instance_uid)",
    "CREATE UNIQUE INDEX ON instances (iid)",  # DuckDB finds rows by iid without one
    "CREATE INDEX ON instances (study_instance_uid)",
    "CREATE INDEX ON instances (series_instance_uid)",
    "CREATE INDEX ON instances (modality)",
    "CREATE INDEX ON attributes (iid)",
    "CREATE INDEX ON attributes (tag, num)",
    "CREATE INDEX ON attributes (tag, value)",
    "CREATE UNIQUE INDEX ON studies (study_instance_uid)",
    "CREATE INDEX ON studies (patient_name text_pattern_ops)",
    "CREATE INDEX ON studies (study_date)",
    "CREATE UNIQUE INDEX ON series (series_instance_uid)",
    "CREATE INDEX ON series (study_instance_uid)",
    "ANALYZE",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise SystemExit("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return found[-1]


def database(uri: str, name: str) -> str:
    """A new database on the cluster of ``uri``; its URI."""
    with psycopg.connect(uri, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    return uri.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def pg_cluster() -> Iterator[str]:
    """A temporary PostgreSQL cluster on a free port; yields its connection URI."""
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "db"
    subprocess.run(
        [*as_user, _pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "bench", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c shared_buffers=512MB"
    subprocess.run(
        [
            *as_user,
            _pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "archive"],
            check=True,
        )
        yield f"postgresql://bench@127.0.0.1:{port}/archive"
    finally:
        subprocess.run(
            [*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def _signed(table: pa.Table) -> pa.Table:
    """PostgreSQL has no unsigned integers: UBIGINT pack/offset/length as BIGINT."""
    fields = [
        pa.field(f.name, pa.int64() if pa.types.is_unsigned_integer(f.type) else f.type)
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def load_postgres(index: Index, uri: str) -> float:
    """Copy the embedded index's tables into PostgreSQL, build the indexes; returns the
    PostgreSQL database size in bytes."""
    con = index.connection()
    with adbc.connect(uri) as pg, pg.cursor() as cur:
        for table in TABLES:
            t0 = time.perf_counter()
            rows = 0
            mode = "create"
            for rb in con.sql(f"SELECT * FROM {table}").to_arrow_reader(200_000):
                cur.adbc_ingest(table, _signed(pa.Table.from_batches([rb])), mode=mode)
                mode, rows = "append", rows + rb.num_rows
            pg.commit()
            dt = time.perf_counter() - t0
            print(f"  bulk copy {table:<10} {rows:>12,} rows  {rows / dt:>10,.0f} rows/s")
        t0 = time.perf_counter()
        for statement in PG_INDEXES:
            cur.execute(statement)
        pg.commit()
        print(f"  indexes and ANALYZE: {time.perf_counter() - t0:.1f} s")
        cur.execute("SELECT pg_database_size(current_database())")
        row = cur.fetchone()
        return float(row[0]) if row else 0.0


def split(batch: pa.Table, first_iid: int) -> tuple[pa.Table, pa.Table]:
    """A header batch as the rows of ``instances`` and ``attributes`` (what add_batch does
    in DuckDB's SQL, done in Arrow for PostgreSQL)."""
    iids = pa.array(np.arange(first_iid, first_iid + batch.num_rows, dtype=np.int64))
    flat = batch.drop_columns(["attrs"])
    instances = _signed(flat.add_column(0, "iid", iids))
    attrs = batch.column("attrs")
    lengths = pc.list_value_length(attrs).to_numpy(zero_copy_only=False)
    items = pc.list_flatten(attrs).combine_chunks()
    columns = {"iid": pa.array(np.repeat(iids.to_numpy(), lengths))}
    for i in range(items.type.num_fields):
        columns[items.type.field(i).name] = items.field(i)
    return instances, _signed(pa.table(columns))


class Staging:
    """The header batch's DICOM DA and TM text reaches PostgreSQL as text in a temporary
    table and is converted by the INSERT (as add_batch's view converts it in DuckDB)."""

    def __init__(self, index: Index, batch: pa.Schema) -> None:
        described = index.connection().sql("DESCRIBE instances").fetchall()
        self.ddl, exprs = [], []
        for name, kind, *_ in described:
            column, pg_type = f'"{name}"', _PG_TYPES.get(kind, kind)
            as_text = name in batch.names and pa.types.is_string(batch.field(name).type)
            if not as_text or kind == "VARCHAR":
                self.ddl.append(f"{column} {pg_type}")
                exprs.append(column)
                continue
            self.ddl.append(f"{column} text")
            value = f"nullif(replace(trim({column}), '.', ''), '')"
            if kind == "DATE":
                exprs.append(f"to_date({value}, 'YYYYMMDD')")
            else:
                exprs.append(f"nullif(trim({column}), '')::{pg_type}")
        self.create = f"CREATE TEMP TABLE new_instances ({', '.join(self.ddl)})"
        self.insert = (
            f"INSERT INTO instances SELECT {', '.join(exprs)} FROM new_instances "
            "ON CONFLICT DO NOTHING"
        )


_PG_TYPES = {
    "VARCHAR": "text",
    "UBIGINT": "bigint",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "DOUBLE": "double precision",
}


def ingest_embedded(index: Index, new: list[pa.Table]) -> float:
    t0 = time.perf_counter()
    for batch in new:
        index.add_batch(batch)  # a durable commit, dedupe by SOP Instance UID included
    return time.perf_counter() - t0


def ingest_adbc(uri: str, stage: Staging, new: list[pa.Table], first_iid: int) -> float:
    with adbc.connect(uri) as pg, pg.cursor() as cur:
        cur.execute(stage.create)
        t0 = time.perf_counter()
        for batch in new:
            instances, attributes = split(batch, first_iid)
            first_iid += batch.num_rows
            cur.execute("TRUNCATE new_instances")
            cur.adbc_ingest("new_instances", instances, mode="append", temporary=True)
            cur.execute(stage.insert)
            cur.adbc_ingest("attributes", attributes, mode="append")
            pg.commit()
        return time.perf_counter() - t0


def ingest_psycopg(uri: str, stage: Staging, new: list[pa.Table], first_iid: int) -> float:
    with psycopg.connect(uri) as pg:
        pg.execute(stage.create)
        t0 = time.perf_counter()
        for batch in new:
            instances, attributes = split(batch, first_iid)
            first_iid += batch.num_rows
            pg.execute("TRUNCATE new_instances")
            _copy(pg, "new_instances", instances)
            pg.execute(stage.insert)
            _copy(pg, "attributes", attributes)
            pg.commit()
        return time.perf_counter() - t0


def _copy(pg: psycopg.Connection[Any], table: str, rows: pa.Table) -> None:
    names = ", ".join(f'"{n}"' for n in rows.column_names)
    with pg.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in zip(*(c.to_pylist() for c in rows.columns), strict=True):
            copy.write_row(row)


def _forget(uri: str, first_iid: int) -> None:
    with psycopg.connect(uri) as pg:
        pg.execute("DELETE FROM attributes WHERE iid >= %s", (first_iid,))
        pg.execute("DELETE FROM instances WHERE iid >= %s", (first_iid,))


class Picks:
    """The same random query values for both sides."""

    def __init__(self, index: Index) -> None:
        con = index.connection()
        self.rng = np.random.default_rng(3)
        self.studies = [
            r[0]
            for r in con.sql(
                "SELECT study_instance_uid FROM studies USING SAMPLE 200 ROWS"
            ).fetchall()
        ]
        mr = [
            r[0]
            for r in con.sql(
                "SELECT study_instance_uid FROM studies WHERE "
                "list_contains(modalities_in_study, 'MR') USING SAMPLE 20 ROWS"
            ).fetchall()
        ]
        self.echo = [
            (
                s,
                con.execute(
                    "SELECT a.value FROM attributes a JOIN instances i USING (iid) "
                    "WHERE i.study_instance_uid = ? AND a.tag = ? LIMIT 1",
                    [s, ECHO_TIME],
                ).fetchall()[0][0],
            )
            for s in mr
        ]

    def one(self, seq: Any) -> Any:
        return seq[int(self.rng.integers(0, len(seq)))]

    def name(self) -> tuple[str, str]:
        return self.one(FAMILY)[:3], self.one(GIVEN)[0]

    def quarter(self) -> tuple[str, str]:
        year = int(self.rng.integers(2015, 2025))
        return f"{year}0101", f"{year}0331"


def embedded_queries(index: Index, p: Picks) -> dict[str, Callable[[], int]]:
    def study_name() -> int:
        family, given = p.name()
        return len(
            index.find(
                "study",
                {"PatientName": f"{family}*^{given}*"},
                ["StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"],
            )
        )

    def study_date() -> int:
        lo, hi = p.quarter()
        return len(
            index.find(
                "study",
                {"StudyDate": f"{lo}-{hi}", "ModalitiesInStudy": p.one(list(MODALITIES))},
                ["PatientName", "NumberOfStudyRelatedSeries"],
                limit=500,
            )
        )

    def series() -> int:
        return len(
            index.find(
                "series",
                {"StudyInstanceUID": p.one(p.studies)},
                ["Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"],
            )
        )

    def echo() -> int:
        study, value = p.one(p.echo)
        return len(
            index.find(
                "image",
                {"StudyInstanceUID": study, "EchoTime": value},
                ["InstanceNumber", "RepetitionTime"],
            )
        )

    def private() -> int:
        value = str(int(p.rng.integers(0, 1000)))
        return len(
            index.find("image", {"00191001": value, "Modality": "MR"}, ["EchoTime"], limit=1000)
        )

    def count() -> int:
        return int(index.count("image", {"EchoTime": f"{p.rng.uniform(2, 120):.2f}"}))

    return dict(zip(QUERIES, (study_name, study_date, series, echo, private, count), strict=True))


_FETCH = "SELECT iid, tag, value FROM attributes WHERE iid = ANY(%s) AND parent = '' AND tag = %s"
_IMAGE_ORDER = (
    "ORDER BY i.study_instance_uid, i.series_instance_uid, i.instance_number, i.sop_instance_uid"
)


def postgres_queries(pg: psycopg.Connection[Any], p: Picks) -> dict[str, Callable[[], int]]:
    def rows(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return pg.execute(sql, params, prepare=True).fetchall()

    def study_name() -> int:
        family, given = p.name()
        return len(
            rows(
                "SELECT s.rep_iid, s.study_instance_uid, s.patient_name, s.study_date, "
                "s.modalities_in_study, s.number_of_study_related_instances FROM studies s "
                "WHERE (s.patient_name LIKE %s OR (strpos(s.patient_name, '=') > 0 AND "
                "s.patient_name ~ %s)) ORDER BY s.study_instance_uid",
                (f"{family}%^{given}%", f"^(?:[^=]*=)*{family}.*\\^{given}.*(?:=.*)?$"),
            )
        )

    def study_date() -> int:
        lo, hi = p.quarter()
        return len(
            rows(
                "SELECT s.rep_iid, s.study_instance_uid, s.study_date, s.modalities_in_study, "
                "s.patient_name, s.number_of_study_related_series FROM studies s "
                "WHERE s.study_date >= %s::date AND s.study_date <= %s::date AND EXISTS "
                "(SELECT 1 FROM unnest(s.modalities_in_study) m WHERE m LIKE %s) "
                "ORDER BY s.study_instance_uid LIMIT 500",
                (lo, hi, p.one(list(MODALITIES))),
            )
        )

    def series() -> int:
        return len(
            rows(
                "SELECT se.rep_iid, se.series_instance_uid, s.study_instance_uid, se.modality, "
                "se.series_number, se.number_of_series_related_instances FROM series se "
                "JOIN studies s ON se.study_instance_uid = s.study_instance_uid "
                "WHERE s.study_instance_uid = %s "
                "ORDER BY se.series_instance_uid",
                (p.one(p.studies),),
            )
        )

    def echo() -> int:
        study, value = p.one(p.echo)
        found = rows(
            "SELECT i.iid, i.sop_instance_uid, i.instance_number FROM instances i "
            "WHERE i.study_instance_uid = %s AND i.iid IN (SELECT a.iid FROM attributes a "
            f"WHERE a.parent = '' AND a.tag = %s AND a.num = %s) {_IMAGE_ORDER}",
            (study, ECHO_TIME, float(value)),
        )
        rows(_FETCH, ([r[0] for r in found], REPETITION_TIME))
        return len(found)

    def private() -> int:
        found = rows(
            "SELECT i.iid, i.sop_instance_uid FROM instances i WHERE i.modality = %s AND i.iid "
            "IN (SELECT a.iid FROM attributes a WHERE a.parent = '' AND a.tag = %s AND "
            f"a.value = %s) {_IMAGE_ORDER} LIMIT 1000",
            ("MR", PRIVATE, str(int(p.rng.integers(0, 1000)))),
        )
        rows(_FETCH, ([r[0] for r in found], ECHO_TIME))
        return len(found)

    def count() -> int:
        return int(
            rows(
                "SELECT count(*) FROM instances i WHERE i.iid IN (SELECT a.iid FROM attributes a "
                "WHERE a.parent = '' AND a.tag = %s AND a.num = %s)",
                (ECHO_TIME, round(float(p.rng.uniform(2, 120)), 2)),
            )[0][0]
        )

    return dict(zip(QUERIES, (study_name, study_date, series, echo, private, count), strict=True))


def compare_ingest(index: Index, uri: str, layout: Any, args: argparse.Namespace) -> None:
    gen = np.random.default_rng(5)
    first = args.instances
    new = [
        generate(layout, first + b * args.batch, first + (b + 1) * args.batch, gen)
        for b in range(args.batches)
    ]
    n, iid = args.batches * args.batch, args.instances + 10_000_000
    duck_s = ingest_embedded(index, new)
    stage = Staging(index, new[0].schema)
    adbc_s = ingest_adbc(uri, stage, new, iid)
    _forget(uri, iid)
    psycopg_s = ingest_psycopg(uri, stage, new, iid)
    print(f"ingest, {args.batches} durable commits of {args.batch} instances (dedupe by UID):")
    sides = (("embedded DuckDB", duck_s), ("PostgreSQL ADBC", adbc_s),
             ("PostgreSQL psycopg", psycopg_s))  # fmt: skip
    for name, secs in sides:
        ratio = "" if secs is duck_s else f"  {duck_s / secs:.2f}x embedded  [target >= 0.7x]"
        per_commit = secs / args.batches * 1000
        print(f"  {name:<18} {n / secs:>8,.0f} inst/s  {per_commit:6.1f} ms/commit{ratio}")


def compare_queries(index: Index, uri: str, runs: int) -> None:
    picks = Picks(index)
    with psycopg.connect(uri, autocommit=True) as pg:
        ours, theirs = embedded_queries(index, picks), postgres_queries(pg, picks)
        print(f"{'query':<48} {'DuckDB p50/p95':>16} {'PostgreSQL p50/p95':>20}  [p95 < 50 ms]")
        for name, fn in ours.items():
            fn()
            d50, d95, _ = timed(fn, runs)
            theirs[name]()
            p50, p95, _ = timed(theirs[name], runs)
            flag = "ok" if p95 < 50 else "MISSED"
            print(f"{name:<48} {d50:7.1f} /{d95:7.1f} {p50:9.1f} /{p95:8.1f}  {flag}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--batches", type=int, default=40, help="serve-sized batches to ingest")
    ap.add_argument("--batch", type=int, default=512, help="instances per serve-sized batch")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per query")
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    data = Path(tempfile.mkdtemp(prefix="bench-pg-index-"))
    layout = plan(args.instances + args.batches * args.batch, np.random.default_rng(1))
    try:
        index = Index.open(data)
        index_all(index, batches(layout, args.instances, 100_000, 2))
        duck_bytes = sum(f.stat().st_size for f in data.glob("index.duckdb*"))
        print(f"synthetic archive: {args.instances:,} instances, {layout.n_studies:,} studies")
        with pg_cluster() as uri:
            pg_bytes = load_postgres(index, uri)
            each = args.instances
            print(
                f"size: PostgreSQL {pg_bytes / 1e6:,.0f} MB ({pg_bytes / each:,.0f} B/instance), "
                f"DuckDB {duck_bytes / 1e6:,.0f} MB ({duck_bytes / each:,.0f} B/instance)"
            )
            compare_ingest(index, uri, layout, args)
            compare_queries(index, uri, args.runs)
        index.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
