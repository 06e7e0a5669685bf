"""DICOMDIR media (PS3.10 8, PS3.11 STD-GEN-CD) read back by pydicom's FileSet and dcmdump."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from duckpacs.cli.main import main
from duckpacs.errors import StorageError
from duckpacs.export.dicomdir import check_file_id, read_back, write_dicomdir
from tests.helpers import dcmtk_env, require_tool

NAMES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_jpeg_gdcm.dcm", "liver_expb_1frame.dcm"]


def sources() -> list[Path]:
    return [Path(get_testdata_file(n)) for n in NAMES]


def test_media_layout_and_byte_exact_files(tmp_path: Path) -> None:
    srcs = sources()
    result = write_dicomdir(srcs, tmp_path / "cd", file_set_id="PATIENT_CD")
    assert not result.rejected
    assert len(result.files) == len(srcs)
    by_source = {Path(s): f for f, s in result.files}
    for src in srcs:
        file_id = by_source[src]
        parts = file_id.split("/")
        assert check_file_id(parts) is None and len(parts) <= 8
        assert (tmp_path / "cd" / file_id).read_bytes() == src.read_bytes()
    expected = sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in srcs)
    assert read_back(result.dicomdir) == expected
    ds = pydicom.dcmread(result.dicomdir)
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    assert ds.FileSetID == "PATIENT_CD"
    # JPEG Lossless and big endian files are kept as archived but flagged.
    flagged = {Path(dict(result.files)[f]).name for f, _ in result.outside_profile}
    assert flagged == {"SC_rgb_jpeg_gdcm.dcm", "liver_expb_1frame.dcm"}
    assert not result.conformant


@pytest.mark.interop
def test_dcmdump_reads_the_dicomdir(tmp_path: Path) -> None:
    dcmdump = require_tool("dcmdump")
    result = write_dicomdir(sources()[:2], tmp_path / "cd")
    assert result.conformant
    proc = subprocess.run(
        [dcmdump, str(result.dicomdir)], capture_output=True, text=True, env=dcmtk_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert "MediaStorageDirectoryStorage" in proc.stdout
    for file_id, _ in result.files:
        assert file_id.replace("/", "\\") in proc.stdout
    assert proc.stdout.count("DirectoryRecordType") == 2 * 4  # PATIENT STUDY SERIES IMAGE


def test_file_id_rules() -> None:
    assert check_file_id(["PT000000", "IM000001"]) is None
    assert check_file_id(["toolong123"]) is not None
    assert check_file_id(["lower"]) is not None
    assert check_file_id(["A"] * 9) is not None


def test_rejects_and_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("hello")
    dup = tmp_path / "dup.dcm"
    dup.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    result = write_dicomdir([get_testdata_file("CT_small.dcm"), dup, junk], tmp_path / "cd")
    reasons = sorted(r.reason.split(" ")[0] for r in result.rejected)
    assert reasons == ["duplicate", "not"]
    with pytest.raises(StorageError, match="new or empty"):
        write_dicomdir([get_testdata_file("CT_small.dcm")], tmp_path / "cd")
    with pytest.raises(StorageError, match="no DICOM instance"):
        write_dicomdir([junk], tmp_path / "empty")
    with pytest.raises(StorageError, match="File-set ID"):
        write_dicomdir([get_testdata_file("CT_small.dcm")], tmp_path / "x", file_set_id="bad id")


def test_cli_dicomdir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "export"
    src.mkdir()
    for p in sources()[:2]:
        (src / p.name).write_bytes(p.read_bytes())
    assert main(["dicomdir", str(src), "--out", str(tmp_path / "cd"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["files"]) == 2 and report["conformant"]
    assert main(["dicomdir", str(src), "--out", str(tmp_path / "cd")]) == 1
    assert "duckpacs: error:" in capsys.readouterr().err


def test_empty_type1_record_keys_are_invented_in_the_dicomdir_only(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyTime = ""
    ds.StudyID = ""
    del ds.InstanceNumber
    src = tmp_path / "in" / "ct.dcm"
    src.parent.mkdir()
    ds.save_as(src)
    plan = Path(get_testdata_file("rtplan.dcm"))  # has no Instance Number at all
    result = write_dicomdir([src, plan], tmp_path / "cd")
    assert not result.rejected
    invented = {(Path(s).name, k) for s, k, _ in result.invented}
    assert {
        ("ct.dcm", "StudyTime"),
        ("ct.dcm", "StudyID"),
        ("ct.dcm", "InstanceNumber"),
    } <= invented
    assert ("rtplan.dcm", "InstanceNumber") in invented
    for file_id, source in result.files:
        assert (tmp_path / "cd" / file_id).read_bytes() == Path(source).read_bytes()
    assert len(read_back(result.dicomdir)) == 2


@pytest.mark.interop
def test_dciodvfy_accepts_the_dicomdir(tmp_path: Path) -> None:
    dciodvfy = require_tool("dciodvfy")
    result = write_dicomdir(sources() + [Path(get_testdata_file("rtplan.dcm"))], tmp_path / "cd")
    proc = subprocess.run([dciodvfy, str(result.dicomdir)], capture_output=True, text=True)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line]
    assert not errors, errors
