"""FacadeReader: DICOMweb over something shaped like ``duckpacs.archive.Archive`` (index rows
as DICOM text, locate() tuples, store() results), frames from a store-like frame reader."""

from __future__ import annotations

import enum
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pydicom
import pydicom.data
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from duckpacs.web.archive_reader import FacadeReader
from tests.web_support.folder_reader import FolderReader
from tests.web_support.server import WebServer, web_server

LEVELS = {"STUDY": "study", "SERIES": "series", "IMAGE": "instance"}


class Location(NamedTuple):
    path: str


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE_KEPT_FIRST = "duplicate-kept-first"
    REJECTED = "rejected"


@dataclass(frozen=True)
class StoreResult:
    outcome: Outcome
    status: int
    sop_instance_uid: str
    reason: str = ""


def _text(value: Any) -> Any:
    """Values the way the DuckDB index returns them: DICOM text, backslash-separated."""
    if value is None:
        return None
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value)


class FakeFacade:
    """The archive facade's surface, over a folder."""

    def __init__(self, folder: FolderReader) -> None:
        self.folder = folder
        self.frame_reads: list[tuple[str, int]] = []

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        rows = self.folder.find(
            LEVELS[level], query, return_keys, fuzzy=fuzzy, limit=limit, offset=offset
        )
        return [{k: _text(v) for k, v in row.items()} for row in rows]

    def locate(self, level: str, query: dict[str, Any]) -> list[tuple[str, str, str, Location]]:
        return [
            (
                loc.sop_instance_uid,
                loc.sop_class_uid,
                loc.transfer_syntax,
                Location(str(loc.handle)),
            )
            for loc in self.folder.locations(LEVELS[level], query)
        ]

    def read(self, location: Location) -> bytes:
        return Path(location.path).read_bytes()

    def get_frame(self, location: Location, index: int) -> bytes:
        self.frame_reads.append((location.path, index))
        (loc,) = [
            x for x in self.folder.locations("instance", {}) if str(x.handle) == location.path
        ]
        return self.folder.read_frame(loc, index + 1)

    def store(self, data: bytes) -> StoreResult:
        try:
            uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        except Exception:  # noqa: BLE001
            return StoreResult(Outcome.REJECTED, 0xC000, "", "malformed")
        if self.folder.locations("instance", {"SOPInstanceUID": uid}):
            return StoreResult(Outcome.DUPLICATE_KEPT_FIRST, 0xB006, uid, "kept the first copy")
        self.folder.ingest(data)
        return StoreResult(Outcome.STORED, 0x0000, uid)


@pytest.fixture(scope="module")
def facade_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, FakeFacade]]:
    made: list[FakeFacade] = []

    def wrap(folder: FolderReader) -> FacadeReader:
        made.append(FakeFacade(folder))
        return FacadeReader(made[0], frame_reader=made[0].get_frame)

    with web_server(Path(tmp_path_factory.mktemp("facade")), wrap=wrap) as server:
        yield server, made[0]


def test_search_and_retrieve_through_the_facade(facade_web: tuple[WebServer, FakeFacade]) -> None:
    web, _ = facade_web
    c = DICOMwebClient(url=web.dicomweb)
    path = web.files["rtdose.dcm"]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    (study,) = c.search_for_studies(search_filters={"PatientID": ds.PatientID})
    assert study["00201208"] == {"vr": "IS", "Value": [1]}
    (instance,) = c.search_for_instances(str(ds.StudyInstanceUID))
    assert instance["00280008"] == {"vr": "IS", "Value": [15]}
    got = c.retrieve_instance(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    )
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    meta = c.retrieve_series_metadata(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
    assert meta[0]["7FE00010"]["BulkDataURI"] == f"instances/{ds.SOPInstanceUID}/bulkdata/7FE00010"


def test_frames_come_from_the_frame_reader(facade_web: tuple[WebServer, FakeFacade]) -> None:
    web, facade = facade_web
    path = web.files["rtdose.dcm"]
    ds = pydicom.dcmread(path)
    c = DICOMwebClient(url=web.dicomweb)
    frames = c.retrieve_instance_frames(
        str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), [3, 15]
    )
    size = ds.Rows * ds.Columns * ds.BitsAllocated // 8
    assert frames == [ds.PixelData[2 * size : 3 * size], ds.PixelData[14 * size : 15 * size]]
    assert facade.frame_reads[-2:] == [(str(path), 2), (str(path), 14)]


def test_stow_maps_store_results(
    facade_web: tuple[WebServer, FakeFacade], caplog: pytest.LogCaptureFixture
) -> None:
    """...and logs one INFO line per request, and each conflict as a WARNING with its UID."""
    caplog.set_level(logging.INFO, logger="duckpacs.web")
    web, _ = facade_web
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    c = DICOMwebClient(url=web.dicomweb)
    first = c.store_instances([ds])
    assert first.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert "WarningReason" not in first.ReferencedSOPSequence[0]
    buf = io.BytesIO()
    ds.save_as(buf)
    again = requests.post(
        f"{web.dicomweb}/studies",
        data=buf.getvalue(),
        headers={"Content-Type": "application/dicom"},
    )
    assert again.status_code == 202
    item = again.json()["00081199"]["Value"][0]
    assert item["00081196"] == {"vr": "US", "Value": [0xB006]}
    requests_logged = [r for r in caplog.records if r.getMessage().startswith("STOW-RS request")]
    assert [r.levelno for r in requests_logged] == [logging.INFO, logging.INFO]
    assert "stored=1" in requests_logged[0].getMessage()
    assert "warnings=1" in requests_logged[1].getMessage()
    (conflict,) = [r for r in caplog.records if r.getMessage().startswith("STOW-RS conflict")]
    assert conflict.levelno == logging.WARNING
    assert str(ds.SOPInstanceUID) in conflict.getMessage() and "0xB006" in conflict.getMessage()


class FileFacade(FakeFacade):
    """A facade that stores Part 10 files from their path (as ``Archive.store_file``)."""

    def __init__(self, folder: FolderReader) -> None:
        super().__init__(folder)
        self.files: list[Path] = []

    def store_file(self, path: Path) -> StoreResult:
        self.files.append(path)
        return self.store(path.read_bytes())


def test_spooled_stow_parts_go_to_the_facades_store_file(tmp_path: Path) -> None:
    folder = FolderReader(tmp_path / "empty")
    new = tmp_path / "new.dcm"
    ds = pydicom.dcmread(str(pydicom.data.get_testdata_file("CT_small.dcm")))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(new)
    with_file = FileFacade(folder)
    outcome = FacadeReader(with_file).ingest_file(new)
    assert outcome.failure is None and outcome.sop_instance_uid == ds.SOPInstanceUID
    assert with_file.files == [new]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(new)
    plain = FakeFacade(folder)  # no store_file: the file is read and stored as bytes
    outcome = FacadeReader(plain).ingest_file(new)
    assert outcome.failure is None and outcome.sop_instance_uid == ds.SOPInstanceUID
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not DICOM")
    assert FacadeReader(with_file).ingest_file(junk).failure == 0xC000
    assert with_file.files == [new]
