"""``duckpacs dump FILE [--json]``: the human view, the DICOM JSON model and errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pydicom.data import get_charset_files, get_testdata_file

from duckpacs.cli.main import main


def _path(name: str) -> str:
    p = get_testdata_file(name)
    assert p is not None
    return str(p)


def test_dump_text_lists_elements_with_offsets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", _path("CT_small.dcm")]) == 0
    out = capsys.readouterr().out
    assert "(0010,0010) PN PatientName" in out
    assert "[CompressedSamples^CT1]" in out
    assert "(7FE0,0010) OW PixelData" in out and "<32768 bytes>" in out


def test_dump_json_is_dicom_json_without_bulk(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "--json", _path("CT_small.dcm")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["00100020"] == {"vr": "LO", "Value": ["1CT1"]}
    assert doc["7FE00010"] == {"vr": "OW"}


def test_dump_json_bulk_data_uri(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "--json", "--bulk-data-uri", "x:", _path("CT_small.dcm")]) == 0
    doc = json.loads(capsys.readouterr().out)
    uri = doc["7FE00010"]["BulkDataURI"]
    offset, length = uri[2:].split("/")
    data = Path(_path("CT_small.dcm")).read_bytes()
    assert len(data[int(offset) : int(offset) + int(length)]) == 32768


def test_dump_decodes_japanese_person_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", "--json", get_charset_files("chrH31.dcm")[0]]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]


def test_dump_reads_gzipped_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gz = tmp_path / "ct.dcm.gz"
    gz.write_bytes(gzip.compress(Path(_path("CT_small.dcm")).read_bytes()))
    assert main(["dump", str(gz)]) == 0
    assert "PatientName" in capsys.readouterr().out


def test_dump_truncated_file_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", _path("MR_truncated.dcm")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("duckpacs: error: ")
    assert "MR_truncated.dcm: DICOM parse error at byte 1488 in (7FE0,0010)" in err
    assert err.count("\n") == 1


def test_dump_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dump", "--help"])
    assert exc.value.code == 0
    assert "--json" in capsys.readouterr().out
