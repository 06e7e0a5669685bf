"""Re-encoding a stored instance for a peer that will not take its stored transfer syntax.

Only towards uncompressed syntaxes (PS3.5 A.1-A.2), decompressing with pydicom's pixel
handlers (pylibjpeg, openjpeg) when needed; we never re-compress. The instance keeps its SOP
Instance UID: the same image in another encoding, as DCMTK and Orthanc do.
"""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from duckpacs.errors import DuckpacsError


class TranscodeError(DuckpacsError):
    """The instance cannot be written in the syntax asked for."""


def dataset_in(stream: bytes, target: str) -> bytes:
    """The dataset of a stored Part 10 ``stream``, encoded in the uncompressed ``target``."""
    ts = UID(target)
    if ts.is_compressed:
        raise TranscodeError(f"will not compress into {ts.name}")
    try:
        ds = dcmread(BytesIO(stream), force=True)
        if UID(ds.file_meta.TransferSyntaxUID).is_compressed:
            ds.decompress(generate_instance_uid=False)
        if "PixelData" in ds and ds["PixelData"].VR == "OB or OW":
            ds["PixelData"].VR = "OW" if int(ds.get("BitsAllocated") or 8) > 8 else "OB"
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = ts.is_little_endian, ts.is_implicit_VR
        write_dataset(out, ds)
    except Exception as e:  # noqa: BLE001 (pydicom and its pixel handlers raise many types)
        raise TranscodeError(f"cannot transcode to {ts.name}: {e}") from e
    return bytes(out.getvalue())
