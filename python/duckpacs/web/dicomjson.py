"""DICOM JSON (PS3.18 F.2): index results and full headers as ``application/dicom+json``.

Index rows (keyword -> Python value) are converted with the data dictionary's VR. Full
headers go through pydicom, with pixel data and other large top-level binary values replaced
by a ``BulkDataURI`` (PS3.18 F.2.6) that is *relative* to the metadata request, so that it
resolves correctly behind a reverse proxy that rewrites the path prefix.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # PixelData, Float-, DoubleFloatPixelData
BULK_THRESHOLD = 1024
NUMBER_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}


def tag_hex(keyword: str) -> str | None:
    """``PatientName`` -> ``00100010``; ``None`` when the keyword is unknown."""
    tag = tag_for_keyword(keyword)
    return None if tag is None else f"{tag:08X}"


def _is_tag(name: str) -> bool:
    return len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name)


def keyword_of(name: str) -> str | None:
    """Accept a keyword or an 8-hex-digit tag (PS3.18 8.3.4.1) and return the keyword."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return keyword_for_tag(Tag(int(name, 16))) or None
    return name if tag_for_keyword(name) is not None else None


def vr_of(keyword: str) -> str:
    vr = dictionary_VR(keyword)
    return vr.split(" or ")[0] if vr else "UN"


SINGLE_VALUED_TEXT = {"LT", "ST", "UT", "UR"}  # backslash is an ordinary character here


def _json_value(vr: str, value: Any) -> Any:
    if vr == "PN":
        return {"Alphabetic": str(value)}
    if vr == "IS":
        return int(str(value).strip())
    if vr == "DS":
        number = float(str(value).strip())
        return int(number) if number.is_integer() else number
    if vr in ("FL", "FD"):
        return float(value)
    if vr in NUMBER_VRS:
        return int(value)
    return str(value)


def element(keyword: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON attribute object for ``value`` (``None`` or ``""`` means empty).

    ``value`` may be a Python value, a list of values, DICOM text with values separated by
    ``\\`` (as the index returns them), or a list of item dicts for a sequence.
    """
    vr = vr_of(keyword)
    if value is None or value == "" or value == []:
        return {"vr": vr}
    if vr == "SQ":
        items = value if isinstance(value, list) else []
        return {"vr": vr, "Value": [row_to_json(i, list(i)) for i in items if isinstance(i, dict)]}
    if isinstance(value, bytes | bytearray) or vr in BINARY_VRS:
        data = value if isinstance(value, bytes | bytearray) else bytes(value)
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode()}
    if isinstance(value, str) and vr not in SINGLE_VALUED_TEXT:
        values: list[Any] = value.split("\\")
    else:
        values = list(value) if isinstance(value, list | tuple) else [value]
    try:
        return {"vr": vr, "Value": [None if v == "" else _json_value(vr, v) for v in values]}
    except ValueError:  # a malformed number in the archive: send it as stored text
        return {"vr": vr, "Value": [str(v) for v in values]}


def row_to_json(row: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    """An index row as a DICOM JSON object, attributes in tag order."""
    out: dict[str, Any] = {}
    for keyword in keys:
        if keyword in row:
            tag = tag_hex(keyword) or (keyword.upper() if _is_tag(keyword) else None)
            if tag is not None:
                out[tag] = element(keyword, row[keyword])
    return dict(sorted(out.items()))


def dataset_to_json(ds: Dataset, bulk_uri: Callable[[str], str]) -> dict[str, Any]:
    """A full header as DICOM JSON; ``bulk_uri(tag_hex)`` gives the URI of a bulk value.

    Bulk values are recognised from the raw element's VR and length, so they are neither
    converted nor (when the file was read with ``defer_size``) read at all.
    """
    out: dict[str, Any] = {}
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset converts every element)
        raw = ds.get_item(tag)
        if raw is None:
            continue
        vr = raw.VR or vr_of(keyword_for_tag(tag) or "")
        key = f"{int(tag):08X}"
        length = getattr(raw, "length", None)  # RawDataElement: as read from the file
        if not isinstance(length, int):
            value = getattr(raw, "value", None)
            length = len(value) if isinstance(value, bytes | bytearray) else 0
        if int(tag) in PIXEL_TAGS or (vr in BINARY_VRS and length > BULK_THRESHOLD):
            out[key] = {"vr": vr, "BulkDataURI": bulk_uri(key)}
        else:
            out[key] = ds[tag].to_json_dict(
                bulk_data_element_handler=None, bulk_data_threshold=1 << 62
            )
    return out
