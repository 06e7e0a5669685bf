"""Several machines, one archive (issue 26): side by side in one run, on one temporary
PostgreSQL cluster (Debian's, as ``bench_pg_index.py`` starts it).

1. **Sizing**: bytes per instance of the PostgreSQL index (``pg_total_relation_size`` of its
   tables, indexes included) after ``PgIndex.add_batch`` of the synthetic instances of
   ``bench_index.py`` in serve-sized commits; and, when the shared corpus is present, after
   ``duckpacs import`` of the real Toshiba MR series, with the bytes its packs take (what a
   node uploads to S3).
2. **Orthanc with its PostgreSQL plugin** (Debian's ``orthanc-postgresql``, installed with
   apt-get when missing; its index in a database of its own on the same cluster) against a
   duckpacs node on PostgreSQL: storescu of the same files over the same number of
   associations, then study-level C-FIND latency by DCMTK ``findscu`` (p50/p95), queries
   interleaved between the two.
3. **Two duckpacs nodes against one** on one PostgreSQL index: the same storescu
   associations, spread over both nodes; aggregate rate until every instance is in the
   index. Both nodes share this machine's CPUs, so this measures contention on one box, not
   what a second machine adds (docs/CLUSTER.md has the model).

DCMTK and Orthanc run with TCP_NODELAY=1 (FACTS.md section 1). Needs the dev extras.

    python bench/bench_cluster.py [--studies N] [--per-study N] [--associations N]
                                  [--finds N] [--sizing-instances N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import crash_support as cs  # noqa: E402
from tests.cluster_support import configure_node, serve_nodes  # noqa: E402
from tests.corpus import locate_shared_corpus  # noqa: E402
from tests.dimse_support import dcmtk_tool  # noqa: E402
from tests.interop.orthanc import Orthanc, orthanc_binary, run_orthanc  # noqa: E402

from bench_index import EXPLICIT_LE, generate, plan  # noqa: E402
from bench_pg_index import TABLES, database, pg_cluster  # noqa: E402
from duckpacs.archive import part10  # noqa: E402
from duckpacs.index import header_batch  # noqa: E402
from duckpacs.index.pg.connect import PgConfig  # noqa: E402
from duckpacs.index.pg.db import PgIndex  # noqa: E402

PLUGIN = "/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"
SCU = "BENCHSCU"
ENV = {**os.environ, "TCP_NODELAY": "1"}


def _one(con: psycopg.Connection, sql: str, *params: object) -> int:
    row = con.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def database_bytes(uri: str, name: str) -> int:
    with psycopg.connect(uri, autocommit=True) as con:
        return _one(con, "SELECT pg_database_size(%s)", name)


def index_bytes(uri: str) -> tuple[int, dict[str, int]]:
    """(instances, bytes per table with its indexes and TOAST) of the index at ``uri``."""
    with psycopg.connect(uri, autocommit=True) as con:
        con.execute("VACUUM ANALYZE")
        sizes = {
            t: _one(con, "SELECT pg_total_relation_size(%s)", t) for t in (*TABLES, "store_marks")
        }
        sizes["(attribute rows)"] = _one(con, "SELECT count(*) FROM attributes")
        return _one(con, "SELECT count(*) FROM instances"), sizes


def print_sizes(label: str, n: int, sizes: dict[str, int]) -> None:
    rows = sizes.pop("(attribute rows)")
    total = sum(sizes.values())
    print(f"  {label}: {n:,} instances, {rows / max(n, 1):.0f} attribute rows each")
    for table, size in sizes.items():
        print(f"    {table:<12} {size / 1e6:9.1f} MB  {size / max(n, 1):8,.0f} B/instance")
    print(f"    {'total':<12} {total / 1e6:9.1f} MB  {total / max(n, 1):8,.0f} B/instance")


class TimedPgIndex(PgIndex):
    """PgIndex that adds up the time of its write transactions: from taking the advisory
    write lock to the commit, the part of a commit every node of a cluster queues for."""

    locked_s = 0.0

    def _write(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        t0 = time.perf_counter()
        try:
            return super()._write(*args, **kwargs)
        finally:
            self.locked_s += time.perf_counter() - t0


def commit_time(dsn: str, batches: list[Any], warm_up: Any = None) -> tuple[float, float]:
    """Mean milliseconds of ``PgIndex.add_batch`` over ``batches`` (serve's commits), and
    of the part under the write lock."""
    pg = cast(
        TimedPgIndex, TimedPgIndex.open(PgConfig(dsn=dsn, node="bench", statement_timeout_s=600))
    )
    try:
        if warm_up is not None:
            pg.add_batch(warm_up)
        pg.locked_s = 0.0
        t0 = time.perf_counter()
        for batch in batches:
            pg.add_batch(batch)
        whole = (time.perf_counter() - t0) * 1000 / len(batches)
        return whole, pg.locked_s * 1000 / len(batches)
    finally:
        pg.close()


def real_batch(series: Path, start: int, stop: int) -> Any:
    """The header batch serve would commit for files ``start:stop`` of ``series``."""
    datasets, extras = [], []
    for i, path in enumerate(sorted(series.glob("*.dcm"))[start:stop]):
        data = path.read_bytes()
        framing = part10.split(data)
        datasets.append(data[framing.dataset_offset :])
        extras.append({"pack": 1, "offset": i, "length": len(datasets[-1]),
                       "transfer_syntax": framing.transfer_syntax})  # fmt: skip
    return header_batch(datasets, extras, transfer_syntax=EXPLICIT_LE)


def sizing(root: Path, uri: str, instances: int) -> None:
    print("1. sizing: PostgreSQL bytes per instance (tables + indexes), S3 bytes per instance")
    dsn = database(uri, "sizing")
    layout = plan(instances + 20 * 8, np.random.default_rng(1))
    rng = np.random.default_rng(5)
    batches = [generate(layout, i, min(i + 512, instances), rng) for i in range(0, instances, 512)]
    commit_ms = commit_time(dsn, batches)
    print_sizes("synthetic headers (bench_index)", *index_bytes(dsn))
    print(f"    PgIndex.add_batch of 512 (serve's commit): {commit_ms[0]:.0f} ms each, "
          f"{commit_ms[1]:.0f} ms of it under the write lock")  # fmt: skip
    # serve also commits every 0.25 s whatever it holds: the fixed part of a commit.
    small = [generate(layout, i, i + 8, rng) for i in range(instances, instances + 20 * 8, 8)]
    small_ms = commit_time(dsn, small)
    print(f"    PgIndex.add_batch of 8 (a quiet node's commit): {small_ms[0]:.0f} ms each, "
          f"{small_ms[1]:.0f} ms of it under the write lock")  # fmt: skip
    series = locate_shared_corpus(os.environ) / "mr_toshiba_dti"
    if not series.is_dir():
        print("  real MR series: shared corpus absent, skipped")
        return
    real_ms = commit_time(
        database(uri, "commit_real"), [real_batch(series, 8, 520)], real_batch(series, 0, 8)
    )
    print(f"  PgIndex.add_batch of 512 real MR headers: {real_ms[0]:.0f} ms, "
          f"{real_ms[1]:.0f} ms of it under the write lock")  # fmt: skip
    data = root / "sizing-real"
    real = database(uri, "sizing_real")
    configure_node(data, real, "bench")
    run = cs.duckpacs("import", "--data", str(data), str(series))
    assert run.returncode == 0, run.stdout + run.stderr
    n, sizes = index_bytes(real)
    print_sizes("Toshiba MR series (duckpacs import)", n, sizes)
    raw = sum(p.stat().st_size for p in series.glob("*.dcm"))
    packs = sum(p.stat().st_size for p in (data / "store").rglob("*.dpk"))
    print(f"    packs (= S3 objects): {packs / n:,.0f} B/instance, "
          f"{raw / packs:.1f}x smaller than the {raw / n:,.0f} B files")  # fmt: skip


def corpus(root: Path, studies: int, per_study: int) -> tuple[list[str], list[Path]]:
    """``studies`` synthetic MR studies (crash_support's generator), one patient each."""
    uids, files = [], []
    for i in range(studies):
        study, paths = cs.write_study(root / f"s{i:03d}", per_study, 9000 + i)
        uids.append(study)
        files += paths
    return uids, files


def storescu(port: int, aet: str, files: list[Path], associations: int) -> float:
    """storescu over ``associations`` at once (files dealt round robin); seconds taken.
    Fails unless every file was acknowledged."""
    t0 = time.perf_counter()
    senders = [
        subprocess.Popen(
            [
                dcmtk_tool("storescu"),
                "-v",
                "-aet",
                SCU,
                "-aec",
                aet,
                "127.0.0.1",
                str(port),
                *map(str, files[i::associations]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )  # fmt: skip
        for i in range(associations)
    ]
    acked = sum(len(cs.acknowledged(s.communicate(timeout=1800)[0])) for s in senders)
    assert acked == len(files), f"{acked} of {len(files)} acknowledged by {aet}"
    return time.perf_counter() - t0


def wait_indexed(dsn: str, n: int, t0: float) -> float:
    """Seconds from ``t0`` until the index at ``dsn`` holds ``n`` instances."""
    with psycopg.connect(dsn, autocommit=True) as con:
        while True:
            row = con.execute("SELECT count(*) FROM instances").fetchone()
            if row is not None and int(row[0]) >= n:
                return time.perf_counter() - t0
            time.sleep(0.02)


def find_queries(uids: list[str]) -> dict[str, list[str]]:
    """Study-level C-FIND identifiers (findscu -k keys), with the same return keys."""
    keys = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "PatientID",
            "StudyDate", "NumberOfStudyRelatedInstances"]  # fmt: skip

    def q(*match: str) -> list[str]:
        named = {m.split("=")[0] for m in match}
        return [*match, *[k for k in keys if k.split("=")[0] not in named]]

    return {
        "PatientName wildcard (CRASH^TEST900*)": q("PatientName=CRASH^TEST900*"),
        "StudyInstanceUID (one study)": q(f"StudyInstanceUID={uids[len(uids) // 2]}"),
        "PatientID (one patient)": q("PatientID=CR9001"),
        "StudyDate range, all studies": q("StudyDate=20240101-20240131"),
    }


def findscu(port: int, aet: str, keys: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [dcmtk_tool("findscu"), "-S", "-aet", SCU, "-aec", aet,
         *[a for k in keys for a in ("-k", k)], "127.0.0.1", str(port)],
        check=True, capture_output=True, env=ENV, timeout=60,
    )  # fmt: skip
    return (time.perf_counter() - t0) * 1000


def percentiles(ms: list[float]) -> tuple[float, float]:
    ordered = sorted(ms)
    return statistics.median(ordered), ordered[max(0, round(0.95 * len(ordered)) - 1)]


def ensure_plugin() -> bool:
    """Debian's orthanc-postgresql, installed with apt-get when missing (and root)."""
    if os.path.exists(PLUGIN):
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq",
                                               "orthanc-postgresql"]):  # fmt: skip
        subprocess.run(cmd, env=env, capture_output=True)
    return os.path.exists(PLUGIN)


@contextlib.contextmanager
def orthanc_on_postgres(root: Path, dsn: str) -> Iterator[Orthanc]:
    host_port, name = dsn.rsplit("@", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    options = {
        "Plugins": [PLUGIN],
        "PostgreSQL": {"EnableIndex": True, "EnableStorage": False, "Host": host,
                       "Port": int(port), "Database": name, "Username": "bench",
                       "Password": "", "Lock": False},
    }  # fmt: skip
    with run_orthanc(root, {"bench": (SCU, "127.0.0.1", 1)}, options=options) as orthanc:
        yield orthanc


def against_orthanc(
    root: Path, uri: str, uids: list[str], files: list[Path], args: argparse.Namespace
) -> None:
    print(f"2. duckpacs node against Orthanc {orthanc_version()} + orthanc-postgresql, both")
    print(f"   indexing into PostgreSQL: storescu x{args.associations}, {len(files)} files")
    if orthanc_binary() is None or not ensure_plugin():
        print("  Orthanc or orthanc-postgresql missing and not installable: skipped")
        return
    ours_dsn = database(uri, "ours")
    configure_node(root / "ours", ours_dsn, "bench")
    server = cs.start_server(root / "ours")
    try:
        with orthanc_on_postgres(root / "orthanc", database(uri, "orthanc")) as orthanc:
            t0 = time.perf_counter()
            acked = storescu(server.dimse_port, "DUCKPACS", files, args.associations)
            ours = wait_indexed(ours_dsn, len(files), t0)
            theirs = storescu(orthanc.dicom_port, orthanc.aet, files, args.associations)
            n, base = len(files), database_bytes(uri, "template1")
            print(f"  {'ingest':<38} {'duckpacs':>13} {'Orthanc':>13}  duckpacs/Orthanc")
            for label, secs in (("until acknowledged", acked), ("until findable", ours)):
                print(f"  {'inst/s ' + label:<38} {n / secs:>13,.0f} {n / theirs:>13,.0f}  "
                      f"{theirs / secs:.2f}x")  # fmt: skip
            mine_b, peer_b = database_bytes(uri, "ours"), database_bytes(uri, "orthanc")
            print(f"  {'PostgreSQL bytes/instance, above empty':<38} "
                  f"{(mine_b - base) / n:>13,.0f} {(peer_b - base) / n:>13,.0f}")  # fmt: skip
            compare_finds(server.dimse_port, orthanc, uids, args.finds)
    finally:
        server.stop()


def compare_finds(port: int, orthanc: Orthanc, uids: list[str], runs: int) -> None:
    print(f"  {'study C-FIND by findscu, ms p50 / p95':<38} {'duckpacs':>13} {'Orthanc':>13}  "
          "Orthanc p95/ours")  # fmt: skip
    for name, keys in find_queries(uids).items():
        mine: list[float] = []
        peer: list[float] = []
        for _ in range(runs):  # interleaved, so drift hits both alike
            mine.append(findscu(port, "DUCKPACS", keys))
            peer.append(findscu(orthanc.dicom_port, orthanc.aet, keys))
        (m50, m95), (p50, p95) = percentiles(mine), percentiles(peer)
        print(f"  {name:<38} {m50:5.1f} /{m95:6.1f} {p50:5.1f} /{p95:6.1f}  {p95 / m95:.2f}x")


def orthanc_version() -> str:
    run = subprocess.run([orthanc_binary() or "Orthanc", "--version"], capture_output=True,
                         text=True)  # fmt: skip
    return run.stdout.split()[1] if run.returncode == 0 and run.stdout.split() else "?"


def two_nodes_against_one(root: Path, uri: str, files: list[Path], associations: int) -> None:
    print(f"3. two duckpacs nodes against one, one PostgreSQL index: storescu x{associations}, "
          f"{len(files)} files, until all are in the index")  # fmt: skip
    rates = {}
    for names in (["one"], ["a", "b"]):
        dsn = database(uri, f"nodes_{len(names)}")
        share = associations // len(names)
        with (
            serve_nodes(root / f"nodes-{len(names)}", dsn, "", names) as nodes,
            ThreadPoolExecutor(len(nodes)) as pool,
        ):
            t0 = time.perf_counter()
            sends = [
                pool.submit(storescu, n.dimse_port, "DUCKPACS", files[k :: len(nodes)], share)
                for k, n in enumerate(nodes)
            ]
            for send in sends:
                send.result()  # every file acknowledged
            secs = wait_indexed(dsn, len(files), t0)
        rates[len(names)] = len(files) / secs
        print(f"  {len(names)} node(s), {share} association(s) each: "
              f"{rates[len(names)]:>8,.0f} inst/s")  # fmt: skip
    print(f"  two nodes / one node: {rates[2] / rates[1]:.2f}x (same 2-CPU machine)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--per-study", type=int, default=100)
    ap.add_argument("--associations", type=int, default=4)
    ap.add_argument("--finds", type=int, default=20, help="runs of each C-FIND query")
    ap.add_argument("--sizing-instances", type=int, default=20_000)
    args = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        with pg_cluster() as uri:
            sizing(root, uri, args.sizing_instances)
            uids, files = corpus(root / "in", args.studies, args.per_study)
            against_orthanc(root, uri, uids, files, args)
            two_nodes_against_one(root, uri, files, args.associations)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
