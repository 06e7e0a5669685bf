"""The index file's life: dedupe in bulk, damaged or missing files, read-only SQL, reindex, and
the `duckpacs find` / `duckpacs sql` commands."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from pydicom.dataset import Dataset

from duckpacs.errors import ArchiveIndexError, ArchiveLockedError, QueryError
from duckpacs.index import Index, header_batch, schema
from duckpacs.index.reindex import from_epoch_us, rebuild
from tests import index_truth as truth
from tests.helpers import duckpacs_cmd
from tests.index_rows import ARROW_BATCH_SCHEMA, build_batch


@pytest.fixture(scope="module")
def records() -> list[truth.Record]:
    return truth.load(truth.pydicom_files())


@pytest.fixture(params=["duckdb", "postgres"])
def open_any(request: pytest.FixtureRequest) -> Callable[[Path], Any]:
    """Opens a new index of either backend (the tests written for both)."""
    if request.param == "duckdb":
        return Index.open
    cluster = request.getfixturevalue("pg_cluster")
    from duckpacs.index.pg.db import PgIndex

    return lambda _path: PgIndex.open(cluster.config())


def batch(records: list[truth.Record], **override: Any) -> pa.Table:
    return build_batch((r.ds, {**r.extra, **override}) for r in records)


def test_add_batch_dedupes_with_set_operations(
    tmp_path: Path, records: list[truth.Record], open_any: Callable[[Path], Any]
) -> None:
    ix = open_any(tmp_path)
    unique = len(truth.latest(records))
    first = ix.add_batch(batch(records))
    assert first["added"] == unique
    assert first["added"] + first["duplicates"] == len(records)
    again = ix.add_batch(batch(records))
    assert again == {
        "added": 0,
        "replaced": 0,
        "unchanged": unique,
        "duplicates": len(records) - unique,
        "rejected": 0,
    }
    changed = ix.add_batch(batch(records[:5], sha256="f" * 64, pack=9))
    assert changed["replaced"] == len({str(r.ds.SOPInstanceUID) for r in records[:5]})
    assert ix.stats()["instances"] == unique
    uid = str(records[0].ds.SOPInstanceUID)
    assert ix.locations("image", {"SOPInstanceUID": uid})[0][3] == 9
    ix.close()


def test_rows_without_sop_instance_uid_are_rejected(
    tmp_path: Path, open_any: Callable[[Path], Any]
) -> None:
    ds = Dataset()
    ds.PatientName = "No^Uid"
    with open_any(tmp_path) as ix:
        assert ix.add_batch(build_batch([(ds, None)]))["rejected"] == 1
        assert ix.stats()["instances"] == 0


def test_add_batch_accepts_the_arrow_pycapsule_interface(
    tmp_path: Path, records: list[truth.Record], open_any: Callable[[Path], Any]
) -> None:
    class Capsule:  # any producer exporting __arrow_c_stream__, as the Rust builder does
        def __init__(self, table: pa.Table) -> None:
            self.table = table

        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            return self.table.__arrow_c_stream__(requested_schema)

    with open_any(tmp_path) as ix:
        ix.add_batch(Capsule(batch(records[:10])))
        assert ix.stats()["instances"] == len(truth.latest(records[:10]))


def test_remove_recomputes_levels(
    tmp_path: Path, records: list[truth.Record], open_any: Callable[[Path], Any]
) -> None:
    with open_any(tmp_path) as ix:
        ix.add_batch(batch(records))
        before = ix.stats()
        uid = str(records[0].ds.SOPInstanceUID)
        assert ix.remove([uid]) == 1
        assert ix.find("image", {"SOPInstanceUID": uid}) == []
        assert ix.stats()["instances"] == before["instances"] - 1


def test_damaged_index_says_reindex(tmp_path: Path) -> None:
    (tmp_path / "index.duckdb").write_bytes(b"this is not a database" * 500)
    with pytest.raises(ArchiveIndexError, match="duckpacs reindex"):
        Index.open(tmp_path)


def test_missing_index_with_records_in_store_says_reindex(tmp_path: Path) -> None:
    (tmp_path / "store" / "packs").mkdir(parents=True)
    (tmp_path / "store" / "packs" / "w0-000001.dpk").write_bytes(b"x")
    with pytest.raises(ArchiveIndexError, match="duckpacs reindex"):
        Index.open(tmp_path)


def test_second_writer_process_is_refused(tmp_path: Path) -> None:
    with Index.open(tmp_path):
        code = f"from duckpacs.index import Index\nIndex.open({str(tmp_path)!r}, read_only=True)"
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode != 0
        assert ArchiveLockedError.__name__ in proc.stderr
    with Index.open(tmp_path, read_only=True) as ro:
        assert ro.read_only
        row = pa.Table.from_pylist([{"sop_instance_uid": "1.2"}], schema=ARROW_BATCH_SCHEMA)
        with pytest.raises(ArchiveIndexError, match="read-only"):
            ro.add_batch(row)


def test_sql_is_read_only_and_returns_rows(tmp_path: Path, records: list[truth.Record]) -> None:
    with Index.open(tmp_path) as ix:
        ix.add_batch(batch(records))
        table = ix.sql(
            "SELECT keyword, count(*) AS n FROM elements "
            "WHERE keyword = 'PatientAge' GROUP BY keyword"
        )
        want = sum(1 for r in truth.latest(records) if "PatientAge" in r.ds)
        assert table.to_pylist() == [{"keyword": "PatientAge", "n": want}]
        assert table.columns == ["keyword", "n"] and table.types == ["VARCHAR", "BIGINT"]
        for bad in (
            "DELETE FROM instances",
            "SELECT 1; DROP TABLE studies",
            "COPY instances TO 'x.csv'",
            "ATTACH 'x.db'",
        ):
            with pytest.raises(QueryError, match="only SELECT"):
                ix.sql(bad)
        with pytest.raises(QueryError):
            ix.sql("SELECT nonsense FROM nowhere")
        with pytest.raises(QueryError, match="disabled"):
            ix.sql("SELECT * FROM read_text('/etc/hostname')")
        # Files are written by a connection of their own; the query still runs on the index's.
        out = tmp_path / "out.csv"
        with pytest.raises(QueryError, match="disabled"):
            ix.export("SELECT * FROM read_text('/etc/hostname')", out, "csv")
        with pytest.raises(QueryError, match="only SELECT"):
            ix.export(f"COPY instances TO '{out}'", out, "csv")
        assert not out.exists()
        ix.export("SELECT keyword FROM elements WHERE keyword = 'PatientAge'", out, "csv")
        assert out.read_text().splitlines() == ["keyword"] + ["PatientAge"] * want


def _store_scan(records: list[truth.Record]) -> list[tuple[dict[str, Any], bytes]]:
    """What the store's scan yields: location/provenance and the header bytes."""
    out = []
    for r in records:
        buf = io.BytesIO()
        r.ds.save_as(buf, enforce_file_format=False)
        out.append((r.extra, buf.getvalue()))
    return out


