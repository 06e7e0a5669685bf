"""Migration from difficult peers (Debian's Orthanc configured to be one).

- A peer capping its C-FIND answers (``LimitFindResults`` 2 for 9 studies,
  ``LimitFindInstances`` 2) holding studies no date window matches: without a Study Date,
  dated outside every window, without a Study Time on a day that needs splitting by hour.
- ``migrate --verify`` after an instance is lost from the archive, and the run that heals it.
- A peer refusing C-GET (``AllowGet: false`` for our AE title: Orthanc aborts the C-GET), and
  one whose study lists fewer SOP classes than it holds: C-MOVE to our own AE title.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from duckpacs.cli.main import main
from duckpacs.ingest.migrate import (
    FolderTarget,
    MoveDestination,
    RemotePeer,
    RemoteStudy,
    open_archive,
)
from duckpacs.ingest.migrate.run import Retrieval
from tests.helpers import free_port
from tests.interop.orthanc import Orthanc, orthanc_binary, run_orthanc
from tests.test_ingest_migrate import FILES, archive_contents, expected_studies

pytestmark = pytest.mark.interop

ROOT = "1.2.826.0.1.3680043.9.7433.21"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


@dataclass(frozen=True)
class Made:
    """A study made for the capped peer: its keys and its instances' (series, SOP class)."""

    n: int
    date: str
    time: str
    patient: str
    instances: tuple[tuple[str, str], ...] = (("1", CT),)

    @property
    def uid(self) -> str:
        return f"{ROOT}.{self.n}"

    def sop_uids(self) -> list[str]:
        return [f"{self.uid}.{series}.{i}" for i, (series, _) in enumerate(self.instances)]


STUDIES = [
    # One busy day: three studies in the 08 h hour (three patients), one in the afternoon,
    # one without a Study Time (no hour range matches it).
    Made(1, "20200615", "080000", "PA01", (("1", CT), ("1", CT), ("2", CT))),
    Made(2, "20200615", "083000", "PB02"),
    Made(3, "20200615", "084500", "PB03"),
    Made(4, "20200615", "140000", "PC04"),
    Made(5, "20200615", "", "PC05"),
    Made(6, "", "", "PD06"),  # no Study Date
    Made(7, "", "", "PA01"),  # PA01's second study, without a Study Date
    Made(8, "20991231", "101010", "PE08"),  # a date outside every window
    Made(9, "20190305", "101010", "PF09", (("1", CT), ("2", MR))),  # two SOP classes
]


def instance(made: Made, series: str, sop_class: str, sop_uid: str) -> bytes:
    """A small CT or MR instance (pydicom's) relabelled into ``made``."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm" if sop_class == CT else "MR_small.dcm"))
    ds.StudyInstanceUID = made.uid
    ds.SeriesInstanceUID = f"{made.uid}.{series}"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.StudyDate, ds.StudyTime = made.date, made.time
    ds.PatientID, ds.PatientName = made.patient, f"Test^{made.patient}"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class Legacy:
    peer: RemotePeer
    server: Orthanc
    move_port: int  # where the peer sends C-MOVE results: our AE title DUCKPACS

    def cli(self, data: Path, *more: str) -> list[str]:
        """``duckpacs migrate`` arguments for this peer into the archive at ``data``."""
        peer = f"{self.peer.ae_title}@{self.peer.host}:{self.peer.port}"
        return ["migrate", "--data", str(data), "--from", peer, "--calling-ae", "DUCKPACS",
                "--port", str(self.move_port), *more]  # fmt: skip


@contextmanager
def legacy(work: Path, allow_get: bool, options: dict[str, object]) -> Iterator[Legacy]:
    if orthanc_binary() is None:
        pytest.skip("Orthanc not installed (Debian package orthanc)")
    move_port = free_port()
    us = {"AET": "DUCKPACS", "Host": "127.0.0.1", "Port": move_port, "AllowGet": allow_get}
    with run_orthanc(work, {"duckpacs": us}, aet="LEGACY", options=options) as server:
        peer = RemotePeer("LEGACY", "127.0.0.1", server.dicom_port, "DUCKPACS", timeout=30)
        yield Legacy(peer, server, move_port)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legacy]:
    """Orthanc answering at most 2 studies or patients, 2 instances, per C-FIND."""
    options = {"LimitFindResults": 2, "LimitFindInstances": 2}
    with legacy(tmp_path_factory.mktemp("capped"), True, options) as peer:
        for made in STUDIES:
            for (series, sop_class), sop in zip(made.instances, made.sop_uids(), strict=True):
                peer.server.rest("/instances", instance(made, series, sop_class, sop))
        yield peer


@pytest.fixture(autouse=True)
def listen_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C-MOVE listener binds dimse.bind: keep network tests on 127.0.0.1."""
    monkeypatch.setenv("DUCKPACS_DIMSE_BIND", "127.0.0.1")


def all_sop_uids() -> set[str]:
    return {sop for made in STUDIES for sop in made.sop_uids()}


