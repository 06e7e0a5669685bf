"""The query/retrieve information model (PS3.4 C.6) laid onto the index tables.

Which table answers each level, which alias holds the key columns of each level seen from a
query level, how a level's unit and order are written, the computed return keys, and
:func:`resolve`, which turns a keyword or tag into the attribute the compiler works with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from duckpacs.errors import QueryError
from duckpacs.index.schema import KEYS_BY_KEYWORD, KEYS_BY_TAG, KeyAttribute

LEVEL_ALIASES = {
    "patient": "patient",
    "study": "study",
    "series": "series",
    "image": "image",
    "instance": "image",
}
FROM = {
    "patient": "patients p",
    "study": "studies s",
    "series": "series se JOIN studies s ON se.study_instance_uid = s.study_instance_uid",
    "image": "instances i",
}
# Which table alias holds the key columns of each level, per query level.
ALIASES = {
    "patient": {"patient": "p"},
    "study": {"patient": "s", "study": "s"},
    "series": {"patient": "s", "study": "s", "series": "se"},
    "image": {"patient": "i", "study": "i", "series": "i", "image": "i"},
}
OUTER_UNIT = {
    "patient": "p.patient_id",
    "study": "s.study_instance_uid",
    "series": "se.series_instance_uid",
    "image": "i.iid",
}
INNER_UNIT = {
    "patient": "coalesce(i2.patient_id, '')",
    "study": "i2.study_instance_uid",
    "series": "i2.series_instance_uid",
    "image": "i2.iid",
}
REP_IID = {"patient": "p.rep_iid", "study": "s.rep_iid", "series": "se.rep_iid", "image": "i.iid"}
ORDER = {
    "patient": "p.patient_id",
    "study": "s.study_instance_uid",
    "series": "se.series_instance_uid",
    "image": "i.study_instance_uid, i.series_instance_uid, i.instance_number, i.sop_instance_uid",
}
UNIQUE_KEY = {
    "patient": "PatientID",
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "image": "SOPInstanceUID",
}

# Computed return keys (PS3.4 C.6.1.1.x, C.6.2.1.x): keyword -> (level, column, VR).
COMPUTED = {
    "NumberOfPatientRelatedStudies": ("patient", "number_of_patient_related_studies", "IS"),
    "NumberOfPatientRelatedSeries": ("patient", "number_of_patient_related_series", "IS"),
    "NumberOfPatientRelatedInstances": ("patient", "number_of_patient_related_instances", "IS"),
    "NumberOfStudyRelatedSeries": ("study", "number_of_study_related_series", "IS"),
    "NumberOfStudyRelatedInstances": ("study", "number_of_study_related_instances", "IS"),
    "ModalitiesInStudy": ("study", "modalities_in_study", "CS"),
    "SOPClassesInStudy": ("study", "sop_classes_in_study", "UI"),
    "NumberOfSeriesRelatedInstances": ("series", "number_of_series_related_instances", "IS"),
}
# Identifier elements that steer the query rather than select instances (PS3.4 C.4.1.1.3):
# Query/Retrieve Level, Specific Character Set (values here are already decoded), Timezone
# Offset From UTC. They are neither matched nor returned.
NOT_MATCHED = frozenset({0x00080052, 0x00080005, 0x00080201})
DATE_TIME_PAIRS = (
    ("StudyDate", "StudyTime"),
    ("SeriesDate", "SeriesTime"),
    ("ContentDate", "ContentTime"),
)

OWNER_TABLE = {
    "patient": ("patients", "patient_id"),
    "study": ("studies", "study_instance_uid"),
    "series": ("series", "series_instance_uid"),
}
# Expression of an upper level's key at each query level.
OWNER_KEY = {
    "image": {
        "patient": "coalesce(i.patient_id, '')",
        "study": "i.study_instance_uid",
        "series": "i.series_instance_uid",
    },
    "series": {"patient": "coalesce(s.patient_id, '')", "study": "se.study_instance_uid"},
    "study": {"patient": "coalesce(s.patient_id, '')"},
    "patient": {},
}
_HEX = re.compile(r"^[0-9A-Fa-f]{8}$")


@dataclass(frozen=True)
class Attr:
    """A resolved query attribute."""

    tag: int
    name: str
    vr: str
    key: KeyAttribute | None


def level_name(level: str) -> str:
    """Normalise a Query/Retrieve Level (PS3.4 C.6: PATIENT, STUDY, SERIES, IMAGE)."""
    name = LEVEL_ALIASES.get(level.strip().lower())
    if name is None:
        raise QueryError(f"unknown query level {level!r} (patient, study, series or image)")
    return name


def resolve(name: str) -> Attr:
    """Resolve a keyword, ``ggggeeee``, ``gggg,eeee`` or ``(gggg,eeee)`` to an attribute.

    Key attributes resolve from the schema; any other name from pydicom's data dictionary
    (PS3.6), imported at the first such query rather than by every process that opens the
    index.
    """
    text = name.strip()
    compact = text.strip("()").replace(",", "").replace(" ", "")
    key = KEYS_BY_TAG.get(int(compact, 16)) if _HEX.match(compact) else KEYS_BY_KEYWORD.get(text)
    if key is not None:
        return Attr(key.tag, key.keyword, key.vr, key)
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    if _HEX.match(compact):
        tag = int(compact, 16)
    else:
        found = tag_for_keyword(text)
        if found is None:
            raise QueryError(f"unknown attribute {name!r} (use a DICOM keyword or ggggeeee)")
        tag = int(found)
    try:
        vr = dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        vr = "UN"  # private or unknown: matched as text
    return Attr(tag, keyword_of(tag), vr, KEYS_BY_TAG.get(tag))


def keyword_of(tag: int) -> str:
    """The keyword of ``tag`` (PS3.6), ``ggggeeee`` in hex when it has none (private ones)."""
    key = KEYS_BY_TAG.get(tag)
    if key is not None:
        return key.keyword
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or f"{tag:08X}"
