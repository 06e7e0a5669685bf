"""In-memory store and index, for tests only.

They implement the same protocols as the real Rust store and DuckDB index
(:mod:`duckpacs.archive.types`) so the DIMSE tests run without disk or DuckDB; the product
path (``duckpacs serve``) never uses them. The describer here uses pydicom, which the product
ingest path must not.
"""

from __future__ import annotations

import errno
import fnmatch
import threading
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.multival import MultiValue

from duckpacs.archive import Archive
from duckpacs.archive.types import IndexEntry, InstanceRef, Location
from duckpacs.errors import ParseError

LEVEL_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[Location, bytes] = {}
        self.lock = threading.Lock()
        self.full = False
        self.puts = 0

    def put(
        self, data: bytes, *, received_at_us: int = 0, source_ae: str = "", hold: bool = False
    ) -> Location:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        with self.lock:
            location = Location(0, self.puts, len(data))
            self.puts += 1
            self.records[location] = bytes(data)
        return location

    def get(self, location: Location) -> bytes:
        return self.records[location]

    def low_water(self) -> dict[int, int]:
        return {}  # nothing to recover: the memory store does not survive its process

    def settle(self, locations: list[Location]) -> None:
        pass


def describe(data: bytes, transfer_syntax: str, source_ae: str = "") -> dict[str, str]:
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
        row = {}
        for element in ds:
            if element.keyword and element.VR != "SQ":
                value = element.value
                if isinstance(value, MultiValue):
                    value = "\\".join(str(v) for v in value)
                row[element.keyword] = "" if value is None else str(value)
    except Exception as e:
        raise ParseError(f"cannot parse dataset: {e}") from None
    if "SOPInstanceUID" not in row:
        raise ParseError("no SOP Instance UID (0008,0018)")
    return row


def _matches(value: str, wanted: str) -> bool:
    if "\\" in wanted:  # list of UIDs (PS3.4 C.2.2.2.2)
        return value in wanted.split("\\")
    if "*" in wanted or "?" in wanted:  # wildcard (C.2.2.2.4)
        return fnmatch.fnmatchcase(value, wanted)
    if "-" in wanted and wanted.replace("-", "").isdigit():  # date range (C.2.2.2.5)
        low, _, high = wanted.partition("-")
        return (not low or value >= low) and (not high or value <= high)
    return value == wanted


class MemoryCatalog:
    def __init__(self) -> None:
        self.instances: dict[str, tuple[InstanceRef, dict[str, str]]] = {}
        self.lock = threading.Lock()

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None:
        hit = self.instances.get(sop_instance_uid)
        return hit[0] if hit else None

    def add(
        self, entries: list[IndexEntry], marks: dict[int, int] | None = None
    ) -> list[InstanceRef | None]:
        out: list[InstanceRef | None] = []
        with self.lock:
            for entry in entries:
                uid = entry.ref.sop_instance_uid
                if uid in self.instances:
                    out.append(self.instances[uid][0])
                else:
                    self.instances[uid] = (entry.ref, entry.row)
                    out.append(None)
        return out

    def replace(self, entry: IndexEntry) -> None:
        with self.lock:
            self.instances[entry.ref.sop_instance_uid] = (entry.ref, entry.row)

    def _matching(self, query: dict[str, Any]) -> list[tuple[InstanceRef, dict[str, str]]]:
        return [
            (ref, row)
            for ref, row in self.instances.values()
            if all(_matches(row.get(k, ""), str(v)) for k, v in query.items())
        ]

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        key = LEVEL_KEYS[level]
        seen: dict[str, dict[str, Any]] = {}
        for _ref, row in self._matching(query):
            seen.setdefault(row.get(key, ""), {k: row.get(k) for k in [*return_keys, key]})
        rows = list(seen.values())[offset:]
        return rows[:limit] if limit is not None else rows

    def locate(self, level: str, query: dict[str, Any]) -> list[InstanceRef]:
        return [ref for ref, _row in self._matching(query)]


def memory_archive(on_conflict: str = "keep-first") -> Archive:
    return Archive(MemoryStore(), describe, MemoryCatalog(), on_conflict=on_conflict)
