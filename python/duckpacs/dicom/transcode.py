"""Transfer syntaxes: what a stored instance can be sent as, and the re-encoding itself.

The one transcoder of duckpacs, for WADO-RS and WADO-URI (Part 10 in, Part 10 out:
:func:`transcode`), the DIMSE retrieve fallback for a peer that refuses the stored syntax and
`duckpacs send` (:func:`dataset_in`, called by the Rust server). What is stored goes out
untouched whenever it may; otherwise we write the uncompressed syntaxes (PS3.5 A.1-A.2),
decompressing with pydicom's pixel handlers (pylibjpeg, openjpeg) when needed. We never
(re)compress. The instance keeps its SOP Instance UID: the same image in another encoding,
as DCMTK and Orthanc do.
"""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from duckpacs.errors import DuckpacsError

EXPLICIT_LE = str(ExplicitVRLittleEndian)
IMPLICIT_LE = str(ImplicitVRLittleEndian)
BIG_ENDIAN = str(ExplicitVRBigEndian)
# Native pixels in little endian: frames are the same bytes in either syntax.
UNCOMPRESSED = {IMPLICIT_LE, EXPLICIT_LE}
READABLE_UNCOMPRESSED = UNCOMPRESSED | {BIG_ENDIAN, str(DeflatedExplicitVRLittleEndian)}

# PS3.18 Table 8.7.3-5 (since 2016c): media types of frames and pixel bulk data, each with
# the transfer syntaxes it may carry, its default first.
FRAME_SYNTAXES = {
    "application/octet-stream": [EXPLICIT_LE, IMPLICIT_LE],
    "image/jpeg": [
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    ],
    "image/dicom-rle": ["1.2.840.10008.1.2.5"],
    "image/jls": ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"],
    "image/jp2": ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"],
    "image/jpx": ["1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"],
    "image/jphc": [
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    ],
}
FRAME_MEDIA_TYPES = {
    syntax: media
    for media, syntaxes in FRAME_SYNTAXES.items()
    if media != "application/octet-stream"
    for syntax in syntaxes
}


class TranscodeError(DuckpacsError):
    """The instance cannot be written in the syntax asked for."""


def can_decode(stored: str) -> bool:
    """Whether pydicom has a working decoder for the compressed syntax ``stored``."""
    try:
        return bool(get_decoder(UID(stored)).is_available)
    except (NotImplementedError, ValueError):
        return False


def can_transcode(stored: str, wanted: str) -> bool:
    """Whether an instance stored as ``stored`` can be sent as ``wanted`` (``*``: as stored)."""
    if wanted in ("*", stored):
        return True
    if wanted not in UNCOMPRESSED:
        return False
    return stored in READABLE_UNCOMPRESSED or can_decode(stored)


def _decoded(stream: bytes, target: str) -> tuple[Dataset, str]:
    """The instance of a Part 10 ``stream`` read, decompressed when needed, ready to be
    written in the uncompressed ``target``; and the syntax it was stored in."""
    ts = UID(target)
    if ts.is_compressed:
        raise TranscodeError(f"will not compress into {ts.name}")
    try:
        ds = dcmread(BytesIO(stream), force=True)
        stored = str(ds.file_meta.TransferSyntaxUID)
        if UID(stored).is_compressed:
            ds.decompress(generate_instance_uid=False)
        if "PixelData" in ds and ds["PixelData"].VR == "OB or OW":
            ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated") or 8) > 8 else "OB"
    except Exception as e:  # noqa: BLE001 (pydicom and its pixel handlers raise many types)
        raise TranscodeError(f"cannot transcode to {ts.name}: {e}") from e
    return ds, stored


def dataset_in(stream: bytes, target: str) -> bytes:
    """The dataset of a stored Part 10 ``stream``, encoded in the uncompressed ``target``."""
    ds, _ = _decoded(stream, target)
    ts = UID(target)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = ts.is_little_endian, ts.is_implicit_VR
    try:
        write_dataset(out, ds)
    except Exception as e:  # noqa: BLE001
        raise TranscodeError(f"cannot transcode to {ts.name}: {e}") from e
    return bytes(out.getvalue())


def transcode(data: bytes, wanted: str) -> bytes:
    """Part 10 ``data`` as a Part 10 file in ``wanted`` (``*`` or its own syntax: unchanged)."""
    if wanted == "*":
        return data
    ds, stored = _decoded(data, wanted)
    if stored == wanted:
        return data
    ds.file_meta.TransferSyntaxUID = UID(wanted)
    buf = BytesIO()
    try:
        ds.save_as(buf, implicit_vr=wanted == IMPLICIT_LE, little_endian=True)
    except Exception as e:  # noqa: BLE001
        raise TranscodeError(f"cannot transcode to {UID(wanted).name}: {e}") from e
    return buf.getvalue()


def switched_header(head: bytes, stored: str, wanted: str) -> bytes:
    """For an instance stored in one little endian native syntax and wanted in the other:
    ``head`` (the stored Part 10 bytes up to and including the pixel data element's header,
    the pixel data being the last element) re-encoded as a Part 10 file in ``wanted`` up to
    the pixel values, which are the same bytes in both (PS3.5 A.1, A.2). The values then
    follow as stored, so an instance of gigabytes is never decoded or held."""
    element_len = 8 if stored == IMPLICIT_LE else 12
    header, element = head[:-element_len], head[-element_len:]
    try:
        ds = dcmread(BytesIO(header), force=True)
        ds.file_meta.TransferSyntaxUID = UID(wanted)
        buf = BytesIO()
        ds.save_as(buf, implicit_vr=wanted == IMPLICIT_LE, little_endian=True)
    except Exception as e:  # noqa: BLE001
        raise TranscodeError(f"cannot transcode to {UID(wanted).name}: {e}") from e
    tag, length = b"\xe0\x7f\x10\x00", element[-4:]
    if wanted == IMPLICIT_LE:
        return buf.getvalue() + tag + length
    if stored == IMPLICIT_LE:
        vr = b"OW" if int(ds.get("BitsAllocated") or 8) > 8 else b"OB"
    else:
        vr = element[4:6]
    return buf.getvalue() + tag + vr + b"\0\0" + length
