"""Transfer syntax negotiation for WADO-RS and WADO-URI (PS3.18 8.7.3.5).

We send what is stored (``transfer-syntax=*``) without touching a byte. Otherwise we can
re-encode between the uncompressed syntaxes and decompress anything pydicom has a decoder
for; we never re-compress, so asking for a compressed syntax other than the stored one is a
406 decided before the response starts.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

EXPLICIT_LE = str(ExplicitVRLittleEndian)
UNCOMPRESSED = {str(ImplicitVRLittleEndian), EXPLICIT_LE}
READABLE_UNCOMPRESSED = UNCOMPRESSED | {
    str(ExplicitVRBigEndian),
    str(DeflatedExplicitVRLittleEndian),
}

# PS3.18 Table 8.7.3-5: media types of single frames by transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",  # PS3.18 8.7.3
}


def can_transcode(stored: str, wanted: str) -> bool:
    """Whether we can turn an instance stored as ``stored`` into ``wanted``."""
    if wanted in ("*", stored):
        return True
    if wanted not in UNCOMPRESSED:
        return False
    if stored in READABLE_UNCOMPRESSED:
        return True
    return can_decode(stored)


def can_decode(stored: str) -> bool:
    try:
        return bool(get_decoder(UID(stored)).is_available)
    except (NotImplementedError, ValueError):
        return False


def transcode(data: bytes, wanted: str) -> bytes:
    """Re-encode Part 10 ``data`` into the uncompressed syntax ``wanted``."""
    ds = pydicom.dcmread(io.BytesIO(data))
    stored = str(ds.file_meta.TransferSyntaxUID)
    if wanted in ("*", stored):
        return data
    if UID(stored).is_compressed:
        ds.decompress()
    if "PixelData" in ds and ds["PixelData"].VR == "OB or OW":
        ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated") or 8) > 8 else "OB"
    ds.file_meta.TransferSyntaxUID = UID(wanted)
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=wanted == str(ImplicitVRLittleEndian), little_endian=True)
    return buf.getvalue()
