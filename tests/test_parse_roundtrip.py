"""Property test: datasets written by pydicom in each uncompressed transfer syntax read back
through our parser with the same DICOM JSON model (PS3.18 F.2) as pydicom gives."""

from __future__ import annotations

import io
import json
from typing import Any

import pydicom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from duckpacs import _core

TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh0123456789 ._-", max_size=12)
# Keyword -> value strategy; VRs span text, numbers (binary and decimal strings), tags, PN.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "PatientID": TEXT.map(str.strip),
    "StudyDescription": TEXT.map(str.strip),
    "ImageType": st.lists(
        st.sampled_from(["ORIGINAL", "DERIVED", "PRIMARY", "AXIAL"]), min_size=1, max_size=4
    ),
    "PatientName": st.sampled_from(["Doe^John", "Yamada^Tarou", "A^B^C^D^E", ""]),
    "Rows": st.integers(0, 65535),
    "SimpleFrameList": st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4),
    "ReferencePixelX0": st.integers(-(2**31), 2**31 - 1),
    "SliceThickness": st.integers(0, 10_000).map(lambda x: f"{x / 8:g}"),
    "InstanceNumber": st.integers(-1000, 100_000),
    "RescaleSlope": st.integers(1, 100).map(str),
    "FrameTime": st.floats(-1e6, 1e6, allow_nan=False, width=32),
    "SpacingBetweenSlices": st.integers(0, 100).map(str),
    "FrameIncrementPointer": st.sampled_from([0x00181063, 0x00181065]),
    "StudyDate": st.sampled_from(["20240101", "19991231", ""]),
}


@st.composite
def datasets(draw: st.DrawFn, depth: int = 0) -> Dataset:
    ds = Dataset()
    for keyword in draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=8)):
        setattr(ds, keyword, draw(FIELDS[keyword]))
    if depth < 2 and draw(st.booleans()):
        ds.ReferencedSeriesSequence = draw(st.lists(datasets(depth + 1), max_size=3))
    return ds


def _write(ds: Dataset, syntax: str) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """pydicom writes '' where PS3.18 F.2.5 says the attribute has no Value."""
    out = {}
    for tag, attr in d.items():
        attr = dict(attr)
        if attr["vr"] == "SQ":
            attr["Value"] = [_clean(item) for item in attr.get("Value", [])]
            if not attr["Value"]:
                attr.pop("Value")
        elif attr.get("Value") in ([""], [{}], [None]):
            attr.pop("Value")
        out[tag] = attr
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ds=datasets(),
    syntax=st.sampled_from([ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]),
)
def test_pydicom_written_datasets_read_back_identically(ds: Dataset, syntax: str) -> None:
    data = _write(ds, syntax)
    ours = json.loads(_core.dump_json(data))
    theirs = pydicom.dcmread(io.BytesIO(data)).to_json_dict()
    assert ours == _clean(theirs)
    layout = _core.describe(data)
    assert layout["transfer_syntax"] == syntax
