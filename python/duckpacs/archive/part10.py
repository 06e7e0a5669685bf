"""Part 10 framing without decoding the dataset: build and split the File Meta Information.

A DIMSE C-STORE carries a bare dataset; the archive stores it as a Part 10 stream (PS3.10 7.1):
a 128-byte preamble, ``DICM``, then group 0002 in explicit VR little endian, then the dataset
exactly as received. Going the other way (C-GET, C-MOVE, ``duckpacs send``) the meta is
stripped again. Both directions only touch group 0002; the dataset bytes are never parsed here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from duckpacs.errors import ParseError

PREAMBLE = b"\x00" * 128 + b"DICM"
# Our Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID under 2.25 (PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25.87936788337233048782838656642852649147"
IMPLEMENTATION_VERSION_NAME = "DUCKPACS_0"

# VRs whose explicit-VR header has a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw  # PS3.5 6.2: UI padded with NUL


def _text(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw  # PS3.5 6.2: SH/AE padded with space


def build_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = ""
) -> bytes:
    """Preamble, ``DICM`` and group 0002 for a dataset received over the network.

    Parameters
    ----------
    sop_class_uid, sop_instance_uid : str
        From the C-STORE request (PS3.7 9.1.1): Media Storage SOP Class/Instance UID.
    transfer_syntax : str
        The transfer syntax of the accepted presentation context the dataset came in.
    source_ae : str
        The calling AE title, recorded as Source Application Entity Title (0002,0016).

    Returns
    -------
    bytes
        The File Meta Information as PS3.10 7.1 lays it out, ready to prepend to the dataset.
    """
    body = b"".join(
        (
            _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, 0x0002, b"UI", _ui(sop_class_uid)),
            _element(0x0002, 0x0003, b"UI", _ui(sop_instance_uid)),
            _element(0x0002, 0x0010, b"UI", _ui(transfer_syntax)),
            _element(0x0002, 0x0012, b"UI", _ui(IMPLEMENTATION_CLASS_UID)),
            _element(0x0002, 0x0013, b"SH", _text(IMPLEMENTATION_VERSION_NAME)),
        )
    )
    if source_ae.strip():
        body += _element(0x0002, 0x0016, b"AE", _text(source_ae.strip()))
    group_length = _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body)))
    return PREAMBLE + group_length + body


@dataclass(frozen=True)
class Framing:
    """Where the dataset starts in a stored stream, and what the meta says about it."""

    dataset_offset: int
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str


def split(data: bytes | memoryview) -> Framing:
    """Find the end of group 0002 in a Part 10 stream (with or without preamble).

    Walks the meta elements one by one (explicit VR little endian, PS3.10 7.1) instead of
    trusting (0002,0000), which some writers get wrong. Raises :class:`ParseError` with the
    byte offset when the stream has no readable meta.
    """
    view = memoryview(data)
    pos = 132 if len(view) >= 132 and bytes(view[128:132]) == b"DICM" else 0
    values: dict[int, str] = {}
    while pos + 8 <= len(view):
        group, elem = struct.unpack_from("<HH", view, pos)
        if group != 0x0002:
            break
        vr = bytes(view[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > len(view):
                raise ParseError(f"file meta truncated at byte {pos}")
            (length,) = struct.unpack_from("<I", view, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", view, pos + 6)
            start = pos + 8
        end = start + length
        if end > len(view):
            raise ParseError(
                f"file meta element (0002,{elem:04X}) at byte {pos} runs past the end "
                f"({length} bytes declared, {len(view) - start} left)"
            )
        if elem in (0x0002, 0x0003, 0x0010):
            values[elem] = bytes(view[start:end]).rstrip(b"\x00 ").decode("ascii", "replace")
        pos = end
    if 0x0010 not in values:
        raise ParseError("no Transfer Syntax UID (0002,0010) in the file meta (PS3.10 7.1)")
    return Framing(
        dataset_offset=pos,
        transfer_syntax=values[0x0010],
        sop_class_uid=values.get(0x0002, ""),
        sop_instance_uid=values.get(0x0003, ""),
    )
