"""The product's PostgreSQL index beside the embedded one, side by side in one run (issue 26).

Where ``bench_pg_index.py`` measured PostgreSQL before the backend existed, this measures the
backend itself (``duckpacs.index.pg.db.PgIndex``) through the same calls ``serve`` makes:

1. **Commits as serve's committer makes them**: batches of 512 new instances into an index
   that already holds N instances (the synthetic archive of ``bench_index.py``),
   ``Index.add_batch`` against ``PgIndex.add_batch`` (DuckDB converts the Arrow batch in
   process, psycopg's COPY carries the rows, one transaction with the dedupe by SOP Instance
   UID and the level tables). Target: at least 0.7x embedded.
2. **The C-FIND queries of bench_index** through ``find``/``count`` of each index (the product
   path, return keys included), p50/p95. Target: p95 under 50 ms at 1 M instances.
3. **serve end to end**: storescu (4 associations) of small MR instances to ``duckpacs serve``
   on each backend, until every one is findable.

The PostgreSQL side of the N instances is bulk-copied from the embedded tables with ADBC into
the tables ``PgIndex`` creates (as a move of an archive would), then the sequence is set and
the tables analysed. PostgreSQL is Debian's, in a temporary cluster (``bench_pg_index``'s).
Needs the dev extras.

    python bench/bench_pg_serve.py [--instances N] [--batches N] [--runs N] [--serve-files N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_index import batches, generate, index_all, plan, timed  # noqa: E402
from bench_pg_index import TABLES, Picks, database, embedded_queries, pg_cluster  # noqa: E402
from duckpacs.index import Index  # noqa: E402
from duckpacs.index.pg.connect import PgConfig  # noqa: E402
from duckpacs.index.pg.db import PgIndex  # noqa: E402

_ARROW = {
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "text": pa.string(),
    "date": pa.date32(),
    "time without time zone": pa.time64("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
    "double precision": pa.float64(),
    "ARRAY": pa.list_(pa.string()),
}


def _columns(cur: Any, table: str) -> dict[str, pa.DataType]:
    cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        (table,),
    )
    return {name: _ARROW[kind] for name, kind in cur.fetchall()}


def bulk_copy(index: Index, uri: str) -> None:
    """The embedded tables into the PostgreSQL index's own tables (ADBC, COPY BINARY)."""
    con = index.connection()
    with adbc.connect(uri) as pg, pg.cursor() as cur:
        for table in TABLES:
            types = _columns(cur, table)
            t0, rows = time.perf_counter(), 0
            for rb in con.sql(f"SELECT * FROM {table}").to_arrow_reader(200_000):
                data = pa.Table.from_batches([rb])
                data = data.cast(pa.schema([pa.field(n, types[n]) for n in data.column_names]))
                cur.adbc_ingest(table, data, mode="append")
                rows += rb.num_rows
            pg.commit()
            dt = time.perf_counter() - t0
            print(f"  bulk copy {table:<10} {rows:>12,} rows  {rows / dt:>10,.0f} rows/s")
        cur.execute("SELECT setval('dp_iid', (SELECT max(iid) FROM instances))")
        cur.execute("ANALYZE")
        pg.commit()