def _snapshot(ix: Index) -> dict[str, list[Any]]:
    con = ix.connection()
    out: dict[str, list[Any]] = {}
    for name, key in (
        ("patients", "patient_id"),
        ("studies", "study_instance_uid"),
        ("series", "series_instance_uid"),
        ("instances", "sop_instance_uid"),
    ):
        out[name] = ix.sql(
            f"SELECT * EXCLUDE ({'iid' if name == 'instances' else 'rep_iid'}) "
            f"FROM {name} ORDER BY {key}"
        ).to_pylist()
    out["attributes"] = con.sql(
        "SELECT i.sop_instance_uid, a.* EXCLUDE (iid) FROM attributes a JOIN instances i "
        "USING (iid) ORDER BY ALL"
    ).fetchall()
    return out


def test_reindex_rebuilds_an_equal_index(tmp_path: Path, records: list[truth.Record]) -> None:
    scan = _store_scan(records)
    live = Index.open(tmp_path)  # fed as ingest would: batches of what the store holds
    for start in range(0, len(scan), 17):
        part = scan[start : start + 17]
        live.add_batch(header_batch([b for _, b in part], [extra for extra, _ in part]))
    want = _snapshot(live)
    live.close()
    (tmp_path / "index.duckdb").unlink()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "pack").write_bytes(b"x")
    with pytest.raises(ArchiveIndexError, match="reindex"):
        Index.open(tmp_path)
    stats = rebuild(tmp_path, iter(scan), batch_size=23)
    assert stats["instances"] == len(truth.latest(records))
    with Index.open(tmp_path) as again:
        assert _snapshot(again) == want


# -- the commands ------------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(duckpacs_cmd(*args), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, records: list[truth.Record]) -> Path:
    data = tmp_path_factory.mktemp("cli")
    with Index.open(data) as ix:
        ix.add_batch(batch(records))
    return data


