"""An :class:`~duckpacs.web.reader.ArchiveReader` over a plain folder of Part 10 files.

It stands in for the real archive (store + DuckDB index) in the web tests: headers are read
once with pydicom, matching follows PS3.4 C.2.2.2 closely enough for the tests (single value,
``*``/``?`` wildcards, ``-`` ranges, UID lists, case-insensitive fuzzy person names), and
frames are cut from the file the way the store serves them.
"""

from __future__ import annotations

import fnmatch
import io
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from duckpacs.web.reader import IngestOutcome, InstanceLocation

STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDescription",
)
SERIES_KEYS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
)
INSTANCE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "Rows", "Columns")
UID_KEY = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}


def _python_value(ds: Dataset, keyword: str) -> Any:
    elem = ds.get(keyword)
    if elem is None:
        return None
    elem = ds[keyword]
    if elem.VR == "SQ" or elem.value is None or elem.value == "":
        return None
    value = elem.value
    if isinstance(value, pydicom.multival.MultiValue):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, pydicom.valuerep.PersonName):
        return str(value)
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    if isinstance(value, pydicom.valuerep.DSfloat | float):
        return float(value)
    if isinstance(value, int | bytes):
        return value
    return str(value)


def matches(value: Any, pattern: str, fuzzy: bool = False) -> bool:
    """PS3.4 C.2.2.2 matching of one attribute value against one query value."""
    if pattern in ("", "*"):
        return True
    if value is None:
        return False
    values = value if isinstance(value, list) else [value]
    return any(_match_one(str(v), pattern, fuzzy) for v in values)


def _match_one(text: str, pattern: str, fuzzy: bool) -> bool:
    if "\\" in pattern:  # list of UIDs (C.2.2.2.2)
        return text in pattern.split("\\")
    if "-" in pattern and pattern.replace("-", "").replace(".", "").isdigit():  # range
        low, _, high = pattern.partition("-")
        return (not low or text >= low) and (not high or text <= high)
    if fuzzy:
        text, pattern = text.lower(), pattern.lower()
        words = [w for w in text.replace("^", " ").split() if w]
        return any(fnmatch.fnmatchcase(w, pattern + "*") for w in words) or fnmatch.fnmatchcase(
            text, pattern
        )
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(text, pattern.replace("[", "[[]"))
    return text == pattern


class FolderReader:
    """Serves every ``.dcm`` file under ``root``; :meth:`ingest` writes new files there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._entries: list[tuple[Dataset, Path]] = []
        for path in sorted(root.rglob("*.dcm")):
            self._add(path)

    def _add(self, path: Path) -> Dataset:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        with self._lock:
            self._entries = [(d, p) for d, p in self._entries if p != path]
            self._entries.append((ds, path))
        return ds

    def _select(self, query: Mapping[str, str], fuzzy: bool = False) -> list[tuple[Dataset, Path]]:
        with self._lock:
            entries = list(self._entries)
        # ModalitiesInStudy matches the Modality of any instance (PS3.4 C.6.2.1.2).
        renamed = {("Modality" if k == "ModalitiesInStudy" else k): v for k, v in query.items()}
        return [
            (ds, path)
            for ds, path in entries
            if all(
                matches(_python_value(ds, k), v, fuzzy and k.endswith("Name"))
                for k, v in renamed.items()
            )
        ]

    def find(
        self,
        level: str,
        query: Mapping[str, str],
        return_keys: Sequence[str],
        *,
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        uid_keys = {
            "study": ["StudyInstanceUID"],
            "series": ["StudyInstanceUID", "SeriesInstanceUID"],
            "instance": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        }[level]
        grouped: dict[str, list[Dataset]] = {}
        for ds, _ in self._select(query, fuzzy):
            grouped.setdefault(str(ds[UID_KEY[level]].value), []).append(ds)
        rows = []
        for datasets in grouped.values():
            first = datasets[0]
            row = {k: _python_value(first, k) for k in [*uid_keys, *return_keys]}
            if level == "study":
                row["NumberOfStudyRelatedSeries"] = len(
                    {str(d.SeriesInstanceUID) for d in datasets}
                )
                row["NumberOfStudyRelatedInstances"] = len(datasets)
                row["ModalitiesInStudy"] = sorted({str(d.get("Modality", "")) for d in datasets})
            elif level == "series":
                row["NumberOfSeriesRelatedInstances"] = len(datasets)
            rows.append(row)
        rows.sort(key=lambda r: tuple(str(r.get(k) or "") for k in uid_keys))
        end = None if limit is None else offset + limit
        return rows[offset:end]

    def locations(self, level: str, query: Mapping[str, str]) -> list[InstanceLocation]:
        found = [
            InstanceLocation(
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                handle=path,
                instance_number=int(ds.InstanceNumber) if ds.get("InstanceNumber") else None,
                number_of_frames=int(ds.get("NumberOfFrames") or 1),
            )
            for ds, path in self._select(query)
        ]
        found.sort(key=lambda loc: (loc.series_uid, loc.instance_number or 0, loc.sop_instance_uid))
        return found

    def read_instance(self, location: InstanceLocation) -> bytes:
        return Path(location.handle).read_bytes()

    def stream_instance(self, location: InstanceLocation) -> Iterator[bytes]:
        with Path(location.handle).open("rb") as f:
            while piece := f.read(1 << 20):
                yield piece

    def large_header(self, location: InstanceLocation) -> bytes | None:
        return None

    def frame_dataset(self, location: InstanceLocation, number: int) -> tuple[Any, int]:
        return pydicom.dcmread(io.BytesIO(self.read_instance(location))), number

    def read_frame(self, location: InstanceLocation, number: int) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(self.read_instance(location)))
        frames = int(ds.get("NumberOfFrames") or 1)
        if not 1 <= number <= frames:
            raise IndexError(f"frame {number} out of range 1..{frames}")
        if UID(location.transfer_syntax).is_compressed:
            for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
                if i == number - 1:
                    return frame
            raise IndexError(f"frame {number} not found in the encapsulated pixel data")
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel") or 1)
        size = int(ds.Rows) * int(ds.Columns) * samples * bits // 8
        data: bytes = ds.PixelData
        return data[(number - 1) * size : number * size]

    def ingest_file(self, path: Path) -> IngestOutcome:
        """A spooled STOW-RS part, moved into the folder (never read whole)."""
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            sop_class, sop_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        except Exception as e:  # noqa: BLE001 (any parse failure is a 0xC000 for the client)
            return IngestOutcome(None, None, failure=0xC000, reason=f"cannot parse: {e}")
        target = self.root / "ingested" / f"{sop_instance}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
        self._add(target)
        return IngestOutcome(sop_class, sop_instance, study, series)

    def ingest(self, data: bytes) -> IngestOutcome:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            sop_class = str(ds.SOPClassUID)
            sop_instance = str(ds.SOPInstanceUID)
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        except Exception as e:  # noqa: BLE001 (any parse failure is a 0xC000 for the client)
            return IngestOutcome(None, None, failure=0xC000, reason=f"cannot parse: {e}")
        path = self.root / "ingested" / f"{sop_instance}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._add(path)
        return IngestOutcome(sop_class, sop_instance, study, series)
