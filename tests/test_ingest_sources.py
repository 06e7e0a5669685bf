"""Discovery of DICOM inputs: folders, files by content, gzip, zip, DICOMDIR (PS3.10 8.5)."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from duckpacs.export.dicomdir import file_set
from duckpacs.files.sources import (
    Reject,
    SourceItem,
    discover,
    discover_all,
    read_dataset,
    sniff,
)
from tests import synthetic
from tests.corpus import ingest_folder_sets, synthetic_folder

PYDICOM_DIR = Path(get_testdata_file("CT_small.dcm")).parent


def uids(items: list[SourceItem]) -> Counter[str]:
    return Counter(str(read_dataset(i).SOPInstanceUID) for i in items)


def test_sniff_recognises_part10_and_bare_datasets() -> None:
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert sniff(ct[:512], len(ct)) == "part10"
    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"):
        data = Path(get_testdata_file(name)).read_bytes()
        assert sniff(data[:512], len(data)) == "dataset", name
    # Implicit VR little endian, written by pydicom without preamble or meta header.
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds)
    raw = buf.getvalue()
    assert raw[:2] == b"\x08\x00"
    assert sniff(raw[:512], len(raw)) == "dataset"


@pytest.mark.parametrize(
    "content",
    [b"hello world\n" * 40, b"\x00" * 600, b"%PDF-1.4\n" + bytes(range(256)) * 3, b"\x08\x00"],
)
def test_sniff_rejects_other_content(content: bytes) -> None:
    assert sniff(content[:512], len(content)) is None


def test_pydicom_test_files_every_readable_dataset_is_found_once() -> None:
    items, rejects = discover_all([PYDICOM_DIR])
    descriptions = [i.description for i in items]
    assert len(descriptions) == len(set(descriptions))
    rejected = {Path(r.path).name for r in rejects}
    # Text and colour-profile files are refused with a reason; DICOMs are not.
    assert {"README.txt", "crayons.icc", "test1.json", "rtplan.dump"} <= rejected
    assert all(r.reason for r in rejects)
    assert not any(name.endswith(".dcm") and name != "no_meta.dcm" for name in rejected)
    found = {Path(i.description) for i in items}
    # Every .dcm pydicom reads with its normal reader is found (DICOMDIRs are followed instead).
    for name in PYDICOM_DIR.rglob("*.dcm"):
        path = Path(name)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if ds.file_meta.get("MediaStorageSOPClassUID") == "1.2.840.10008.1.3.10":
            assert path not in found
            continue
        assert path in found, path
    kinds = {Path(i.description).name: (i.kind, i.container) for i in items}
    assert kinds["zipMR.gz"] == ("part10", "gzip")
    assert kinds["ExplVR_BigEndNoMeta.dcm"] == ("dataset", "file")


def test_gzip_item_reads_decompressed_bytes() -> None:
    items, rejects = discover_all([get_testdata_file("zipMR.gz")])
    assert not rejects
    (item,) = items
    data = item.read()
    assert data[128:132] == b"DICM"
    assert item.size == len(data)  # from the gzip trailer
    assert read_dataset(item).Modality == "MR"


def test_content_not_name_decides(tmp_path: Path) -> None:
    src = Path(get_testdata_file("MR_small.dcm"))
    shutil.copy(src, tmp_path / "noextension")
    shutil.copy(src, tmp_path / "picture.jpg")
    (tmp_path / "fake.dcm").write_bytes(b"not a dicom file at all" * 20)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "scan.bin").write_bytes(gzip.compress(src.read_bytes()))
    (tmp_path / "broken.gz").write_bytes(gzip.compress(src.read_bytes())[:200])
    (tmp_path / "text.gz").write_bytes(gzip.compress(b"plain text " * 100))
    items, rejects = discover_all([tmp_path])
    names = {Path(i.description).name for i in items}
    assert names == {"noextension", "picture.jpg", "scan.bin"}
    reasons = {Path(r.path).name: r.reason for r in rejects}
    assert set(reasons) == {"fake.dcm", "empty.dcm", "broken.gz", "text.gz"}
    assert reasons["empty.dcm"] == "empty file"
    assert "not DICOM" in reasons["fake.dcm"]
    assert "gzip" in reasons["broken.gz"]
    assert reasons["text.gz"].startswith("gzip content is not DICOM")
    for item in items:
        assert item.read() == src.read_bytes()


def test_missing_path_and_duplicates(tmp_path: Path) -> None:
    src = get_testdata_file("CT_small.dcm")
    found = list(discover([src, src, Path(src).parent / "CT_small.dcm", tmp_path / "nope"]))
    assert [type(f) for f in found] == [SourceItem, Reject]
    assert isinstance(found[1], Reject) and found[1].reason == "no such file or folder"


def test_zip_members_streamed_without_extraction(tmp_path: Path) -> None:
    archive = tmp_path / "study.zip"
    sources = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")]
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i, src in enumerate(sources):
            z.write(src, f"DICOM/S{i}/IM{i}")
        z.writestr("DICOM/readme.txt", "burned by a CD robot")
        z.writestr("DICOM/packed.dcm.gz", gzip.compress(sources[0].read_bytes()))
        z.writestr("inner.zip", archive.read_bytes() if archive.exists() else b"PK\x03\x04xx")
    before = sorted(p.name for p in tmp_path.iterdir())
    items, rejects = discover_all([archive])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing extracted
    by_name = {i.description.split("!", 1)[1]: i for i in items}
    assert set(by_name) == {"DICOM/S0/IM0", "DICOM/S1/IM1", "DICOM/S2/IM2", "DICOM/packed.dcm.gz"}
    assert by_name["DICOM/packed.dcm.gz"].container == "zip+gzip"
    for i, src in enumerate(sources):
        item = by_name[f"DICOM/S{i}/IM{i}"]
        assert item.container == "zip"
        assert item.size == src.stat().st_size
        assert item.read() == src.read_bytes()
    assert by_name["DICOM/packed.dcm.gz"].read() == sources[0].read_bytes()
    reasons = {r.path.split("!", 1)[1]: r.reason for r in rejects}
    assert set(reasons) == {"DICOM/readme.txt", "inner.zip"}
    assert "nested zip" in reasons["inner.zip"]


def test_corrupt_zip_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    items, rejects = discover_all([bad])
    assert not items
    assert rejects[0].reason.startswith("corrupt zip archive")


def _write_media(tmp_path: Path, names: list[str]) -> Path:
    """A DICOMDIR file-set (PS3.10 8.5) written by pydicom's FileSet."""
    media = tmp_path / "media"
    with file_set() as fs:
        for name in names:
            fs.add(pydicom.dcmread(get_testdata_file(name)))
        fs.write(media)
    return media


