"""The Rust header batch builder (``duckpacs._core.index_batch``) against the pydicom one
(``tests/index_rows.py``), value for value, and the Rust batch through the whole index."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from duckpacs.index import BATCH_SCHEMA, Index, header_batch
from duckpacs.index.schema import KEY_ATTRIBUTES
from tests import index_truth as truth
from tests.corpus import shared_present
from tests.index_rows import ARROW_BATCH_SCHEMA, build_batch

BINARY_FLOATS = {"FL", "FD"}


def _entries(rows: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    return {(e["parent"], e["tag"], e["vm_index"]): e for e in rows}


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file, pydicom row, Rust row) for every file both builders read."""
    out = []
    for path in truth.pydicom_files() + truth.corpus_files():
        ds = truth.read(path)
        if ds is None:
            continue
        with open(path, "rb") as f:
            batch = header_batch([f.read()])
        if batch.num_rows != 1:
            continue
        py_row = build_batch([(ds, None)]).to_pylist()[0]
        rust_row = pa.table(batch).to_pylist()[0]
        out.append((os.path.basename(path), py_row, rust_row))
    return out


def test_rust_batch_has_the_contract_schema() -> None:
    """Field for field, nullability included (Arrow), and as DuckDB reads it: the types
    Index.add_batch casts to are the ones the batch already has."""
    with open(truth.pydicom_files()[0], "rb") as f:
        batch = header_batch([f.read()])
    assert pa.table(batch).schema.equals(ARROW_BATCH_SCHEMA)
    con = duckdb.connect()
    scanned = con.from_arrow(batch)
    assert scanned.columns == [f.name for f in BATCH_SCHEMA]
    declared = con.sql(
        "SELECT " + ", ".join(f'NULL::{f.type} AS "{f.name}"' for f in BATCH_SCHEMA)
    ).types
    assert scanned.types == declared


def test_both_builders_read_the_corpus(
    pairs: list[tuple[str, dict[str, Any], dict[str, Any]]],
) -> None:
    files = truth.pydicom_files() + truth.corpus_files()
    readable = [p for p in files if truth.read(p) is not None]
    assert len(pairs) >= len(readable) - 2  # rtplan_truncated.dcm is rejected by Rust: right


def test_key_columns_agree(pairs: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    for name, py_row, rust_row in pairs:
        for key in KEY_ATTRIBUTES:
            assert rust_row[key.column] == py_row[key.column], (name, key.keyword)


def test_every_value_agrees(pairs: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """Same entries (parent, tag, value index) and values; the VR may differ only where
    pydicom knew a private dictionary the parser has not (Rust then says UN)."""
    checked = 0
    for name, py_row, rust_row in pairs:
        py_entries, rust_entries = _entries(py_row["attrs"]), _entries(rust_row["attrs"])
        rust_un = any(e["vr"] == "UN" for e in rust_row["attrs"])
        missing = set(py_entries) - set(rust_entries)
        if not rust_un:
            assert not missing, (name, sorted(missing)[:5])
        for key, want in py_entries.items():
            got = rust_entries.get(key)
            if got is None:
                continue
            if got["vr"] != want["vr"]:
                assert got["vr"] == "UN" and (key[1] >> 16) % 2 == 1 or rust_un, (name, key)
                continue
            checked += 1
            if want["vr"] in BINARY_FLOATS:
                assert got["num"] == pytest.approx(want["num"]), (name, key)
            else:
                assert (got["value"], got["num"]) == (want["value"], want["num"]), (name, key)
            assert got["creator"] == want["creator"], (name, key)
    # pydicom's own files give about 7,000 values, the synthetic ones 4,000 more; the Agfa and
    # Toshiba files of the shared corpus, when present, 28,000 more.
    assert checked > (35_000 if shared_present() else 10_000)


def test_extras_and_errors_travel(tmp_path: Path) -> None:
    with open(truth.pydicom_files()[0], "rb") as f:
        good = f.read()
    when = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)
    extra = {
        "pack": 5,
        "offset": 77,
        "length": 10,
        "sha256": "ab" * 32,
        "size": len(good),
        "received_at": when,
        "source_ae": "CT1",
    }
    batch = header_batch([b"\x08\x00\x18\x00UI\xff\x7f", good], [{}, extra])
    assert batch.num_rows == 1 and batch.errors[0][0] == 0
    assert "byte" in batch.errors[0][1]
    row = pa.table(batch).to_pylist()[0]
    assert (row["pack"], row["offset"], row["length"], row["source_ae"]) == (5, 77, 10, "CT1")
    assert row["received_at"] == when


def test_index_fed_by_rust_answers_like_index_fed_by_pydicom(tmp_path: Path) -> None:
    records = truth.load(truth.pydicom_files())
    buffers = []
    for r in records:
        with open(r.ds.filename, "rb") as f:
            buffers.append(f.read())
    rust = Index.open(tmp_path / "rust")
    rust.add_batch(header_batch(buffers, [r.extra for r in records]))
    python = Index.open(tmp_path / "python")
    python.add_batch(build_batch((r.ds, r.extra) for r in records))
    queries = [
        ("study", {"PatientName": "*"}, ["ModalitiesInStudy", "StudyDate"]),
        ("image", {"PatientName": "山田*"}, ["SOPClassUID"]),
        ("series", {"Modality": "MR"}, ["NumberOfSeriesRelatedInstances"]),
        ("image", {"EchoTime": ""}, ["ImageType"]),
    ]
    for level, query, keys in queries:
        assert rust.find(level, query, keys) == python.find(level, query, keys), query
    # rtplan_truncated.dcm shares its SOP Instance UID with rtplan.dcm and only pydicom reads
    # it, so the two indexes keep different copies of that one instance: compare the UIDs.
    assert {loc[0] for loc in rust.locations("study", {})} == {
        loc[0] for loc in python.locations("study", {})
    }
