"""Hypothesis round trips (issue 4): generated datasets and arbitrary bytes come back exact.

Datasets vary the pixel geometry (8/16 bit, 1 or 3 samples, planar configuration, signed,
several frames), carry private tags, undefined-length sequences, odd-length trailing padding,
and are written little or big endian, implicit or explicit VR.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from duckpacs._core import Store

SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]


@st.composite
def datasets(draw: st.DrawFn) -> bytes:
    ts = draw(st.sampled_from(SYNTAXES))
    rows, cols = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    bits = draw(st.sampled_from([8, 16]))
    samples = draw(st.sampled_from([1, 3]))
    frames = draw(st.integers(1, 3))
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3." + str(draw(st.integers(1, 10**9)))
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4." + str(draw(st.integers(1, 3)))
    ds.PatientID = draw(st.text("ABCXYZ019^ ", max_size=9))
    ds.Modality = "OT"
    ds.add_new(0x00091010, "LO", "PRIVATE CREATOR")
    ds.add_new(0x00091011, "OB", draw(st.binary(max_size=17)))
    item = Dataset()
    item.CodeValue = draw(st.text("abc", max_size=5))
    ds.ReferencedImageSequence = Sequence([item])
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = draw(st.integers(0, 1))
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = draw(st.integers(0, 1))
    ds.NumberOfFrames = frames
    n = rows * cols * samples * frames * bits // 8
    ds.PixelData = draw(st.binary(min_size=n, max_size=n)) + (b"\x00" if n % 2 else b"")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ts
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue() + draw(st.binary(max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(datasets(), min_size=1, max_size=4))
def test_generated_datasets_round_trip(items: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d, Store(Path(d), writer_id=1, sync=False) as s:
        locs = s.put_many(items)
        for data, loc in zip(items, locs, strict=True):
            assert s.get(loc) == data
            assert s.meta(loc)["sha256"] == hashlib.sha256(data).hexdigest()
        assert s.verify(deep=True)["damaged"] == []


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000))
def test_arbitrary_bytes_round_trip(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d, Store(Path(d), writer_id=1, sync=False) as s:
        assert s.get(s.put(data)) == data