def test_capped_peer_every_study_found_and_migrated(
    capped: Legacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "archive"
    assert main(capped.cli(data, "--json")) == 0, capsys.readouterr()
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["studies_found"] == report["studies_done"] == 9
    assert report["undated"] == 2  # studies 6 and 7
    assert report["found_outside_windows"] == 4  # 5 (no Study Time), 6, 7, 8 (in 2099)
    assert report["enumeration"] == "listing every patient's studies"
    assert report["cannot_be_listed"] == [] and report["not_done"] == []
    assert report["instances_found"] == report["instances_archived"] == len(all_sop_uids())
    assert report["retrieved_by_move"] == 0
    live, archived = archive_contents(data)
    assert live == len(archived) and set(archived) == all_sop_uids()
    # A rerun fetches nothing and says the same in words.
    assert main(capped.cli(data)) == 0
    out = capsys.readouterr().out
    assert "remote: 9 studies, 12 instances" in out and "studies without a Study Date: 2" in out
    assert "4 more found outside the windows by listing every patient's studies" in out
    assert "stored 0 new instances" in out


def test_verify_finds_a_lost_instance_and_the_next_run_heals_it(
    capped: Legacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "archive"
    assert main(capped.cli(data)) == 0
    capsys.readouterr()
    assert main(capped.cli(data, "--verify")) == 0
    assert "verified: 9 studies hold every instance" in capsys.readouterr().out
    # One instance of the three-instance study disappears from the store and the index.
    busy = STUDIES[0]
    lost = busy.sop_uids()[2]
    with open_archive(data) as target:
        ((_, _, _, pack, offset, length),) = target.index.locations(
            "image", {"SOPInstanceUID": lost}
        )
        target.importer.store.delete((pack, offset, length))
        target.index.remove([lost])
    assert main(capped.cli(data, "--verify", "--json")) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["not_done"] == [
        {"uid": busy.uid, "status": "missing", "reason": "1 of 3 instances not in the archive",
         "missing": [lost]}
    ]  # fmt: skip
    assert report["summary"]["files"] == 9 and report["stored"] == 0  # nothing fetched
    assert main(capped.cli(data, "--verify")) == 1
    assert f"missing: {busy.uid}: 1 of 3 instances not in the archive: {lost}" in (
        capsys.readouterr().out
    )
    # The next migration fetches that study again, and the archive is whole.
    assert main(capped.cli(data, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["stored"] == 1
    assert main(capped.cli(data, "--verify")) == 0
    assert set(archive_contents(data)[1]) == all_sop_uids()


def test_sop_classes_the_c_get_did_not_bring_come_by_c_move(capped: Legacy, tmp_path: Path) -> None:
    """The peer lists only CT for a study that also holds an MR series (a stale SOP Classes
    in Study): C-GET offers CT alone, the peer cannot send the MR, C-MOVE brings it."""
    two = STUDIES[8]
    stale = RemoteStudy(two.uid, two.date, two.patient, 2, (CT,))
    target = FolderTarget.into(tmp_path / "out")
    retrieval = Retrieval(capped.peer, MoveDestination("DUCKPACS", "127.0.0.1", capped.move_port))
    try:
        fetched = retrieval.fetch(stale, target.begin(stale))
    finally:
        retrieval.close()
    assert fetched.method == "C-GET+C-MOVE" and not fetched.problem
    assert fetched.listing is not None and fetched.listing.uids == set(two.sop_uids())
    assert target.lacking(set(two.sop_uids())) == set()
    assert retrieval.get_refused == ""  # the peer does C-GET; it just could not send that one


@pytest.fixture(scope="module")
def no_get(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legacy]:
    """Orthanc that refuses C-GET from our AE title (it aborts the association)."""
    with legacy(tmp_path_factory.mktemp("noget"), False, {}) as peer:
        for name in FILES:
            peer.server.rest("/instances", Path(get_testdata_file(name)).read_bytes())
        yield peer


def test_peer_refusing_c_get_is_migrated_by_c_move(
    no_get: Legacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = expected_studies()
    total = sum(map(len, expected.values()))
    data = tmp_path / "archive"
    assert main(no_get.cli(data, "--json")) == 0, capsys.readouterr()
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["studies_done"] == len(expected)
    assert report["retrieved_by_move"] == len(expected)
    assert "aborted the C-GET" in report["get_refused"]
    assert report["stored"] == report["instances_archived"] == total
    live, archived = archive_contents(data)
    assert live == len(archived) == total
    for datasets in expected.values():
        for original in datasets:
            copy = pydicom.dcmread(io.BytesIO(archived[str(original.SOPInstanceUID)]))
            # As stored: the listener accepts the syntax the peer offers first, its own.
            assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            assert copy.get("PixelData") == original.get("PixelData")
    assert not (data / "migrate" / "staging").exists()  # stored as received: nothing staged
    # The journal remembers how each study came; a rerun fetches nothing and says so.
    assert main(no_get.cli(data)) == 0
    out = capsys.readouterr().out
    assert f"retrieved by C-MOVE: {len(expected)} studies" in out and "stored 0 new" in out


def test_c_move_needs_the_listener_port(
    no_get: Legacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the listener the study fails with a reason naming the port (here: taken)."""
    with socket.socket() as taken:
        # Past listeners' connections may linger in TIME_WAIT; a listening socket still
        # keeps every other socket off the port.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", no_get.move_port))
        taken.listen()
        assert main(no_get.cli(tmp_path / "archive", "--max-studies", "1")) == 1
    out = capsys.readouterr().out
    assert f"cannot listen on 127.0.0.1:{no_get.move_port} for C-MOVE results" in out
