"""The tests' oracle for header batches: the same batch built in Python with pydicom.

The archive builds its batches in Rust only (``duckpacs._core.index_batch``); this builder
follows the same contract (:data:`duckpacs.index.schema.BATCH_SCHEMA`, here as the Arrow schema
:data:`ARROW_BATCH_SCHEMA`) so that the tests can compare the two value for value and feed the
index from a source independent of the Rust one.
Rules for element values (PS3.5 6.2):

- text VRs: decoded with the dataset's Specific Character Set (PS3.5 6.1.2.3, done by
  pydicom), one entry per value, surrounding spaces removed except for ST, LT and UT whose
  leading spaces are significant;
- PN: the whole value including component groups (``Alphabetic=Ideographic=Phonetic``);
- binary numbers (US, SS, UL, SL, SV, UV, FL, FD) and AT: formatted as text, number in ``num``;
- bulk binary VRs (OB, OW, OF, OD, OL, OV): one entry without a value;
- UN holding printable ASCII (private elements of implicit VR files, up to 1 KiB): as text
  split on ``\\``, so private attributes stay searchable; other UN: one entry without a value;
- Pixel Data, Float and Double Float Pixel Data are left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from duckpacs.index import schema
from duckpacs.index.schema import KEY_ATTRIBUTES, LOCATION_FIELDS, NUMERIC_VRS

BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"})
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
# Data Set Trailing Padding (PS3.10 7.2) is not an attribute of the instance.
SKIPPED_TAGS = PIXEL_TAGS | {0xFFFCFFFC}
UN_TEXT_MAX = 1024
_KEEP_LEADING = frozenset({"ST", "LT", "UT"})

AttrEntry = dict[str, Any]

# The Arrow type of each DuckDB type the batch schema uses (the archive itself has no Arrow
# library; the tests build and read batches with pyarrow).
_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "UBIGINT": pa.uint64(),
    "UINTEGER": pa.uint32(),
    "USMALLINT": pa.uint16(),
    "DOUBLE": pa.float64(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}
ARROW_ATTR_STRUCT = pa.struct(
    [pa.field(f.name, _ARROW_TYPES[f.type], nullable=f.nullable) for f in schema.ATTR_FIELDS]
)


def _arrow_type(field: schema.Field) -> pa.DataType:
    if field.type == schema.ATTRS_TYPE:
        return pa.list_(ARROW_ATTR_STRUCT)
    return _ARROW_TYPES[field.type]


ARROW_BATCH_SCHEMA = pa.schema(
    [pa.field(f.name, _arrow_type(f), nullable=f.nullable) for f in schema.BATCH_SCHEMA]
)


def _text(vr: str, value: Any) -> str:
    if vr == "FL":
        return str(np.float32(value))
    if vr == "FD":
        return repr(float(value))
    if vr == "AT":
        return f"{int(value):08X}"
    text = str(value)
    return text.rstrip(" \x00") if vr in _KEEP_LEADING else text.strip(" \x00")


def _number(vr: str, value: Any) -> float | None:
    if vr not in NUMERIC_VRS:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or value == "" or (isinstance(value, bytes) and not value):
        return []
    if elem.VM > 1 or isinstance(value, list | tuple):
        return list(value)
    return [value]


def _un_text(value: Any) -> list[Any]:
    """An UN value that is printable ASCII text (private elements of implicit VR files)."""
    if not isinstance(value, bytes):
        return []
    body = value.rstrip(b"\x00 ")
    if not body or len(body) > UN_TEXT_MAX or not all(0x20 <= b < 0x7F for b in body):
        return []
    return [part.strip() for part in body.decode("ascii").split("\\")]


def _creator(ds: Dataset, tag: int) -> str | None:
    group, element = tag >> 16, tag & 0xFFFF
    if not group & 1 or element < 0x1000:
        return None
    creator = ds.get((group, element >> 8))
    if creator is None or not isinstance(creator.value, str):
        return None
    return creator.value.strip(" \x00")


def element_entries(ds: Dataset, parent: str = "") -> list[AttrEntry]:
    """Every element of ``ds`` (and of its sequence items, recursively) as ``attrs`` entries."""
    out: list[AttrEntry] = []
    for elem in ds:
        tag = int(elem.tag)
        if tag in SKIPPED_TAGS or elem.tag.group == 0x0002:
            continue
        vr = str(elem.VR)
        base = {"parent": parent, "tag": tag, "vr": vr, "creator": _creator(ds, tag)}
        if vr == "SQ":
            out.append({**base, "vm_index": 0, "value": None, "num": None})
            prefix = f"{parent}/" if parent else ""
            for i, item in enumerate(elem.value or []):
                out.extend(element_entries(item, f"{prefix}{tag:08X}#{i}"))
            continue
        if vr == "UN":
            values: list[Any] = _un_text(elem.value)
        else:
            values = [] if vr in BULK_VRS else _values(elem)
        if not values:
            out.append({**base, "vm_index": 0, "value": None, "num": None})
            continue
        for i, v in enumerate(values):
            out.append({**base, "vm_index": i, "value": _text(vr, v), "num": _number(vr, v)})
    return out


def key_values(ds: Dataset) -> dict[str, str | None]:
    """The key-attribute columns of one dataset (text, multiple values joined by ``\\``)."""
    row: dict[str, str | None] = {}
    for key in KEY_ATTRIBUTES:
        elem = ds.get(key.tag)
        if elem is None:
            row[key.column] = None
            continue
        row[key.column] = "\\".join(_text(str(elem.VR), v) for v in _values(elem))
    return row


def dataset_row(ds: Dataset, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One batch row: key columns, location/provenance columns from ``extra``, ``attrs``."""
    with warnings.catch_warnings():
        # pydicom warns on undecodable text and replaces it; the row keeps the replacement.
        warnings.simplefilter("ignore")
        row: dict[str, Any] = key_values(ds)
        row["attrs"] = element_entries(ds)
    extra = dict(extra or {})
    if "transfer_syntax" not in extra:
        meta = getattr(ds, "file_meta", None)
        ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
        extra["transfer_syntax"] = str(ts) if ts else None
    for f in LOCATION_FIELDS:
        value = extra.get(f.name)
        if f.name == "received_at" and isinstance(value, str):
            value = datetime.fromisoformat(value)
        row[f.name] = value
    return row


def build_batch(records: Iterable[tuple[Dataset, Mapping[str, Any] | None]]) -> pa.Table:
    """A header batch (:data:`ARROW_BATCH_SCHEMA`) for ``(dataset, extra)`` pairs.

    ``extra`` holds the location and provenance values named in
    :data:`~duckpacs.index.schema.LOCATION_FIELDS` (``pack``, ``offset``, ``length``,
    ``sha256``, ``size``, ``received_at``, ``source_ae``, ``transfer_syntax``).
    """
    rows = [dataset_row(ds, extra) for ds, extra in records]
    return pa.Table.from_pylist(rows, schema=ARROW_BATCH_SCHEMA)
