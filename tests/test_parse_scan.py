"""``_core.scan_headers``: batch header parsing in Rust, compared with pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from duckpacs import _core
from tests.corpus import pydicom_test_files


def test_scan_headers_matches_pydicom_uids() -> None:
    files = [p for p in pydicom_test_files() if p.suffix == ".dcm"][:40]
    rows = _core.scan_headers([str(p) for p in files], 2)
    assert len(rows) == len(files)
    checked = 0
    for path, row in zip(files, rows, strict=True):
        error, _ts, sop_class, sop_instance = row[0], row[1], row[2], row[3]
        if error is not None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "SOPInstanceUID" in ds:
            assert sop_instance == ds.SOPInstanceUID, path.name
            assert sop_class == ds.SOPClassUID, path.name
            checked += 1
        assert row[9] == path.stat().st_size
    assert checked >= 30


def test_scan_headers_reports_errors_per_file(tmp_path: Path) -> None:
    good = get_testdata_file("CT_small.dcm")
    assert good is not None
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x08\x00\x20\x00DA\xff\x00" + b"2004")
    rows = _core.scan_headers([str(tmp_path / "missing.dcm"), str(bad), str(good)], 1)
    assert rows[0][0] is not None and "missing.dcm" in rows[0][0]
    assert rows[1][0] is not None and "parse error" in rows[1][0]
    assert rows[2][0] is None and rows[2][7] == "CT"
