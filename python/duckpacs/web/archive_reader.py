"""The :class:`~duckpacs.web.reader.ArchiveReader` over the archive facade
(``duckpacs.archive.Archive``: store + DuckDB index) and, for frames, the Rust store.

The facade is duck-typed here (:class:`Facade`) so the web layer does not import the ingest
machinery. What the adapter adds: the study/series UIDs, instance number and frame count of
each located instance (one IMAGE-level find, PS3.4 C.6.1.1.5), per-frame reads straight from
the store's frame chunks when given ``frame_reader`` (no decoding of the whole instance),
and STOW-RS outcomes mapped onto PS3.18 failure reasons.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID

from duckpacs import _core
from duckpacs.web.reader import IngestOutcome, InstanceLocation

LEVELS = {"study": "STUDY", "series": "SERIES", "instance": "IMAGE"}
PLACEMENT_KEYS = [
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "NumberOfFrames",
]
WARNING_STATUSES = {0xB000, 0xB006, 0xB007}


class Facade(Protocol):
    """The parts of ``duckpacs.archive.Archive`` the web layer uses."""

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]: ...

    def locate(self, level: str, query: dict[str, Any]) -> Sequence[Sequence[Any]]:
        """(sop_instance_uid, sop_class_uid, transfer_syntax, location) per instance."""
        ...

    def read(self, location: Any) -> bytes: ...

    def stream(self, location: Any) -> _core.InstanceStream: ...

    def store(self, data: bytes) -> Any:
        """A result with ``outcome`` (``.value`` "rejected" when refused), ``status``,
        ``sop_instance_uid`` and ``reason``."""
        ...


def _first(value: Any) -> str:
    """The first value of DICOM text (``a\\b``) or of a list, as text; "" when empty."""
    if value is None:
        return ""
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value).split("\\")[0].strip()


def _int(value: Any, default: int | None) -> int | None:
    text = _first(value)
    try:
        return int(float(text)) if text else default
    except ValueError:
        return default


# Records at least this long in the store are served as a stream, never read whole.
STREAM_AT = 8 * 1024 * 1024


class FacadeReader:
    """ArchiveReader over the archive facade; ``frame_reader(location, index0)`` is the
    store's ``get_frame``, ``header(location)`` the record's bytes before its pixel data."""

    def __init__(
        self,
        archive: Facade,
        frame_reader: Callable[[Any, int], bytes] | None = None,
        *,
        lookup: Callable[[str], Any] | None = None,
        record_meta: Callable[[Any], Mapping[str, Any]] | None = None,
        header: Callable[[Any], bytes] | None = None,
    ) -> None:
        self.archive = archive
        self.frame_reader = frame_reader
        self.lookup = lookup
        self.record_meta = record_meta
        self.header = header  # the stored bytes before the pixel data

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
        return self.archive.find(
            LEVELS[level], dict(query), list(return_keys), fuzzy, limit, offset
        )

    def _one_instance(self, query: Mapping[str, str]) -> list[InstanceLocation] | None:
        """An instance named by its three UIDs (the WADO-RS instance and frame URLs): one
        point lookup by SOP Instance UID and the store record's own header, instead of two
        index queries. None when this path cannot answer (then the index is asked)."""
        uid = query.get("SOPInstanceUID", "")
        if self.lookup is None or self.record_meta is None or not uid or "*" in uid:
            return None
        ref = self.lookup(uid)
        if ref is None:
            return []
        meta = self.record_meta(ref.location)
        frames = int(meta.get("frames") or 0)
        if frames < 1:  # stored whole (deflated): frame count from the index
            return None
        study, series = str(meta.get("study_instance_uid")), str(meta.get("series_instance_uid"))
        if query.get("StudyInstanceUID", study) != study:
            return []
        if query.get("SeriesInstanceUID", series) != series:
            return []
        location = InstanceLocation(
            study, series, uid, str(ref.sop_class_uid), str(ref.transfer_syntax),
            handle=ref.location, number_of_frames=frames,
        )  # fmt: skip
        return [location]

    def locations(self, level: str, query: Mapping[str, str]) -> list[InstanceLocation]:
        if level == "instance":
            fast = self._one_instance(query)
            if fast is not None:
                return fast
        refs = self.archive.locate(LEVELS[level], dict(query))
        if not refs:
            return []
        rows = self.archive.find("IMAGE", dict(query), PLACEMENT_KEYS)
        placed = {_first(r.get("SOPInstanceUID")): r for r in rows}
        found = []
        for sop_uid, sop_class, syntax, location in (tuple(r)[:4] for r in refs):
            row = placed.get(str(sop_uid), {})
            found.append(
                InstanceLocation(
                    study_uid=_first(row.get("StudyInstanceUID"))
                    or query.get("StudyInstanceUID", ""),
                    series_uid=_first(row.get("SeriesInstanceUID")),
                    sop_instance_uid=str(sop_uid),
                    sop_class_uid=str(sop_class),
                    transfer_syntax=str(syntax),
                    handle=location,
                    instance_number=_int(row.get("InstanceNumber"), None),
                    number_of_frames=_int(row.get("NumberOfFrames"), 1) or 1,
                )
            )
        found.sort(key=lambda loc: (loc.series_uid, loc.instance_number or 0, loc.sop_instance_uid))
        return found

    def read_instance(self, location: InstanceLocation) -> bytes:
        return self.archive.read(location.handle)

    def stream_instance(self, location: InstanceLocation) -> Iterator[bytes]:
        handle = location.handle
        if not _large(handle):
            yield self.read_instance(location)
            return
        yield from self.archive.stream(handle)

    def frame_dataset(self, location: InstanceLocation, number: int) -> tuple[Dataset, int]:
        handle = location.handle
        if not _large(handle) or UID(location.transfer_syntax).is_compressed or self.header is None:
            return pydicom.dcmread(io.BytesIO(self.read_instance(location))), number
        ds = pydicom.dcmread(io.BytesIO(self.header(handle)), force=True)
        ds.PixelData = self.read_frame(location, number)
        ds["PixelData"].VR = "OB" if int(ds.get("BitsAllocated", 16)) <= 8 else "OW"
        ds.NumberOfFrames = 1
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame is not None and len(per_frame) >= number:
            ds.PerFrameFunctionalGroupsSequence = [per_frame[number - 1]]
        return ds, 1

    def large_header(self, location: InstanceLocation) -> bytes | None:
        handle = location.handle
        if not _large(handle) or self.header is None:
            return None
        header = self.header(handle)
        stream = self.archive.stream(handle)
        head = b""
        for piece in stream:  # the record's first pieces hold the header
            head += piece
            if len(head) >= len(header) + 12:
                break
        element = _pixel_element_header(head[len(header) :], location.transfer_syntax)
        if element is None:
            return None
        value_length = int.from_bytes(element[-4:], "little")
        if value_length == 0xFFFFFFFF or len(header) + len(element) + value_length != stream.size:
            return None  # encapsulated, or elements after the pixel data: read it whole
        return header + element

    def read_frame(self, location: InstanceLocation, number: int) -> bytes:
        if not 1 <= number <= location.number_of_frames:
            raise IndexError(f"frame {number} out of range 1..{location.number_of_frames}")
        if self.frame_reader is not None:
            return self.frame_reader(location.handle, number - 1)
        return _frame_from_part10(self.read_instance(location), location, number)

    def ingest(self, data: bytes) -> IngestOutcome:
        return self._ingest(io.BytesIO(data), lambda: self.archive.store(data))

    def ingest_file(self, path: Path) -> IngestOutcome:
        """Store a Part 10 file (a large STOW-RS part spooled to disk): through the facade's
        ``store_file`` when it has one (stored from the file in bounded memory), else read."""
        store_file = getattr(self.archive, "store_file", None)
        if store_file is not None:
            return self._ingest(path, lambda: store_file(path))
        return self.ingest(path.read_bytes())

    def _ingest(self, source: Any, store: Callable[[], Any]) -> IngestOutcome:
        try:
            head = pydicom.dcmread(source, stop_before_pixels=True)
            study, series = str(head.StudyInstanceUID), str(head.SeriesInstanceUID)
            sop_class = str(head.SOPClassUID)
        except Exception as e:  # noqa: BLE001 (any parse failure is a 0xC000 for the client)
            return IngestOutcome(None, None, failure=0xC000, reason=f"cannot parse: {e}")
        result = store()
        uid = str(result.sop_instance_uid) or str(head.get("SOPInstanceUID", "")) or None
        outcome = getattr(result.outcome, "value", result.outcome)
        if outcome == "rejected":
            return IngestOutcome(
                sop_class, uid, study, series, failure=int(result.status), reason=result.reason
            )
        status = int(result.status)
        warning = status if status in WARNING_STATUSES else None
        return IngestOutcome(sop_class, uid, study, series, reason=result.reason, warning=warning)


def _frame_from_part10(data: bytes, location: InstanceLocation, number: int) -> bytes:
    """Cut one frame out of a Part 10 stream (used when no frame reader is given)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = location.number_of_frames
    if UID(location.transfer_syntax).is_compressed:
        for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
            if i == number - 1:
                return frame
        raise IndexError(f"frame {number} not found in the encapsulated pixel data")
    samples = int(ds.get("SamplesPerPixel") or 1)
    size = int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated) // 8
    value: bytes = ds.PixelData
    return value[(number - 1) * size : number * size]


def _pixel_element_header(data: bytes, syntax: str) -> bytes | None:
    """The (7FE0,0010) element's header at the start of ``data`` (PS3.5 7.1.2: 12 bytes in
    Explicit VR Little Endian with an OB/OW VR, 8 in Implicit VR Little Endian)."""
    if data[:4] != b"\xe0\x7f\x10\x00":
        return None
    if syntax == "1.2.840.10008.1.2":
        return data[:8] if len(data) >= 8 else None
    return data[:12] if len(data) >= 12 and data[4:6] in (b"OB", b"OW") else None


def _large(handle: Any) -> bool:
    """Whether a store location (pack, offset, length) is a record to stream, not read whole."""
    return isinstance(handle, tuple) and len(handle) == 3 and handle[2] >= STREAM_AT