def compare_commits(index: Index, pg: PgIndex, layout: Any, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(5)
    first = args.instances
    new = [
        generate(layout, first + b * args.batch, first + (b + 1) * args.batch, rng)
        for b in range(args.batches)
    ]
    sides = {}
    for name, ix in (("embedded DuckDB", index), ("PostgreSQL (PgIndex)", pg)):
        t0 = time.perf_counter()
        for batch in new:
            ix.add_batch(batch)
        sides[name] = time.perf_counter() - t0
    n = args.batches * args.batch
    duck = sides["embedded DuckDB"]
    print(f"commits as serve makes them: {args.batches} x {args.batch} new instances")
    for name, secs in sides.items():
        ratio = "" if secs is duck else f"  {duck / secs:.2f}x embedded  [target >= 0.7x]"
        print(f"  {name:<22} {n / secs:>8,.0f} inst/s  {secs / args.batches * 1000:6.1f} "
              f"ms/commit{ratio}")  # fmt: skip


def compare_queries(index: Index, pg: PgIndex, runs: int) -> None:
    picks = Picks(index)
    ours, theirs = embedded_queries(index, picks), embedded_queries(pg, picks)  # type: ignore[arg-type]
    print(f"{'C-FIND through find()':<48} {'DuckDB p50/p95':>16} {'PostgreSQL p50/p95':>20}"
          "  [p95 < 50 ms]")  # fmt: skip
    for name, fn in ours.items():
        fn()
        d50, d95, _ = timed(fn, runs)
        theirs[name]()
        p50, p95, _ = timed(theirs[name], runs)
        flag = "ok" if p95 < 50 else "MISSED"
        print(f"{name:<48} {d50:7.1f} /{d95:7.1f} {p50:9.1f} /{p95:8.1f}  {flag}")


def _config(name: str, uri: str, s3: Any, node: str = "bench") -> str:
    text = "[dimse]\naccept_any = true\n"
    if name != "embedded DuckDB":
        text += f'[index]\nbackend = "postgres"\ndsn = "{uri}"\nnode = "{node}"\n'
    if name == "PostgreSQL + S3":
        text += (f'[store]\nbackend = "s3"\nendpoint = "{s3.endpoint}"\n'
                 f'bucket = "{s3.BUCKET}"\nprefix = "bench"\n')  # fmt: skip
    return text


def serve_ingest(root: Path, uri: str, files: int) -> None:
    """storescu to serve on each backend (embedded, PostgreSQL, PostgreSQL with packs on
    S3); instances per second until all are findable. With S3, a second node then
    retrieves the study through the bucket (C-GET), beside the receiving node's own C-GET."""
    from tests import crash_support as cs
    from tests.s3_support import S3Server

    study, paths = cs.write_study(root / "in", files, 77)
    results = {}
    s3 = S3Server()
    os.environ["AWS_ACCESS_KEY_ID"] = s3.ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = s3.SECRET_KEY
    try:
        for name in ("embedded DuckDB", "PostgreSQL", "PostgreSQL + S3"):
            data = root / name.replace(" ", "-")
            data.mkdir()
            (data / "duckpacs.toml").write_text(_config(name, uri, s3))
            if name == "PostgreSQL + S3":  # a fresh index: the same UIDs arrive again
                uri = database(uri, f"bench_s3_{int(time.time() * 1000)}")
                (data / "duckpacs.toml").write_text(_config(name, uri, s3))
            server = cs.start_server(data)
            try:
                t0 = time.perf_counter()
                senders = [cs.storescu(server.dimse_port, paths[i::4]) for i in range(4)]
                acked = sum(len(cs.acknowledged(s.communicate(timeout=600)[0])) for s in senders)
                while len(cs.find_uids(server.dimse_port, study)) < acked:
                    time.sleep(0.05)
                results[name] = (acked, time.perf_counter() - t0)
                if name == "PostgreSQL + S3":
                    _cross_node_retrieval(root, uri, s3, server, study, acked)
            finally:
                server.stop()
    finally:
        s3.close()
    duck = results["embedded DuckDB"][0] / results["embedded DuckDB"][1]
    print(f"serve end to end: storescu x4 of {files} instances, until all are findable")
    for name, (acked, secs) in results.items():
        rate = acked / secs
        ratio = "" if name.startswith("embedded") else f"  {rate / duck:.2f}x embedded"
        print(f"  {name:<22} {rate:>8,.0f} inst/s ({acked} acknowledged){ratio}")


def _cross_node_retrieval(root: Path, uri: str, s3: Any, a: Any, study: str, n: int) -> None:
    """C-GET of the study from the node that received it (its own disk) and from a second
    node (ranged GETs from the bucket: cold, then with its cache warm)."""
    from tests import crash_support as cs

    data = root / "node-b"
    data.mkdir()
    (data / "duckpacs.toml").write_text(_config("PostgreSQL + S3", uri, s3, node="bench-b"))
    b = cs.start_server(data)
    try:
        deadline = time.monotonic() + 120
        while not _all_uploaded(root / "PostgreSQL-+-S3", s3):
            assert time.monotonic() < deadline, "node A did not upload"
            time.sleep(0.2)
        rows = []
        for label, port in (("receiving node (its disk)", a.dimse_port),
                            ("other node, cold (bucket)", b.dimse_port),
                            ("other node, warm cache", b.dimse_port)):  # fmt: skip
            t0 = time.perf_counter()
            got = len(cs.get_study(port, study))
            rows.append((label, got, time.perf_counter() - t0))
        print(f"C-GET of the whole study ({n} instances):")
        own = rows[0][1] / rows[0][2]
        for label, got, secs in rows:
            rate = got / secs
            print(f"  {label:<28} {rate:>8,.0f} inst/s ({got} received)  {rate / own:.2f}x")
    finally:
        b.stop()


def _all_uploaded(data: Path, s3: Any) -> bool:
    """Whether the bucket holds every byte of node A's packs (sealed and uploaded)."""
    local = sum(p.stat().st_size for p in (data / "store" / "packs").glob("*.dpk"))
    bucket = s3.root / s3.BUCKET / "bench" / "bench"
    remote = sum(p.stat().st_size for p in bucket.glob("*.dpk")) if bucket.exists() else 0
    return local > 0 and remote == local


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--batches", type=int, default=40, help="serve-sized commits")
    ap.add_argument("--batch", type=int, default=512, help="instances per commit")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per query")
    ap.add_argument("--serve-files", type=int, default=1000, help="0 skips the serve part")
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    root = Path(tempfile.mkdtemp(prefix="bench-pg-serve-"))
    layout = plan(args.instances + args.batches * args.batch, np.random.default_rng(1))
    try:
        index = Index.open(root / "embedded")
        index_all(index, batches(layout, args.instances, 100_000, 2))
        print(f"synthetic archive: {args.instances:,} instances, {layout.n_studies:,} studies")
        with pg_cluster() as uri:
            pg = PgIndex.open(PgConfig(dsn=uri, node="bench", statement_timeout_s=600))
            bulk_copy(index, uri)
            compare_commits(index, pg, layout, args)
            compare_queries(index, pg, args.runs)
            pg.close()
            index.close()
            if args.serve_files:
                with pg_cluster() as fresh:
                    serve_ingest(root / "serve", fresh, args.serve_files)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
