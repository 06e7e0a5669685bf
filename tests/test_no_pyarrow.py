"""The product runs without pyarrow (a test and benchmark dependency only): `duckpacs serve`
must stay small in memory, and `import pyarrow` + `pyarrow.compute` alone cost 47 MB of RSS.
The index hands Arrow batches to DuckDB through the PyCapsule interface and has DuckDB write
`duckpacs sql` files; these tests prove no command path reaches for pyarrow, though it is
installed here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.helpers import running_server

FILES = ("CT_small.dcm", "MR_small.dcm")

# Records every attempt to import pyarrow (even one a caller would catch), then runs the
# commands in this process, one after the other, as the `duckpacs` program would.
SCRIPT = """
import json, sys

attempts = []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pyarrow":
            attempts.append(name)
        return None

sys.meta_path.insert(0, Watch())
from duckpacs.cli.main import main

codes = [main(argv) for argv in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "attempts": attempts, "loaded": "pyarrow" in sys.modules}))
"""


def test_import_find_sql_reindex_stats_verify_never_import_pyarrow(tmp_path: Path) -> None:
    data, out = tmp_path / "archive", tmp_path / "out"
    out.mkdir()
    files = [str(get_testdata_file(name)) for name in FILES]
    query = "SELECT modality, count(*) AS n, min(received_at) AS first FROM instances GROUP BY 1"
    commands = [
        ["import", "--data", str(data), *files],
        ["find", "--data", str(data), "--level", "image", "EchoTime=*", "--json"],
        ["sql", "--data", str(data), query, "--format", "csv", "-o", str(out / "r.csv")],
        ["sql", "--data", str(data), query, "--format", "parquet", "-o", str(out / "r.parquet")],
        ["sql", "--data", str(data), query, "--json", "-o", str(out / "r.json")],
        ["sql", "--data", str(data), query, "--format", "table", "-o", str(out / "r.txt")],
        ["reindex", "--data", str(data)],
        ["stats", "--data", str(data)],
        ["verify", "--data", str(data)],
    ]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * len(commands), proc.stdout + proc.stderr
    assert report["attempts"] == [] and not report["loaded"]
    # ... and the round trip gave the right answers.
    modalities = sorted(str(dcmread(f, stop_before_pixels=True).Modality) for f in files)
    csv_lines = (out / "r.csv").read_text().splitlines()
    assert csv_lines[0] == "modality,n,first" and len(csv_lines) == 1 + len(modalities)
    parquet = duckdb.sql(f"SELECT modality, n FROM read_parquet('{out / 'r.parquet'}')")
    assert sorted(m for m, _ in parquet.fetchall()) == modalities
    assert sorted(r["modality"] for r in json.loads((out / "r.json").read_text())) == modalities
    assert "(2 rows)" in (out / "r.txt").read_text()


def test_the_postgresql_index_never_imports_pyarrow(tmp_path: Path, pg_cluster: Any) -> None:
    """The same commands on a PostgreSQL index: its ingest converts the Arrow batch with
    DuckDB and copies rows with psycopg, no Arrow library in Python either."""
    import os

    data, out = tmp_path / "archive", tmp_path / "out"
    out.mkdir()
    files = [str(get_testdata_file(name)) for name in FILES]
    query = "SELECT modality, count(*) AS n FROM instances GROUP BY 1"
    commands = [
        ["import", "--data", str(data), *files],
        ["find", "--data", str(data), "--level", "image", "EchoTime=*", "--json"],
        ["sql", "--data", str(data), query, "--format", "parquet", "-o", str(out / "r.parquet")],
        ["reindex", "--data", str(data)],
        ["stats", "--data", str(data)],
    ]
    env = {
        **os.environ,
        "DUCKPACS_INDEX_BACKEND": "postgres",
        "DUCKPACS_INDEX_DSN": pg_cluster.database(),
        "PGPASSWORD": pg_cluster.PASSWORD,
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(commands)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * len(commands), proc.stdout + proc.stderr
    assert report["attempts"] == [] and not report["loaded"]
    parquet = duckdb.sql(f"SELECT sum(n) FROM read_parquet('{out / 'r.parquet'}')")
    assert parquet.fetchall()[0][0] == len(files)


def _mapped_files(pid: int) -> set[str]:
    """Files mapped into process ``pid`` and its descendants (shared libraries included)."""
    pids, found = [pid], set()
    while pids:
        current = pids.pop()
        try:
            maps = Path(f"/proc/{current}/maps").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():  # any thread may spawn
                pids += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # gone meanwhile
            continue
        found |= {line.split()[-1] for line in maps.splitlines() if "/" in line}
    return found


def test_serve_never_loads_pyarrow(tmp_path: Path) -> None:
    """Ingest (STOW-RS into the index owner's add_batch) and queries (QIDO-RS) in a running
    server: no process of it has pyarrow's libraries mapped."""
    data = tmp_path / "archive"
    data.mkdir()
    with running_server(data) as server:
        client = DICOMwebClient(f"http://127.0.0.1:{server.http_port}/dicom-web")
        datasets = [dcmread(get_testdata_file(name)) for name in FILES]
        response = client.store_instances(datasets)
        assert len(response.ReferencedSOPSequence) == len(FILES)
        assert len(client.search_for_instances()) == len(FILES)
        mapped = _mapped_files(server.process.pid)
    assert any("duckdb" in f for f in mapped)  # the listing does see Python extensions
    # The archive's own files sit under tmp_path, whose name holds the word too.
    libraries = [f for f in mapped if not f.startswith(str(tmp_path))]
    assert not [f for f in libraries if "pyarrow" in f]
