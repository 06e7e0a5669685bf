"""Part 10 framing without decoding the dataset (PS3.10 7.1): build_meta and split."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from duckpacs.archive import part10
from duckpacs.errors import ParseError


def test_built_meta_is_read_back_by_pydicom() -> None:
    path = Path(str(get_testdata_file("CT_small.dcm")))
    data = path.read_bytes()
    original = part10.split(data)
    dataset = data[original.dataset_offset :]
    meta = part10.build_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2.1", "CT1")
    ds = dcmread(BytesIO(meta + dataset))
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.45"  # odd length: NUL-padded
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.ImplementationClassUID == part10.IMPLEMENTATION_CLASS_UID
    assert ds.file_meta.SourceApplicationEntityTitle == "CT1"
    assert ds.file_meta.FileMetaInformationGroupLength == len(meta) - 132 - 12
    assert ds.PatientID == dcmread(path).PatientID
    framing = part10.split(meta + dataset)
    assert framing.dataset_offset == len(meta)
    assert (framing.sop_instance_uid, framing.sop_class_uid) == (
        "1.2.3.45",
        "1.2.840.10008.5.1.4.1.1.2",
    )


def test_split_without_preamble_and_errors() -> None:
    meta = part10.build_meta("1.2", "1.2.3", "1.2.840.10008.1.2")
    body = meta[132:]  # group 0002 without preamble (seen in legacy archives)
    assert part10.split(body + b"\x08\x00\x16\x00").dataset_offset == len(body)
    with pytest.raises(ParseError, match="runs past the end"):
        part10.split(meta[:-3])
    with pytest.raises(ParseError, match="Transfer Syntax"):
        part10.split(b"\x08\x00\x16\x00UI\x02\x001\x00")
