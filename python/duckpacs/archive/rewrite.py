"""A corrected version of a stored instance: the header re-encoded with new patient or
study values, everything from the pixel data element on copied byte for byte.

Only the header (``Store.header_bytes``: the stream before Pixel Data) is parsed, by
pydicom; the rest is streamed from the stored record into a file beside the store
(``Store.open_instance``), so a gigabyte instance costs its header in memory, not its
pixels. The transfer syntax, the File Meta Information and the SOP Instance UID stay as
they were; elements we do not touch are written back as the raw bytes they were read as.

When a new value cannot be written in the instance's Specific Character Set, the whole
header moves to UTF-8 (``ISO_IR 192``, PS3.5 6.1.2.3): every text value is decoded with
the old character set first, so nothing else changes meaning.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from duckpacs.errors import QueryError, StorageError

# What a correction may change (the patient and study levels of PS3.4 C.6.1.1.2-3), with
# each attribute's VR for the value check. UIDs are not here: a correction never changes
# what an instance is.
EDITABLE = {
    "PatientName": "PN",
    "PatientID": "LO",
    "IssuerOfPatientID": "LO",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "OtherPatientIDs": "LO",
    "AccessionNumber": "SH",
    "StudyID": "SH",
    "StudyDescription": "LO",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "ReferringPhysicianName": "PN",
}
PATIENT_DEMOGRAPHICS = ("PatientName", "PatientBirthDate", "PatientSex")
_MAX_CHARS = {"LO": 64, "SH": 16, "PN": 64 * 3 + 2, "CS": 16}  # PS3.5 Table 6.2-1
_FORMATS = {
    "DA": re.compile(r"^(\d{8})?$"),
    "TM": re.compile(r"^(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?$"),
}
_UTF8 = "ISO_IR 192"
_CHUNK = 1 << 20


def check_changes(changes: Mapping[str, str]) -> dict[str, str]:
    """``changes`` validated: known keywords, values that fit their VR. Raises QueryError."""
    if not changes:
        raise QueryError("nothing to change: give at least one KEYWORD=VALUE")
    out = {}
    for keyword, value in changes.items():
        vr = EDITABLE.get(keyword)
        if vr is None:
            raise QueryError(
                f"{keyword} cannot be corrected here; allowed: {', '.join(sorted(EDITABLE))}"
            )
        value = str(value).strip()
        fmt = _FORMATS.get(vr)
        if fmt is not None and not fmt.match(value):
            raise QueryError(f"{keyword}={value!r} is not a valid {vr} value (PS3.5 6.2)")
        if vr == "CS" and keyword == "PatientSex" and value not in ("", "M", "F", "O"):
            raise QueryError(f"PatientSex={value!r}: must be M, F, O or empty (PS3.3 C.7.1.1)")
        if len(value) > _MAX_CHARS.get(vr, 1 << 16) or "\\" in value and vr != "LO":
            raise QueryError(f"{keyword}={value!r} does not fit its VR {vr} (PS3.5 6.2)")
        out[keyword] = value
    return out


def _read(header: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(io.BytesIO(header), force=True)


def _value(ds: Dataset, keyword: str) -> str:
    element = ds.get(keyword)
    if element is None or element == "":
        return ""
    if isinstance(element, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in element)
    return str(element)


def current_values(header: bytes, keywords: list[str]) -> dict[str, str]:
    """The values of ``keywords`` in a stored header (what a correction would replace)."""
    ds = _read(header)
    return {k: _value(ds, k) for k in keywords}


def _encodable(ds: Dataset, values: Mapping[str, str]) -> bool:
    """Whether ``values`` can be written in the header's Specific Character Set."""
    if all(v.isascii() for v in values.values()):
        return True
    charset = ds.get("SpecificCharacterSet") or "ISO_IR 6"
    terms = [charset] if isinstance(charset, str) else list(charset)
    if len(terms) != 1:  # code extensions (ISO 2022): keep it simple and move to UTF-8
        return False
    codec = convert_encodings(terms)[0]
    try:
        for v in values.values():
            v.encode(codec)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def rewrite_header(header: bytes, changes: Mapping[str, str]) -> bytes | None:
    """The header with ``changes`` applied, in the same transfer syntax; None when it
    already carries those values (nothing to write)."""
    ds = _read(header)
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if syntax == DeflatedExplicitVRLittleEndian:
        raise StorageError(
            "a deflated instance cannot be corrected in place (its dataset is one zlib "
            "stream); export it, correct it and store it again"
        )
    if all(_value(ds, k) == v for k, v in changes.items()):
        return None
    if not _encodable(ds, changes):
        ds.decode()  # every text value now a str, decoded with the old character set
        for _ in ds.iterall():
            pass  # raw elements converted, so they are re-encoded, not copied as raw bytes
        ds.SpecificCharacterSet = _UTF8
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def write_version(store: Any, location: Any, old_header_len: int, new_header: bytes,
                  dest: BinaryIO) -> None:  # fmt: skip
    """``new_header`` then the stored stream at ``location`` from ``old_header_len`` on
    (Pixel Data and whatever follows it), read in bounded pieces."""
    dest.write(new_header)
    stream = store.open_instance(tuple(location))
    skip = old_header_len
    while chunk := stream.read(_CHUNK):
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        dest.write(memoryview(chunk)[skip:])
        skip = 0


def spool_dir(store_dir: Path) -> Path:
    """Where versions are written before the store takes them (beside C-STORE's spool)."""
    folder = Path(store_dir) / "spool"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
