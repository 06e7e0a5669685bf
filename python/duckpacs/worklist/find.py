"""Modality Worklist C-FIND SCP (PS3.4 K): the identifier read, entries matched, answers
encoded for the Rust listener, which sends them as pending responses.

An answer carries the identifier's keys and no others (K.2.2.1 and C.2.2.1.3), with the
entry's values; the Scheduled Procedure Step Sequence answers with one item holding the keys
its query item asked for (all of the step's attributes when the query sent the sequence
empty). Values that do not fit ASCII are answered in UTF-8 (``ISO_IR 192``).
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from duckpacs import logs
from duckpacs.dicom import status
from duckpacs.worklist.matching import BadQuery, Query, matches, step_status, validate
from duckpacs.worklist.store import KEYS, STEP_KEYS, Worklist

log = logs.get("worklist")

STEP_SEQUENCE = "ScheduledProcedureStepSequence"
# Answered per entry when asked, though not kept as columns.
_FIXED = {"ScheduledProcedureStepStatus"}

Reply = tuple[int, list[bytes], str | None]


def read(data: bytes, transfer_syntax: str) -> Dataset:
    ts = UID(transfer_syntax)
    return read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)


def encode(ds: Dataset, transfer_syntax: str) -> bytes:
    ts = UID(transfer_syntax)
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = ts.is_little_endian, ts.is_implicit_VR
    write_dataset(out, ds)
    return bytes(out.getvalue())


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_query(identifier: Dataset) -> Query:
    """The matching keys of a worklist identifier; :class:`BadQuery` if it cannot be one."""
    query = Query()
    for elem in identifier:
        if elem.keyword in ("SpecificCharacterSet", STEP_SEQUENCE) or not elem.keyword:
            continue
        if elem.VR == "SQ":
            continue  # other sequences: return keys only
        query.top[elem.keyword] = _text(elem.value)
    steps = identifier.get(STEP_SEQUENCE)
    if steps is not None:
        if len(steps) > 1:
            raise BadQuery("Scheduled Procedure Step Sequence has more than one item")
        for elem in steps[0] if len(steps) else []:
            if elem.keyword == "ScheduledProcedureStepStatus":
                query.step_status = _text(elem.value)
            elif elem.VR != "SQ":
                query.step[elem.keyword] = _text(elem.value)
    validate(query)
    return query


def _copy(keyword: str, value: str, into: Dataset) -> None:
    setattr(into, keyword, value or None)


def answer(identifier: Dataset, entry: dict[str, Any]) -> Dataset:
    """The answer for ``entry``: the identifier's keys with the entry's values."""
    ds = Dataset()
    for elem in identifier:
        if elem.keyword == "SpecificCharacterSet" or not elem.keyword:
            continue
        if elem.keyword == STEP_SEQUENCE:
            ds.ScheduledProcedureStepSequence = [_step(elem.value, entry)]
        elif elem.VR == "SQ":
            setattr(ds, elem.keyword, [])
        elif elem.keyword in KEYS:
            _copy(elem.keyword, entry[elem.keyword], ds)
        else:
            ds.add_new(elem.tag, elem.VR, None)  # a key we keep no value for: empty
    text = "".join(_text(v.value) for v in ds.iterall() if v.VR != "SQ")
    if not text.isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _step(items: Any, entry: dict[str, Any]) -> Dataset:
    item = Dataset()
    asked = list(items[0]) if len(items) else []
    keywords = [e.keyword for e in asked] or list(STEP_KEYS) + sorted(_FIXED)
    for keyword in keywords:
        if keyword == "ScheduledProcedureStepStatus":
            item.ScheduledProcedureStepStatus = step_status(entry)
        elif keyword in STEP_KEYS:
            _copy(keyword, entry[keyword], item)
    for elem in asked:
        if elem.keyword not in STEP_KEYS and elem.keyword not in _FIXED and elem.keyword:
            item.add_new(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
    return item


def handle(
    worklist: Worklist,
    peer: dict[str, Any],
    data: bytes,
    transfer_syntax: str,
    find: Callable[..., list[dict[str, Any]]] | None = None,
) -> Reply:
    """(final status, pending answers, error comment) for one worklist C-FIND-RQ; ``find``
    (the archive's) lets entries whose study has arrived complete first."""
    try:
        identifier = read(data, transfer_syntax)
        query = parse_query(identifier)
    except BadQuery as e:
        logs.event(log, "worklist C-FIND refused", reason=str(e), peer=peer["calling_ae"])
        return status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, [], str(e)
    except Exception as e:  # noqa: BLE001 (a malformed identifier: the peer reads why)
        reason = f"identifier cannot be read: {e}"
        logs.event(log, "worklist C-FIND refused", reason=reason, peer=peer["calling_ae"])
        return status.CANNOT_UNDERSTAND, [], reason
    if find is not None:
        worklist.complete_arrived(find)
    found = [e for e in worklist.entries(include_done=False) if matches(query, e)]
    logs.event(log, "worklist C-FIND", matches=len(found), peer=peer["calling_ae"])
    return status.SUCCESS, [encode(answer(identifier, e), transfer_syntax) for e in found], None
