"""duckpacs._core.describe and dump_json on real files (pydicom's test files)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels.utils import get_expected_length

from duckpacs import _core
from duckpacs.errors import ParseError
from tests.corpus import pydicom_test_files, shared_corpus_files, synthetic_files


def unzipped_corpus_files() -> list[Path]:
    """The synthetic corpus and the shared one when present, without the ``.gz`` files."""
    return synthetic_files(include_gz=False) + shared_corpus_files(include_gz=False)


def _read(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as f:
        return f.read()


def test_describe_native_ct() -> None:
    data = _read("CT_small.dcm")
    layout = _core.describe(data)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert layout["framing"] == "part10"
    assert layout["sop_instance_uid"] == ds.SOPInstanceUID
    assert layout["modality"] == "CT"
    px = layout["pixel"]
    assert isinstance(px, dict)
    start, end = px["value"]
    assert data[start:end] == ds.PixelData
    assert px["kind"] == "native" and px["frames"] == 1 and px["frame_len"] == 128 * 128 * 2


def test_describe_encapsulated_frames_match_pydicom() -> None:
    data = _read("rtdose_rle.dcm")
    layout = _core.describe(data)
    ds = pydicom.dcmread(get_testdata_file("rtdose_rle.dcm"))
    px = layout["pixel"]
    assert isinstance(px, dict) and px["kind"] == "encapsulated"
    items, frames = px["items"], px["frames"]
    assert len(frames) == ds.NumberOfFrames
    expected = list(
        pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames)
    )
    for (first, stop), want in zip(frames, expected, strict=True):
        got = b"".join(data[items[i][0] + 8 : items[i][1]] for i in range(first, stop))
        assert got.rstrip(b"\0") == want.rstrip(b"\0")


def test_describe_bare_dataset_with_caller_syntax() -> None:
    data = _read("CT_small.dcm")
    layout = _core.describe(data)
    meta_end = layout["meta"][1]
    assert isinstance(meta_end, int)
    bare = _core.describe(data[meta_end:], "1.2.840.10008.1.2.1")
    assert bare["framing"] == "bare_dataset"
    assert bare["meta"] == (0, 0)
    assert bare["sop_instance_uid"] == layout["sop_instance_uid"]


def test_truncated_file_raises_parse_error_with_offset() -> None:
    with pytest.raises(ParseError, match=r"at byte \d+ in \(7FE0,0010\)"):
        _core.describe(_read("MR_truncated.dcm"))


def test_dump_json_never_inlines_pixel_data() -> None:
    out = json.loads(_core.dump_json(_read("CT_small.dcm")))
    assert out["7FE00010"] == {"vr": "OW"}
    with_uri = json.loads(_core.dump_json(_read("CT_small.dcm"), bulk_data_uri="bulk:"))
    assert with_uri["7FE00010"]["BulkDataURI"].startswith("bulk:")
    assert out["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]


def test_dump_json_points_top_level_pixel_data_at_its_tag_when_asked() -> None:
    """WADO-RS metadata serves pixel data by tag (``bulkdata/7FE00010``); other bulk values,
    and pixel data inside sequence items (icon images), keep their byte ranges."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = dcmread(get_testdata_file("CT_small.dcm"))
    icon = Dataset()
    icon.Rows, icon.Columns, icon.BitsAllocated = 8, 8, 8
    icon.PixelData = bytes(64)
    ds.IconImageSequence = Sequence([icon])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    out = json.loads(
        _core.dump_json(
            buf.getvalue(), bulk_data_uri="bulkdata/", inline_threshold=16, pixel_data_by_tag=True
        )
    )
    assert out["7FE00010"]["BulkDataURI"] == "bulkdata/7FE00010"
    nested = out["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
    offset, length = (int(x) for x in nested.removeprefix("bulkdata/").split("/"))
    assert length == 64 and buf.getvalue()[offset : offset + length] == bytes(64)


def test_corpus_discovery_finds_pydicom_files() -> None:
    names = {p.name for p in pydicom_test_files()}
    assert "CT_small.dcm" in names


def test_describe_deflated_and_big_endian_files() -> None:
    dfl = _core.describe(_read("image_dfl.dcm"))
    assert dfl["transfer_syntax"] == "1.2.840.10008.1.2.1.99"
    assert dfl["deflated"] is True
    be = _core.describe(_read("MR_small_bigendian.dcm"))
    px = be["pixel"]
    assert isinstance(px, dict) and px["big_endian"] is True and px["frames"] == 1


def test_describe_every_pydicom_file_or_parse_error() -> None:
    described = 0
    for path in pydicom_test_files():
        try:
            layout = _core.describe(path.read_bytes())
        except ParseError:
            continue
        described += 1
        px = layout["pixel"]
        if isinstance(px, dict) and px["kind"] == "native":
            start, end = px["value"]
            assert px["frames"] * px["frame_len"] <= end - start, path.name
    assert described >= 170


def test_encapsulated_frames_match_pydicom_on_every_file() -> None:
    """Frame boundaries (PS3.5 A.4) agree with pydicom's generate_frames on every
    encapsulated file of the pydicom test files and the (uncompressed-on-disk) corpora."""
    files = pydicom_test_files() + unzipped_corpus_files()
    compared = 0
    for path in files:
        data = path.read_bytes()
        try:
            layout = _core.describe(data)
        except ParseError:
            continue
        px = layout["pixel"]
        if not isinstance(px, dict) or px["kind"] != "encapsulated":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
        n = int(ds.get("NumberOfFrames", 1) or 1)
        want = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=n))
        items, frames = px["items"], px["frames"]
        got = [
            b"".join(data[items[i][0] + 8 : items[i][1]] for i in range(first, stop))
            for first, stop in frames
        ]
        assert got == want, path.name
        compared += 1
    assert compared >= 20


def test_native_frame_geometry_matches_pydicom_expected_length() -> None:
    """frames * frame_len equals pydicom's expected pixel data length (PS3.5 8.1.1) for every
    native file; badVR.dcm has Number of Frames "1A", which pydicom multiplies as a string."""
    files = pydicom_test_files() + unzipped_corpus_files()
    compared = 0
    for path in files:
        if path.name == "badVR.dcm":
            continue
        try:
            layout = _core.describe(path.read_bytes())
        except ParseError:
            continue
        px = layout["pixel"]
        if not isinstance(px, dict) or px["kind"] != "native":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
        if "Rows" not in ds:
            assert px["frames"] == 0
            continue
        expected = get_expected_length(ds, "bytes")
        assert px["frames"] * px["frame_len"] == expected, path.name
        compared += 1
    assert compared >= 50