def test_find_command_json(archive: Path) -> None:
    proc = run(
        "find",
        "--data",
        str(archive),
        "--level",
        "study",
        "PatientName=Lestrade*",
        "-r",
        "0010,0040",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows and all(r["PatientName"].startswith("Lestrade") for r in rows)
    assert "PatientSex" in rows[0] and "NumberOfStudyRelatedInstances" in rows[0]


def test_find_command_table_and_errors(archive: Path) -> None:
    proc = run("find", "--data", str(archive), "--level", "patient", "PatientName=山田*")
    assert proc.returncode == 0, proc.stderr
    assert "Yamada^Tarou=山田^太郎" in proc.stdout
    proc = run("find", "--data", str(archive), "Nonsense=1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("duckpacs: error: unknown attribute")
    assert "Traceback" not in proc.stderr


def test_sql_command_formats(archive: Path, tmp_path: Path) -> None:
    query = "SELECT modality, count(*) AS n FROM instances GROUP BY ALL ORDER BY ALL"
    proc = run("sql", "--data", str(archive), query, "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    lines = list(csv.reader(io.StringIO(proc.stdout)))
    assert lines[0] == ["modality", "n"] and len(lines) > 1
    by_modality = {m: int(n) for m, n in lines[1:]}
    proc = run("sql", "--data", str(archive), query, "--json")
    rows = json.loads(proc.stdout)
    assert {
        "modality": "MR",
        "n": sum(1 for r in rows if r["modality"] == "MR")
        and next(r["n"] for r in rows if r["modality"] == "MR"),
    } in rows
    out = tmp_path / "m.parquet"
    proc = run("sql", "--data", str(archive), query, "--format", "parquet", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    written = duckdb.sql(f"SELECT * FROM read_parquet('{out}')")
    assert written.columns == ["modality", "n"]
    assert {m or "": n for m, n in written.fetchall()} == by_modality  # CSV: NULL is empty
    proc = run("sql", "--data", str(archive), "DELETE FROM instances")
    assert proc.returncode == 1 and "only SELECT" in proc.stderr


def test_reindex_reads_bare_datasets_in_their_own_transfer_syntax(
    tmp_path: Path, records: list[truth.Record]
) -> None:
    """The store's scan gives each record's transfer syntax; DIMSE-received instances are bare
    datasets (no meta group), implicit or explicit VR, so each must be read in its own."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from duckpacs.index.reindex import store_records

    scan, live_headers, extras = [], [], []
    for i, r in enumerate(records):
        ts = str(r.ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in r.ds.file_meta else ""
        if ts not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):
            continue
        part10 = io.BytesIO()
        r.ds.save_as(part10, enforce_file_format=False)
        bare = DicomBytesIO()
        bare.is_little_endian, bare.is_implicit_VR = True, ts == "1.2.840.10008.1.2"
        write_dataset(bare, r.ds)
        assert bare.getvalue()[:2] != b"\x02\x00"  # no meta group: a bare dataset
        entry = {
            "location": (1, i, 10),
            "sha256": f"{i:064x}",
            "original_len": 10,
            "transfer_syntax": ts,
            "header": bare.getvalue(),
        }
        scan.append(entry)
        live_headers.append(part10.getvalue())
        extras.append(
            {
                "pack": 1,
                "offset": i,
                "length": 10,
                "sha256": f"{i:064x}",
                "size": 10,
                "transfer_syntax": ts,
            }
        )
    assert any(e["transfer_syntax"] == "1.2.840.10008.1.2" for e in scan)
    with Index.open(tmp_path / "live") as live:
        live.add_batch(header_batch(live_headers, extras))
        want = _snapshot(live)
    stats = rebuild(tmp_path / "rebuilt", store_records(iter(scan)))
    assert stats["skipped"] == 0
    with Index.open(tmp_path / "rebuilt") as again:
        assert _snapshot(again) == want


def test_reindex_command_rebuilds_from_the_real_store(
    tmp_path: Path, records: list[truth.Record]
) -> None:
    """Ingest as the server does (store.put, then a batch with the returned location), lose
    the index file, `duckpacs reindex`: every table comes back equal, including when and from
    which AE title each instance arrived (kept in the store's records)."""
    from duckpacs._core import Store

    data = tmp_path / "archive"
    files = sorted({str(r.ds.filename) for r in records})[:40]
    headers, extras = [], []
    live = Index.open(data)  # the server opens its index before it stores anything
    with Store.open(data / "store", writer_id=1) as store:
        for n, name in enumerate(files):
            with open(name, "rb") as f:
                raw = f.read()
            received_us = 1_790_000_000_000_000 + n * 1_000_003
            sender = f"MODALITY{n % 3}" if n % 2 else None  # files imported from disk have none
            location = store.put(raw, received_at_us=received_us, source_ae=sender)
            meta = store.meta(location)
            assert (meta["received_at_us"], meta["source_ae"]) == (received_us, sender)
            pack, offset, length = location
            headers.append(raw)
            extras.append(
                {
                    "pack": pack,
                    "offset": offset,
                    "length": length,
                    "sha256": meta["sha256"],
                    "size": meta["original_len"],
                    "transfer_syntax": meta["transfer_syntax"] or None,
                    "received_at": from_epoch_us(received_us),
                    "source_ae": sender,
                }
            )
    with live:
        live.add_batch(header_batch(headers, extras))
        want = _snapshot(live)
        assert want["instances"]
        provenance = live.sql("SELECT count(DISTINCT received_at), count(source_ae) FROM instances")
        distinct_times, with_sender = provenance.to_pylist()[0].values()
        assert distinct_times == len(want["instances"]) and 0 < with_sender < distinct_times
    (data / "index.duckdb").unlink()
    proc = run("find", "--data", str(data))
    assert proc.returncode == 1 and "duckpacs reindex" in proc.stderr
    proc = run("reindex", "--data", str(data), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["instances"] == len(want["instances"])
    with Index.open(data) as again:
        assert _snapshot(again) == want


def test_reindex_restores_when_and_from_whom_instances_arrived(tmp_path: Path) -> None:
    """An instance C-STOREd by an AE and one imported as a file, through the real archive
    facade; after losing the index, `duckpacs reindex` brings back received_at and source_ae
    exactly (the store's records keep them)."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from duckpacs.archive import Archive

    ct = dcmread(get_testdata_file("CT_small.dcm"))
    bare = DicomBytesIO()
    bare.is_little_endian, bare.is_implicit_VR = True, False
    write_dataset(bare, ct)
    mr_path = get_testdata_file("MR_small.dcm")
    data = tmp_path / "archive"
    archive = Archive.open(data)
    sent = archive.store(
        bare.getvalue(),
        "1.2.840.10008.1.2.1",
        calling_ae="CT_SCANNER",
        sop_class_uid=str(ct.SOPClassUID),
        sop_instance_uid=str(ct.SOPInstanceUID),
    )
    with open(mr_path, "rb") as f:
        imported = archive.store(f.read())
    assert sent.location and imported.location
    archive.flush()
    provenance = "SELECT sop_instance_uid, received_at, source_ae FROM instances ORDER BY 1"
    want = archive.index.sql(provenance).to_pylist()
    snapshot = _snapshot(archive.index)
    archive.close()
    senders = {r["sop_instance_uid"]: r["source_ae"] for r in want}
    assert senders == {
        str(ct.SOPInstanceUID): "CT_SCANNER",
        str(dcmread(mr_path).SOPInstanceUID): None,
    }
    assert all(r["received_at"] is not None for r in want)
    (data / "index.duckdb").unlink()
    proc = run("reindex", "--data", str(data), "--json")
    assert proc.returncode == 0, proc.stderr
    with Index.open(data) as again:
        assert again.sql(provenance).to_pylist() == want
        assert _snapshot(again) == snapshot


def test_version_1_index_is_migrated_to_the_current_schema(
    tmp_path: Path, records: list[truth.Record]
) -> None:
    """An index written by schema version 1 (no ART index on the SOP Instance UID) is brought
    to the current version when opened read-write, keeping its rows; read-only refuses."""
    import duckdb

    with Index.open(tmp_path) as ix:
        ix.add_batch(batch(records[:10]))
        rows = ix.stats()["instances"]
    con = duckdb.connect(str(tmp_path / "index.duckdb"))
    for statement in schema.DROP_INDEX_STATEMENTS:
        con.execute(statement)
    con.execute("DROP TABLE store_marks")  # version 3
    con.execute("UPDATE duckpacs_meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(ArchiveIndexError, match="needs migrating"):
        Index.open(tmp_path, read_only=True)
    with Index.open(tmp_path) as ix:
        indexes = ix.connection().execute("SELECT index_name FROM duckdb_indexes()").fetchall()
        assert {("instances_" + c,) for c in schema.INDEXED_COLUMNS} <= set(indexes)
        assert ix.stats()["instances"] == rows
        version = (
            ix.connection()
            .execute("SELECT value FROM duckpacs_meta WHERE key = 'schema_version'")
            .fetchall()
        )
        assert version == [(str(schema.SCHEMA_VERSION),)]
        assert ix.marks() == {}  # a migrated index reads every pack once at its first open


def test_key_attributes_match_the_data_dictionary() -> None:
    """The schema writes out each key attribute's tag and VR (so opening an index needs no
    data dictionary): they must be PS3.6's, as pydicom's dictionary has them."""
    from pydicom.datadict import dictionary_VR, keyword_for_tag

    for key in schema.KEY_ATTRIBUTES:
        assert keyword_for_tag(key.tag) == key.keyword
        assert dictionary_VR(key.tag).split(" or ")[0] == key.vr
