"""Viewer measurements as a DICOM SR: a TID 1500 Measurement Report (PS3.16) in a
Comprehensive SR instance (PS3.3 A.35.3), one TID 1410 Planar ROI Measurement group per
length, angle or elliptical ROI, each with its SCOORD on the image it was drawn on.

The viewer computes the values (it holds the pixels); this module checks them and encodes
them. Coordinates are image pixel coordinates with (0,0) at the top left corner of the top
left pixel (PS3.3 C.18.6.1.1), the viewer's own convention.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
KINDS = {"length": 2, "angle": 3, "ellipse": 2}  # points the viewer sends per kind

# (value, scheme, meaning) of the codes used (PS3.16 CID 7469, 7464, DCM and SCT).
REPORT = ("126000", "DCM", "Imaging Measurement Report")
LANGUAGE = ("121049", "DCM", "Language of Content Item and Descendants")
ENGLISH = ("en-US", "RFC5646", "English (United States)")
OBSERVER = ("121008", "DCM", "Person Observer Name")
PROCEDURE = ("121058", "DCM", "Procedure reported")
IMAGING_PROCEDURE = ("363679005", "SCT", "Imaging procedure")
MEASUREMENTS = ("126010", "DCM", "Imaging Measurements")
GROUP = ("125007", "DCM", "Measurement Group")
TRACKING_ID = ("112039", "DCM", "Tracking Identifier")
TRACKING_UID = ("112040", "DCM", "Tracking Unique Identifier")
REGION = ("111030", "DCM", "Image Region")
LENGTH = ("410668003", "SCT", "Length")
ANGLE = ("1483009", "SCT", "Angle")
AREA = ("42798000", "SCT", "Area")
STATS = {
    "mean": ("373098007", "SCT", "Mean"),
    "sd": ("386136009", "SCT", "Standard Deviation"),
    "min": ("255605001", "SCT", "Minimum"),
    "max": ("56851009", "SCT", "Maximum"),
}
UNITS = {  # UCUM (PS3.16 CID 82)
    "mm": ("mm", "UCUM", "millimeter"),
    "px": ("{pixels}", "UCUM", "pixels"),
    "deg": ("deg", "UCUM", "degree"),
    "mm2": ("mm2", "UCUM", "square millimeter"),
    "px2": ("{pixels}2", "UCUM", "square pixels"),
    "HU": ("[hnsf'U]", "UCUM", "Hounsfield unit"),
    "": ("1", "UCUM", "no units"),
}


class MeasurementError(ValueError):
    """A measurement the viewer sent is not one we can encode (maps to HTTP 400)."""


@dataclass(frozen=True)
class Measurement:
    """One measurement on one frame of one image."""

    kind: str
    points: list[tuple[float, float]]
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    frame: int
    values: dict[str, tuple[float, str]] = field(default_factory=dict)  # name -> (value, unit)

    @classmethod
    def from_json(cls, item: object) -> Measurement:
        if not isinstance(item, dict):
            raise MeasurementError("each measurement is a JSON object")
        kind = item.get("kind")
        if kind not in KINDS:
            raise MeasurementError(f"measurement kind {kind!r}: expected one of {sorted(KINDS)}")
        points = item.get("points")
        if (
            not isinstance(points, list)
            or len(points) != KINDS[kind]
            or not all(_is_point(p) for p in points)
        ):
            raise MeasurementError(f"{kind}: expected {KINDS[kind]} points [x, y]")
        values = item.get("values") or {}
        if not isinstance(values, dict):
            raise MeasurementError(f"{kind}: values must be an object")
        checked: dict[str, tuple[float, str]] = {}
        for name, pair in values.items():
            if name not in {"length", "angle", "area", *STATS}:
                raise MeasurementError(f"{kind}: unknown value {name!r}")
            if not (isinstance(pair, list) and len(pair) == 2 and _finite(pair[0])):
                raise MeasurementError(f"{kind}: value {name!r} must be [number, unit]")
            if not isinstance(pair[1], str) or pair[1] not in UNITS:
                raise MeasurementError(f"{kind}: unit {pair[1]!r} of {name!r} is not known")
            checked[name] = (float(pair[0]), str(pair[1]))
        uids = [item.get(k) for k in ("series", "instance", "sop_class")]
        if not all(isinstance(u, str) and u for u in uids):
            raise MeasurementError(f"{kind}: series, instance and sop_class UIDs are required")
        frame = item.get("frame", 1)
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 1:
            raise MeasurementError(f"{kind}: frame must be a positive integer")
        return cls(
            kind,
            [(float(p[0]), float(p[1])) for p in points],
            str(uids[0]),
            str(uids[1]),
            str(uids[2]),
            frame,
            checked,
        )


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_point(p: object) -> bool:
    return isinstance(p, list) and len(p) == 2 and all(_finite(c) for c in p)


def _code(code: tuple[str, str, str]) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = code
    return ds


def _item(relation: str, value_type: str, concept: tuple[str, str, str]) -> Dataset:
    ds = Dataset()
    ds.RelationshipType, ds.ValueType = relation, value_type
    ds.ConceptNameCodeSequence = [_code(concept)]
    return ds


def _num(concept: tuple[str, str, str], value: float, unit: str) -> Dataset:
    ds = _item("CONTAINS", "NUM", concept)
    measured = Dataset()
    measured.NumericValue = f"{value:.6g}"
    measured.MeasurementUnitsCodeSequence = [_code(UNITS[unit])]
    ds.MeasuredValueSequence = [measured]
    return ds


def _scoord(m: Measurement) -> Dataset:
    """The region: a polyline for lengths and angles, an ellipse as its two axes' end points
    (major axis first, PS3.3 C.18.6.1.2)."""
    ds = _item("CONTAINS", "SCOORD", REGION)
    if m.kind == "ellipse":
        (x0, y0), (x1, y1) = m.points
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        across = [(min(x0, x1), cy), (max(x0, x1), cy)]
        down = [(cx, min(y0, y1)), (cx, max(y0, y1))]
        axes = across + down if abs(x1 - x0) >= abs(y1 - y0) else down + across
        ds.GraphicType, points = "ELLIPSE", axes
    else:
        ds.GraphicType, points = "POLYLINE", m.points
    ds.GraphicData = [round(c, 3) for p in points for c in p]
    image = Dataset()
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = m.sop_class_uid, m.sop_instance_uid
    ref.ReferencedFrameNumber = m.frame
    image.RelationshipType, image.ValueType = "SELECTED FROM", "IMAGE"
    image.ReferencedSOPSequence = [ref]
    ds.ContentSequence = [image]
    return ds


def _group(m: Measurement, n: int) -> Dataset:
    group = _item("CONTAINS", "CONTAINER", GROUP)
    group.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "1410"
    group.ContentTemplateSequence = [template]
    tracking = _item("HAS OBS CONTEXT", "TEXT", TRACKING_ID)
    tracking.TextValue = f"{m.kind} {n}"
    tracking_uid = _item("HAS OBS CONTEXT", "UIDREF", TRACKING_UID)
    tracking_uid.UID = generate_uid()
    content = [tracking, tracking_uid, _scoord(m)]
    concepts = {"length": LENGTH, "angle": ANGLE, "area": AREA, **STATS}
    for name, (value, unit) in m.values.items():
        content.append(_num(concepts[name], value, unit))
    group.ContentSequence = content
    return group


def build(
    reference: Dataset,
    measurements: Sequence[Measurement],
    observer: str | None = None,
    now: datetime.datetime | None = None,
) -> Dataset:
    """A new SR instance in the study of ``reference`` (one of the measured images), with
    the patient and study attributes copied from it (PS3.3 C.7.1.1, C.7.2.1)."""
    if not measurements:
        raise MeasurementError("no measurement to save")
    now = now or datetime.datetime.now()
    ds = Dataset()
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDescription",
    ):
        ds[keyword] = reference[keyword] if keyword in reference else _empty(keyword)
    ds.SOPClassUID, ds.SOPInstanceUID = COMPREHENSIVE_SR, generate_uid()
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "SR", generate_uid(), 9901
    ds.SeriesDescription = "Measurements (duckpacs viewer)"
    ds.InstanceNumber, ds.Manufacturer = 1, "duckpacs"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code(REPORT)]
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "1500"
    ds.ContentTemplateSequence = [template]
    ds.CompletionFlag, ds.VerificationFlag = "PARTIAL", "UNVERIFIED"
    series = {m.series_uid for m in measurements}
    evidence = Dataset()  # PS3.3 C.17.2.3: the images the report refers to
    evidence.StudyInstanceUID = reference.StudyInstanceUID
    evidence.ReferencedSeriesSequence = [_evidence_series(s, measurements) for s in sorted(series)]
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    language = _item("HAS CONCEPT MOD", "CODE", LANGUAGE)
    language.ConceptCodeSequence = [_code(ENGLISH)]
    content = [language]
    if observer:
        person = _item("HAS OBS CONTEXT", "PNAME", OBSERVER)
        person.PersonName = observer
        content.append(person)
    procedure = _item("HAS CONCEPT MOD", "CODE", PROCEDURE)
    procedure.ConceptCodeSequence = [_code(IMAGING_PROCEDURE)]
    content.append(procedure)
    container = _item("CONTAINS", "CONTAINER", MEASUREMENTS)
    container.ContinuityOfContent = "SEPARATE"
    container.ContentSequence = [_group(m, n) for n, m in enumerate(measurements, 1)]
    content.append(container)
    ds.ContentSequence = content
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _empty(keyword: str) -> DataElement:
    """An empty value for a type 2 attribute the reference image lacks."""
    blank = Dataset()
    setattr(blank, keyword, None)
    return blank[keyword]


def _evidence_series(series_uid: str, measurements: Sequence[Measurement]) -> Dataset:
    s = Dataset()
    s.SeriesInstanceUID = series_uid
    seen: dict[str, str] = {}
    for m in measurements:
        if m.series_uid == series_uid:
            seen[m.sop_instance_uid] = m.sop_class_uid
    refs = []
    for uid, cls in seen.items():
        r = Dataset()
        r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = cls, uid
        refs.append(r)
    s.ReferencedSOPSequence = refs
    return s
