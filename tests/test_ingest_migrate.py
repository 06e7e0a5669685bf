"""Migration from a legacy PACS (Debian's Orthanc): C-GET per study, journal, resume, reconcile.

The peer holds pydicom's own files: distinct studies dated 1997 to 2017, and one (test-SR)
without a Study Date or a Patient ID, which only the enumeration after the date windows finds.
The planner's splitting and enumeration against capped peers: test_ingest_migrate_plan.py;
Orthanc capping, refusing C-GET, and --verify: test_ingest_migrate_peers.py.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import struct
from collections.abc import Iterator
from contextlib import closing
from datetime import date
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from duckpacs import _core
from duckpacs.cli.main import main
from duckpacs.errors import NetworkError
from duckpacs.index import Index
from duckpacs.ingest.migrate import (
    DimseFinder,
    Journal,
    NotDone,
    RemotePeer,
    RemoteStudy,
    Scope,
    Span,
    find_everything,
    folder_receiver,
    get_study,
    journal_path,
    list_instances,
    migrate,
    open_archive,
    open_journal,
)
from duckpacs.ingest.migrate.reconcile import image_limits
from tests.helpers import free_port
from tests.ingest_support import holding_index
from tests.interop.orthanc import orthanc_binary, run_orthanc

# Distinct studies among pydicom's own files; test-SR has neither Study Date nor Patient ID.
FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "waveform_ecg.dcm",
    "liver_1frame.dcm",
    "examples_ybr_color.dcm",
    "rtdose.dcm",
    "test-SR.dcm",
]


def expected_studies() -> dict[str, list[pydicom.Dataset]]:
    studies: dict[str, list[pydicom.Dataset]] = {}
    for name in FILES:
        ds = pydicom.dcmread(get_testdata_file(name))
        studies.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    return studies


# pynetdicom leaves the refused socket to the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreachable_peer_is_a_network_error(tmp_path: Path) -> None:
    peer = RemotePeer("NOBODY", "127.0.0.1", free_port(), timeout=5)
    with open_journal(tmp_path / "j.sqlite") as journal, pytest.raises(NetworkError):
        find_everything(peer, journal, Span(date(2020, 1, 1), date(2020, 1, 2)), 500)
    gc.collect()  # collect the socket here, under this test's warning filters


# --- against a real Orthanc ------------------------------------------------------------------


def _dataset_bytes(part10: bytes) -> bytes:
    """The bytes after the File Meta Information (PS3.10 7.1: group length at 140)."""
    (meta_length,) = struct.unpack_from("<I", part10, 140)
    return part10[144 + meta_length :]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemotePeer]:
    """A Debian Orthanc loaded with FILES; the tests only read from it."""
    if orthanc_binary() is None:
        pytest.skip("Orthanc not installed (Debian package orthanc)")
    work = tmp_path_factory.mktemp("orthanc")
    modalities = {"duckpacs": ("DUCKPACS", "127.0.0.1", free_port())}
    with run_orthanc(work, modalities, aet="LEGACY") as server:
        for name in FILES:
            server.rest("/instances", Path(get_testdata_file(name)).read_bytes())
        yield RemotePeer("LEGACY", "127.0.0.1", server.dicom_port, "DUCKPACS", timeout=30)


@pytest.mark.interop
def test_migrate_from_orthanc_interrupted_and_resumed(orthanc: RemotePeer, tmp_path: Path) -> None:
    expected = expected_studies()
    out = tmp_path / "received"
    journal_path = tmp_path / "migrate.sqlite"
    since, until = date(1990, 1, 1), date(2025, 12, 31)
    fetched: list[str] = []

    def count(study: RemoteStudy, received: int) -> None:
        fetched.append(study.uid)

    # First run stops after two studies, as if interrupted.
    with open_journal(journal_path) as journal:
        rec = migrate(
            orthanc, journal, folder_receiver(out), since, until,
            window_limit=2, max_studies=2, on_study=count,
        )  # fmt: skip
    assert rec.studies_found == len(expected)
    assert rec.studies_done == 2 and not rec.complete
    assert rec.windows >= 3  # the 2-answer limit forced the span to be split
    assert rec.found_outside == rec.undated == 1  # test-SR, found by listing every study

    # The rerun resumes: no window queried again, only the studies not done are fetched.
    with open_journal(journal_path) as journal:
        rec = migrate(orthanc, journal, folder_receiver(out), since, until, on_study=count)
    assert rec.complete, rec.lines()
    assert sorted(fetched) == sorted(expected) and len(fetched) == len(set(fetched))
    assert rec.instances_found == rec.instances_received == sum(map(len, expected.values()))

    received = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in out.glob("*.dcm")}
    for datasets in expected.values():
        for original in datasets:
            path = received[str(original.SOPInstanceUID)]
            copy = pydicom.dcmread(path)
            assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            # Pixel data arrive untouched, in the stored transfer syntax. (The rest is not
            # byte-identical: Orthanc's sender re-encodes the dataset, dropping trailing
            # padding, giving sequences defined lengths and trimming blank values.)
            assert copy.get("PixelData") == original.get("PixelData")
            assert (
                _dataset_bytes(path.read_bytes())[:64]
                == _dataset_bytes(Path(original.filename).read_bytes())[:64]
            )
    assert "remote:" in rec.lines()[0]


def test_journal_reports_incomplete_studies(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    try:
        journal.add_studies([
            RemoteStudy("1.2.3", "20200105", "P1", 5),
            RemoteStudy("1.2.4", "20200106", "P2", 2),
        ], "window")  # fmt: skip
        journal.record_study("1.2.3", "incomplete", 4, "received 4 of 5 instances")
        journal.record_study("1.2.4", "done", 2)
        rec = journal.reconcile()
    finally:
        journal.close()
    assert rec.studies_found == 2 and rec.studies_done == 1
    assert rec.not_done == [NotDone("1.2.3", "incomplete", "received 4 of 5 instances")]
    assert rec.as_json()["complete"] is False


@pytest.mark.interop
def test_cli_migrate(
    orthanc: RemotePeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = expected_studies()
    peer = f"{orthanc.ae_title}@{orthanc.host}:{orthanc.port}"
    out = tmp_path / "out"
    base = ["migrate", "--from", peer, "--out", str(out), "--calling-ae", "DUCKPACS"]
    window = ["--since", "1990-01-01", "--until", "20251231", "--window-limit", "2"]
    assert main([*base, *window, "--max-studies", "1"]) == 1  # stopped early: incomplete
    first = capsys.readouterr().out
    assert f"remote: {len(expected)} studies" in first
    assert "studies without a Study Date: 1" in first
    assert main([*base, *window, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["studies_done"] == len(expected)
    assert all(len(v) == 1 for v in expected.values())  # one instance per study here
    assert report["summary"]["files"] == len(expected) - 1  # the rest after the first run
    assert len(list(out.glob("*.dcm"))) == sum(map(len, expected.values()))
    assert main(["migrate", "--from", "nobody", "--out", str(out)]) == 2
    assert "unknown peer" in capsys.readouterr().err


# --- into the archive ------------------------------------------------------------------------


def archive_contents(data: Path) -> tuple[int, dict[str, bytes]]:
    """(live store records, {SOP Instance UID: bytes read back via the index's location})."""
    with Index.open(data, read_only=True) as index:
        located = (
            index.connection()
            .execute('SELECT sop_instance_uid, pack, "offset", length, sha256 FROM instances')
            .fetchall()
        )
    out: dict[str, bytes] = {}
    with _core.Store(data / "store") as store:
        live = int(store.stats()["instances"])
        for uid, pack, offset, length, digest in located:
            blob = store.get((pack, offset, length))
            assert hashlib.sha256(blob).hexdigest() == digest
            out[str(uid)] = blob
    return live, out


def wire_copies(peer: RemotePeer, studies: list[str], folder: Path) -> dict[str, bytes]:
    """Each study fetched once more with C-GET into files: the bytes as the peer sends them."""
    with DimseFinder(peer) as finder:
        for uid in studies:
            classes = list_instances(finder, uid, image_limits()).sop_classes()
            get_study(peer, uid, classes, folder_receiver(folder))
    return {str(pydicom.dcmread(p).SOPInstanceUID): p.read_bytes() for p in folder.glob("*.dcm")}


class Crash(Exception):
    """Stands for a kill between the archive's import and the journal's commit."""


@pytest.mark.interop
def test_migrate_into_archive_interrupted_crashed_and_resumed(
    orthanc: RemotePeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = expected_studies()
    total = sum(map(len, expected.values()))
    data = tmp_path / "archive"
    since, until = date(1990, 1, 1), date(2025, 12, 31)
    fetched: list[str] = []

    def count(study: RemoteStudy, received: int) -> None:
        fetched.append(study.uid)

    # 1. Bounded run: two studies, then stop.
    with open_archive(data) as target, open_journal(journal_path(data, orthanc)) as journal:
        rec = migrate(
            orthanc, journal, target, since, until, window_limit=2, max_studies=2, on_study=count
        )
    assert rec.studies_found == len(expected) and rec.studies_done == 2 and not rec.complete
    assert rec.instances_archived == 2 and target.importer.counts.stored == 2
    assert not (data / "migrate" / "staging").exists()  # stored as received: nothing staged

    # 2. Killed after the third study is archived, before the journal says so.
    real_record = Journal.record_study

    def crash(self: Journal, *args: object, **kwargs: object) -> None:
        raise Crash

    monkeypatch.setattr(Journal, "record_study", crash)
    with (
        pytest.raises(Crash),
        open_archive(data) as target,
        open_journal(journal_path(data, orthanc)) as journal,
    ):
        migrate(orthanc, journal, target, since, until, on_study=count)
    monkeypatch.setattr(Journal, "record_study", real_record)
    # The third study is archived; the next one's retrieval overlaps it and stores each
    # instance as it arrives, so some of it may be archived too.
    held = archive_contents(data)[0]
    assert held >= 3

    # 3. Resumed, three studies at a time: the crashed study is fetched again and found
    # archived; nothing twice.
    sizes: list[int] = []
    with open_archive(data) as target, open_journal(journal_path(data, orthanc)) as journal:
        rec = migrate(
            orthanc, journal, target, since, until, parallel=3, on_study=count,
            on_instance=sizes.append,
        )  # fmt: skip
    assert rec.complete, rec.lines()
    assert target.importer.counts.already == held - 2
    assert target.importer.counts.stored == total - held
    assert rec.instances_found == rec.instances_archived == rec.instances_received == total
    assert len(sizes) == total - 2 and min(sizes) > 0  # every instance but the first two runs'
    # on_study runs after the journal commit, so the crashed retrieval is not in `fetched`:
    # each study reported once, and the importer found the crashed one already archived.
    assert sorted(fetched) == sorted(expected)
    assert "archive: " in "\n".join(rec.lines())

    # Every instance archived exactly once, byte-identical to what the peer sends.
    live, archived = archive_contents(data)
    assert live == len(archived) == total
    wire = wire_copies(orthanc, sorted(expected), tmp_path / "wire")
    assert {u: hashlib.sha256(b).hexdigest() for u, b in archived.items()} == {
        u: hashlib.sha256(b).hexdigest() for u, b in wire.items()
    }
    for datasets in expected.values():
        for original in datasets:
            blob = archived[str(original.SOPInstanceUID)]
            copy = pydicom.dcmread(io.BytesIO(blob))
            assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            assert copy.get("PixelData") == original.get("PixelData")
            original_bytes = Path(original.filename).read_bytes()
            assert _dataset_bytes(blob)[:64] == _dataset_bytes(original_bytes)[:64]


@pytest.mark.interop
def test_migrate_refetches_what_the_archive_lost(orthanc: RemotePeer, tmp_path: Path) -> None:
    expected = expected_studies()
    total = sum(map(len, expected.values()))
    data = tmp_path / "archive"
    since, until = date(1990, 1, 1), date(2025, 12, 31)
    with open_archive(data) as target, open_journal(journal_path(data, orthanc)) as journal:
        assert migrate(orthanc, journal, target, since, until).complete
    # One instance disappears from the archive (deleted from the store and the index).
    lost_study, datasets = sorted(expected.items())[0]
    lost = str(datasets[0].SOPInstanceUID)
    with open_archive(data) as target:
        ((_, _, _, pack, offset, length),) = target.index.locations(
            "image", {"SOPInstanceUID": lost}
        )
        target.importer.store.delete((pack, offset, length))
        target.index.remove([lost])
    # The journal says done, the archive says otherwise: the reconciliation believes the index.
    with open_archive(data) as target, open_journal(journal_path(data, orthanc)) as journal:
        rec = migrate(orthanc, journal, target, since, until, max_studies=0)
    assert not rec.complete and rec.instances_archived == total - 1
    assert [(n.uid, n.status) for n in rec.not_done] == [(lost_study, "missing")]
    assert "holds 0 of 1" in rec.not_done[0].reason
    # The next run fetches that study again.
    with open_archive(data) as target, open_journal(journal_path(data, orthanc)) as journal:
        rec = migrate(orthanc, journal, target, since, until)
    assert rec.complete and rec.instances_archived == total
    assert target.importer.counts.stored == 1
    live, archived = archive_contents(data)
    assert live == len(archived) == total and lost in archived


@pytest.mark.interop
def test_cli_migrate_into_archive(
    orthanc: RemotePeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = expected_studies()
    total = sum(map(len, expected.values()))
    data = tmp_path / "archive"
    peer = f"{orthanc.ae_title}@{orthanc.host}:{orthanc.port}"
    base = ["migrate", "--data", str(data), "--from", peer, "--calling-ae", "DUCKPACS"]
    window = ["--since", "1990-01-01", "--until", "20251231", "--window-limit", "2"]
    assert main([*base, *window, "--max-studies", "1"]) == 1  # stopped early: incomplete
    first = capsys.readouterr().out
    assert f"remote: {len(expected)} studies" in first and "stored 1 new instances" in first
    assert main([*base, *window, "--parallel", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["studies_done"] == len(expected)
    assert report["instances_found"] == report["instances_archived"] == total
    assert report["stored"] == total - 1 and report["already_archived"] == 0
    assert report["archive"] == str(data) and report["summary"]["files"] == total - 1
    assert list((data / "migrate").glob("*.sqlite"))  # the journal lives in the data folder
    # `duckpacs find` lists every study.
    assert main(["find", "--data", str(data), "--json", "StudyInstanceUID="]) == 0
    found = json.loads(capsys.readouterr().out)
    assert sorted(str(r["StudyInstanceUID"]) for r in found) == sorted(expected)
    # A rerun fetches nothing.
    assert main([*base, *window, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["summary"]["files"] == 0 and again["stored"] == 0 and again["complete"]
    # While another process owns the archive: one line, exit code non-zero.
    with holding_index(data, seconds=2):
        assert main([*base, *window]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("duckpacs: error:") and "--wait" in err[0]


def test_migrate_help_names_the_archive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["migrate", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "store it in the archive" in text and "--wait" in text and "--out DIR" in text
    assert "--verify" in text and "C-MOVE to our AE title" in text


def test_migrate_refuses_bad_parallel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    peer = f"NOBODY@127.0.0.1:{free_port()}"
    assert main(["migrate", "--from", peer, "--data", str(tmp_path), "--parallel", "0"]) == 2
    assert "--parallel must be 1 to 16" in capsys.readouterr().err
    assert not (tmp_path / "migrate").exists()  # refused before touching the archive


def test_old_journal_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            "CREATE TABLE studies (uid TEXT PRIMARY KEY, study_date TEXT, patient_id TEXT, "
            "remote_instances INTEGER, sop_classes TEXT NOT NULL DEFAULT '', "
            "status TEXT NOT NULL DEFAULT 'found', received INTEGER NOT NULL DEFAULT 0, "
            "reason TEXT NOT NULL DEFAULT '', updated REAL);"
            "INSERT INTO studies (uid, remote_instances) VALUES ('1.2.3', 2);"
        )
        db.commit()
    with open_journal(path) as journal:
        journal.record_study("1.2.3", "done", 2, archived=2)
        rec = journal.reconcile(lambda uids: {"1.2.3": 1})
    assert rec.instances_archived == 1 and not rec.complete
    assert rec.not_done == [NotDone("1.2.3", "missing", "the archive holds 1 of 2 instances")]


@pytest.mark.interop
def test_peer_that_refuses_our_query_is_named(orthanc: RemotePeer) -> None:
    stranger = RemotePeer(orthanc.ae_title, orthanc.host, orthanc.port, "STRANGER", timeout=10)
    scope = Scope(date(1990, 1, 1), date(2025, 12, 31))
    with DimseFinder(stranger) as finder, pytest.raises(NetworkError, match="no answer.*STRANGER"):
        finder.studies(scope, lambda study: None)