def test_dicomdir_records_are_followed(tmp_path: Path) -> None:
    names = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_jpeg_gdcm.dcm"]
    media = _write_media(tmp_path, names)
    expected = {str(pydicom.dcmread(get_testdata_file(n)).SOPInstanceUID) for n in names}

    items, rejects = discover_all([media / "DICOMDIR"])
    assert not rejects
    assert set(uids(items)) == expected and len(items) == 3

    # Walking the folder finds the same three files once each; the DICOMDIR is not an item.
    items, rejects = discover_all([media, media / "DICOMDIR"])
    assert not rejects
    assert uids(items) == Counter(expected)

    # The CD was mounted with lower-case names: the records still resolve.
    lower = tmp_path / "lower"
    shutil.copytree(media, lower)
    for path in sorted(lower.rglob("*"), key=lambda p: -len(p.parts)):
        if path.name != "DICOMDIR":
            path.rename(path.with_name(path.name.lower()))
    items, rejects = discover_all([lower / "DICOMDIR"])
    assert not rejects and set(uids(items)) == expected

    # A record pointing at a file that is gone is reported against the DICOMDIR.
    victim = next(p for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    victim.unlink()
    items, rejects = discover_all([media / "DICOMDIR"])
    assert len(items) == 2
    assert len(rejects) == 1 and "references missing file" in rejects[0].reason


def test_dicomdir_not_followed_on_request(tmp_path: Path) -> None:
    media = _write_media(tmp_path, ["CT_small.dcm"])
    items, _ = discover_all([media / "DICOMDIR"], follow_dicomdir=False)
    assert len(items) == 1 and items[0].description.endswith("DICOMDIR")


def test_dicomdir_inside_zip_is_skipped_members_kept(tmp_path: Path) -> None:
    media = _write_media(tmp_path, ["CT_small.dcm", "MR_small.dcm"])
    archive = tmp_path / "cd.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(media.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(media).as_posix())
    items, rejects = discover_all([archive])
    assert not rejects
    assert len(items) == 2


def test_gz_and_files_named_anything_are_found_by_content() -> None:
    """Gzipped series, DICOM named ``.img`` or nothing, every transfer syntax: the synthetic
    folders, and the Philips, Agfa and dcm_qa_ts folders of the shared corpus when present."""
    for folders in ingest_folder_sets():
        items, rejects = discover_all(list(folders))
        licences = [str(p) for folder in folders for p in folder.glob("LICENSE")]
        assert sorted(r.path for r in rejects) == sorted(licences)
        gz = [i for i in items if i.container == "gzip"]
        assert len(gz) == len(list(folders.gz.glob("*.dcm.gz")))
        named = [i for i in items if Path(i.description).is_relative_to(folders.by_content)]
        expected = [p for p in folders.by_content.rglob("*") if p.is_file() and p.name != "LICENSE"]
        assert len(named) == len(expected) >= 4
        assert not any(i.description.endswith(".dcm") for i in named)
        syntaxes = [i for i in items if Path(i.description).parent == folders.syntaxes]
        assert len(syntaxes) == len(list(folders.syntaxes.glob("*.dcm"))) >= 9
        sample = gz[:5] + named + syntaxes
        assert len(uids(sample)) == len(sample)
        for item in sample:
            assert len(item.read()) == item.size


def test_file_without_preamble_is_found_by_content() -> None:
    """A meta header straight at byte 0 (no preamble, no ``DICM``) is read as a dataset."""
    (path,) = synthetic_folder(synthetic.NO_PREAMBLE).iterdir()
    items, rejects = discover_all([path])
    assert not rejects
    (item,) = items
    assert item.kind == "dataset" and item.read() == path.read_bytes()
    assert read_dataset(item).SOPInstanceUID == pydicom.dcmread(path, force=True).SOPInstanceUID


def test_decompression_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from duckpacs.files import sources

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (tmp_path / "a.dcm.gz").write_bytes(gzip.compress(data))
    with zipfile.ZipFile(tmp_path / "b.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("ct", data)
    items, rejects = discover_all([tmp_path])
    assert len(items) == 2 and not rejects
    monkeypatch.setattr(sources, "MAX_INSTANCE_BYTES", len(data) - 1)
    for item in items:
        with pytest.raises(sources.TooLargeError, match="inflates to more than"):
            item.read()
    monkeypatch.setattr(sources, "MAX_INSTANCE_BYTES", len(data))
    assert all(item.read() == data for item in items)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_sniff_never_raises(head: bytes) -> None:
    assert sniff(head, len(head)) in (None, "part10", "dataset")
    assert sniff(head, None) in (None, "part10", "dataset")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=132, max_size=400))
def test_sniff_part10_marker(body: bytes) -> None:
    data = body[:128] + b"DICM" + body[132:]
    assert sniff(data, len(data)) == "part10"


@pytest.mark.filterwarnings("ignore::UserWarning")  # ".." is not a valid CS value, on purpose
def test_dicomdir_references_cannot_leave_the_media(tmp_path: Path) -> None:
    media = _write_media(tmp_path, ["CT_small.dcm"])
    outside = tmp_path / "secret.dcm"
    outside.write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    ds = pydicom.dcmread(media / "DICOMDIR")
    for record in ds.DirectoryRecordSequence:
        if "ReferencedFileID" in record:
            record.ReferencedFileID = ["..", "secret.dcm"]
    ds.save_as(media / "DICOMDIR")
    items, rejects = discover_all([media / "DICOMDIR"])
    assert not items
    assert rejects and all("references missing file" in r.reason for r in rejects)
