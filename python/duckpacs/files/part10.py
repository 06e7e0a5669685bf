"""Reading and completing Part 10 datasets with pydicom for the export-side tools.

Legacy files are full of small non-conformances (odd lengths, bad IS values, implicit VR
where explicit was announced); pydicom warns about each. The tools report what they could not
handle in their reject lists instead, so warnings are silenced while reading.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian


def parse(data: bytes, *, force: bool = False, stop_before_pixels: bool = False) -> Dataset:
    """Parse a Part 10 file (or, with ``force``, a bare dataset) from bytes, quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(io.BytesIO(data), force=force, stop_before_pixels=stop_before_pixels)


def read_header(path: Path) -> Dataset:
    """The attributes of the file at ``path`` up to its pixel data (which is not read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(path, force=True, stop_before_pixels=True)


def encode(ds: Dataset) -> bytes:
    """Encode ``ds`` as a Part 10 file (preamble, meta header, dataset; PS3.10 7.1)."""
    ensure_file_meta(ds)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ensure_file_meta(ds: Dataset) -> None:
    """Give a dataset read without File Meta Information what Part 10 requires (PS3.10 7.1).

    A bare dataset is written as Explicit VR Little Endian: the content sniffer only accepts
    uncompressed bare datasets, so no information is lost.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if not meta.get("TransferSyntaxUID"):
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if not meta.get("MediaStorageSOPClassUID") and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if not meta.get("MediaStorageSOPInstanceUID") and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
