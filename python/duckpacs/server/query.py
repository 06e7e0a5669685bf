"""C-FIND, C-GET and C-MOVE identifiers to index queries and back (PS3.4 C.4, C.6).

The identifier is the one thing pydicom decodes on the query path: it is small and its keys
are what the index queries. Universal matching (an empty value) makes a key a return key
only; any other value is a matching key (PS3.4 C.2.2.2).
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# Keys that frame the request rather than match anything.
_FRAMING = {"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC"}

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_ROOT = {STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET}


# The unique key of each level (PS3.4 C.6.1.1 / C.6.2.1), always returned (C.4.1.1.3.2).
UNIQUE_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


class IdentifierError(ValueError):
    """The identifier cannot be answered: the message says why (PS3.4 C.4.1.1.4)."""


def _text(value: Any) -> str:
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def parse_identifier(
    identifier: Dataset, sop_class_uid: str
) -> tuple[str, dict[str, str], list[str]]:
    """Level, matching keys and return keys of a query/retrieve identifier.

    Raises :class:`IdentifierError` for a missing or unknown level, or PATIENT level under
    the Study Root model (PS3.4 C.6.2).
    """
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise IdentifierError(f"Query/Retrieve Level {level!r} is not one of {', '.join(LEVELS)}")
    if level == "PATIENT" and sop_class_uid in STUDY_ROOT:
        raise IdentifierError("PATIENT level is not part of the Study Root model (PS3.4 C.6.2)")
    query: dict[str, str] = {}
    return_keys: list[str] = []
    for element in identifier:
        keyword = element.keyword or keyword_for_tag(element.tag)
        if not keyword or keyword in _FRAMING or element.tag.group == 0x0002:
            continue
        return_keys.append(keyword)
        if element.VR == "SQ":
            continue  # sequence matching is optional (PS3.4 C.2.2.2.6); we return keys only
        text = _text(element.value).strip()
        if text and text != "*":
            query[keyword] = text
    if UNIQUE_KEYS[level] not in return_keys:
        return_keys.append(UNIQUE_KEYS[level])
    return level, query, return_keys


def response_identifier(
    level: str, row: dict[str, Any], return_keys: list[str], charset: str | None
) -> Dataset:
    """The C-FIND pending identifier for one match: every requested key, empty if unknown."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    for keyword in return_keys:
        value = row.get(keyword)
        try:
            vr = dictionary_VR(keyword)
        except KeyError:
            continue
        if vr == "SQ":
            setattr(ds, keyword, [])
            continue
        setattr(ds, keyword, _element_value(vr, value))
    return ds


def _element_value(vr: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple):
        return [_element_value(vr, v) for v in value]
    if vr in ("US", "SS", "UL", "SL", "IS"):
        return (
            int(value)
            if not isinstance(value, str) or value.strip().lstrip("-").isdigit()
            else value
        )
    if vr in ("FL", "FD", "DS"):
        return float(value) if not isinstance(value, str) else value
    if hasattr(value, "strftime"):  # dates and times from the index
        fmt = {"DA": "%Y%m%d", "TM": "%H%M%S", "DT": "%Y%m%d%H%M%S"}.get(vr, "%Y%m%d")
        return value.strftime(fmt)
    return str(value)
