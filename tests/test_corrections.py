"""Correcting patient and study data in the archive (``Archive.correct``, ``duckpacs modify``,
``duckpacs merge-patient``): the new values at once in every query, the SOP Instance UIDs
kept, the received bytes kept (``export --original``), the same state after ``reindex``,
an index rebuild and a kill at each step, and the interplay with the trash and compaction."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from duckpacs.archive import corrections, rewrite
from duckpacs.archive.facade import Archive
from duckpacs.errors import QueryError, StorageError
from tests.crash_support import duckpacs
from tests.pg_support import drop_index
from tests.test_storage_policy import audit_lines, fill

# Every test on the embedded index and again on PostgreSQL (tests/pg_support.py).
pytestmark = pytest.mark.usefixtures("each_index_backend")

NEW = {"PatientName": "Doe^Jane", "PatientID": "NEW-7", "AccessionNumber": "ACC-9"}
SHOWN = ["PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID"]


def answers(archive: Archive) -> list[dict[str, object]]:
    """What C-FIND and QIDO would answer: every study and every instance with its values."""
    studies = archive.find("study", {}, SHOWN)
    images = archive.find("image", {}, [*SHOWN, "SOPInstanceUID"])
    key = lambda r: (str(r.get("StudyInstanceUID")), str(r.get("SOPInstanceUID")))  # noqa: E731
    return sorted(studies, key=key) + sorted(images, key=key)


def current(archive: Archive, study: str) -> dict[str, bytes]:
    return {
        r.sop_instance_uid: archive.read(r.location)
        for r in archive.locate("study", {"StudyInstanceUID": study})
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exported(data: Path, out: Path, study: str, *flags: str) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of what `duckpacs export` writes for the study."""
    done = duckpacs("export", f"StudyInstanceUID={study}", "--layout", "flat", "--out",
                    str(out), "--data", str(data), *flags)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {p.stem: sha(p.read_bytes()) for p in out.glob("*.dcm")}


def test_correct_shows_new_values_keeps_uids_pixels_and_the_original(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        before = current(archive, s["a"])
        other = current(archive, s["b"])
        summary = archive.correct("study", {"StudyInstanceUID": s["a"]}, NEW, user="u", source="t")
        assert (summary["instances"], summary["matched"], summary["studies"]) == (3, 3, [s["a"]])
        assert summary["before"]["PatientID"] == ["ROUTE-1"]
        found = archive.find("study", {"PatientID": "NEW-7"}, SHOWN)
        assert [(r["StudyInstanceUID"], str(r["PatientName"])) for r in found] == [
            (s["a"], "Doe^Jane")
        ]
        assert archive.find("patient", {"PatientID": "NEW-7"}, ["PatientName"])
        after = current(archive, s["a"])
        assert set(after) == set(before)  # the same SOP Instance UIDs
        for uid, data_now in after.items():
            old, new = dcmread(io.BytesIO(before[uid])), dcmread(io.BytesIO(data_now))
            assert (str(new.PatientName), new.PatientID, new.AccessionNumber) == (
                "Doe^Jane", "NEW-7", "ACC-9")  # fmt: skip
            assert new.SOPInstanceUID == uid and new.PixelData == old.PixelData
            assert new.file_meta.TransferSyntaxUID == old.file_meta.TransferSyntaxUID
            assert new.StudyDate == old.StudyDate  # nothing else changed
        assert current(archive, s["b"]) == other
    original = exported(data, tmp_path / "orig", s["a"], "--original")
    assert original == {uid: sha(b) for uid, b in before.items()}
    assert exported(data, tmp_path / "now", s["a"]) == {uid: sha(b) for uid, b in after.items()}
    assert duckpacs("verify", "--deep", "--data", str(data)).returncode == 0


def test_reindex_rebuild_and_restart_give_the_same_answers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b", "c"])
        archive.correct("study", {"StudyInstanceUID": s["a"]}, NEW, user="u", source="t")
        # A second correction of the same study: a chain of versions, only the last current.
        archive.correct("study", {"StudyInstanceUID": s["a"]}, {"PatientName": "Doe^Janet"},
                        user="u", source="t")  # fmt: skip
        archive.correct("study", {"PatientID": "ROUTE-1", "StudyInstanceUID": s["b"]},
                        {"StudyDescription": "corrected"}, user="u", source="t")  # fmt: skip
        expected = answers(archive)
    assert [str(r["PatientName"]) for r in expected if r["StudyInstanceUID"] == s["a"]][0] == (
        "Doe^Janet"
    )
    with Archive.open(data) as archive:
        assert answers(archive) == expected
    assert duckpacs("reindex", "--data", str(data)).returncode == 0
    with Archive.open(data) as archive:
        assert answers(archive) == expected
    drop_index(data)  # rebuilt from the store at the next opening
    with Archive.open(data) as archive:
        assert answers(archive) == expected
        assert len(archive.locate("study", {})) == 9  # one row per instance, never two
    original = exported(data, tmp_path / "orig", s["a"], "--original")
    with Archive.open(data) as archive:
        names = {str(dcmread(io.BytesIO(b)).PatientName) for b in current(archive, s["a"]).values()}
    assert names == {"Doe^Janet"}
    first = [dcmread(p) for p in (tmp_path / "orig").glob("*.dcm")]
    assert {str(d.PatientName) for d in first} == {"Route^ROUTE-1"} and len(original) == 3


def test_a_name_outside_the_character_set_moves_the_header_to_utf8(tmp_path: Path) -> None:
    with Archive.open(tmp_path / "data") as archive:
        s = fill(archive, ["a"])
        archive.correct("study", {"StudyInstanceUID": s["a"]},
                        {"PatientName": "Иванов^Иван"}, user="u", source="t")  # fmt: skip
        assert [str(r["PatientName"]) for r in archive.find("study", {}, ["PatientName"])] == [
            "Иванов^Иван"
        ]
        for data in current(archive, s["a"]).values():
            ds = dcmread(io.BytesIO(data))
            assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Иванов^Иван"


def test_values_already_there_write_nothing_and_bad_requests_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a"])
        q = {"StudyInstanceUID": s["a"]}
        same = archive.correct("study", q, {"PatientID": "ROUTE-1"}, user="u", source="t")
        assert (same["instances"], same["matched"]) == (0, 3)
        with pytest.raises(QueryError, match="StudyInstanceUID cannot be corrected"):
            archive.correct("study", q, {"StudyInstanceUID": "1.2.3"}, user="u", source="t")
        with pytest.raises(QueryError, match="not a valid DA"):
            archive.correct("study", q, {"PatientBirthDate": "1980-02-02"}, user="u", source="t")
        with pytest.raises(QueryError, match="PatientSex"):
            archive.correct("study", q, {"PatientSex": "X"}, user="u", source="t")
        with pytest.raises(QueryError, match="query with a value"):
            archive.correct("study", {"StudyInstanceUID": ""}, NEW, user="u", source="t")
        nothing = archive.correct("study", {"StudyInstanceUID": "1.2.3"}, NEW, user="u",
                                  source="t")  # fmt: skip
        assert nothing["matched"] == 0
        assert archive.find("study", {}, ["PatientID"])[0]["PatientID"] == "ROUTE-1"


def test_a_deflated_instance_is_refused_with_a_reason() -> None:
    header = b"\0" * 128 + b"DICM"
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds.PatientName = "A^B"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    header = out.getvalue()
    with pytest.raises(StorageError, match="deflated"):
        rewrite.rewrite_header(header, {"PatientName": "C^D"})


@pytest.mark.parametrize("point", ["after-line", "before-index", "after-index"])
def test_a_correction_killed_at_each_step_leaves_one_state_per_instance(
    tmp_path: Path, point: str
) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
    child = subprocess.run(
        [sys.executable, "-m", "tests.correction_crash_child", str(data), s["a"], point],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 9, child.stderr
    killed_after_versions = point != "after-line"
    with Archive.open(data) as archive:  # the catch-up finishes the correction
        rows = archive.find("image", {"StudyInstanceUID": s["a"]}, ["PatientName", "PatientID"])
        assert len(rows) == 3
        pairs = {(str(r["PatientName"]), r["PatientID"]) for r in rows}
        assert pairs == ({("Kill^Test", "KILL-1")} if killed_after_versions
                         else {("Route^ROUTE-1", "ROUTE-1")})  # fmt: skip
        for data_now in current(archive, s["a"]).values():  # the bytes agree with the rows
            ds = dcmread(io.BytesIO(data_now))
            assert (str(ds.PatientName), ds.PatientID) in pairs
        expected = answers(archive)
        journal = corrections.Corrections(data).all()
        assert [c.recovered for c in journal] == [True]
        assert journal[0].versions is not None
        assert len(journal[0].versions) == (3 if killed_after_versions else 0)
        again = archive.correct("study", {"StudyInstanceUID": s["a"]},
                                {"PatientName": "Done^Right"}, user="u", source="t")  # fmt: skip
        assert again["instances"] == 3
        expected = answers(archive)
    assert duckpacs("verify", "--deep", "--data", str(data)).returncode == 0
    assert duckpacs("reindex", "--data", str(data)).returncode == 0
    with Archive.open(data) as archive:
        assert answers(archive) == expected


def test_trash_restore_and_compaction_of_a_corrected_study(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        before = {u: sha(b) for u, b in current(archive, s["a"]).items()}
        archive.correct("study", {"StudyInstanceUID": s["a"]}, NEW, user="u", source="t")
        batch = archive.discard("study", {"StudyInstanceUID": s["a"]}, user="u", source="t")
        assert batch["instances"] == 3  # the current versions only
        assert archive.find("study", {"StudyInstanceUID": s["a"]}, []) == []
        assert archive.find("patient", {"PatientID": "NEW-7"}, []) == []
    assert duckpacs("reindex", "--data", str(data)).returncode == 0  # the originals stay out
    with Archive.open(data) as archive:
        assert archive.find("study", {"StudyInstanceUID": s["a"]}, []) == []
        archive.restore(batch["batch"], user="u", source="t")
        assert [r["PatientID"] for r in archive.find("study", {"StudyInstanceUID": s["a"]},
                                                     ["PatientID"])] == ["NEW-7"]  # fmt: skip
    # Compaction (and densifying, which moves records) keeps the originals: they are the
    # instances' history, not orphan copies.
    done = duckpacs("compact", "--densify", "--min-dead", "0", "--json", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["orphan_copies"] == 0
    assert exported(data, tmp_path / "orig", s["a"], "--original") == before
    # Deleted and expired: the version and the original both go.
    with Archive.open(data) as archive:
        archive.discard("study", {"StudyInstanceUID": s["a"]}, user="u", source="t")
    env = {**os.environ, "DUCKPACS_TRASH_DAYS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "duckpacs.cli.main", "compact", "--json", "--data", str(data)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trash_purged"]["instances"] == 3
    with Archive.open(data) as archive:
        live = archive.store_backend.tail({}, headers=False)["instances"]
        assert {str(e["sop_instance_uid"]) for e in live}.isdisjoint(before)
    assert duckpacs("verify", "--deep", "--data", str(data)).returncode == 0


def test_cli_modify_and_merge_list_then_apply_and_audit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a"], patient="OLD-1")
        t = fill(archive, ["keep"], patient="SURV-2")
        archive.correct("study", {"StudyInstanceUID": t["keep"]},
                        {"PatientName": "Surv^Ivor", "PatientBirthDate": "19700101",
                         "PatientSex": "M"}, user="u", source="t")  # fmt: skip
    shown = duckpacs("modify", "--study", s["a"], "PatientName=Roe^Rick", "--data", str(data))
    assert shown.returncode == 0, shown.stderr
    assert "Route^OLD-1 -> Roe^Rick" in shown.stdout and "--yes" in shown.stdout
    done = duckpacs("modify", "--study", s["a"], "PatientName=Roe^Rick", "AccessionNumber=A1",
                    "--yes", "--json", "--data", str(data))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instances"] == 3
    bad = duckpacs("modify", "--study", s["a"], "SOPInstanceUID=1.2", "--yes", "--data",
                   str(data))  # fmt: skip
    assert bad.returncode != 0 and "cannot be corrected" in bad.stderr
    plan = duckpacs("merge-patient", "--from", "OLD-1", "--into", "SURV-2", "--json", "--data",
                    str(data))  # fmt: skip
    assert json.loads(plan.stdout)["changes"] == {
        "PatientID": "SURV-2", "PatientName": "Surv^Ivor", "PatientBirthDate": "19700101",
        "PatientSex": "M"}  # fmt: skip
    merged = duckpacs("merge-patient", "--from", "OLD-1", "--into", "SURV-2", "--yes",
                      "--data", str(data))  # fmt: skip
    assert merged.returncode == 0, merged.stderr
    with Archive.open(data) as archive:
        rows = archive.find("study", {"PatientID": "SURV-2"},
                            ["PatientName", "PatientSex", "AccessionNumber"])  # fmt: skip
        assert len(rows) == 2 and {str(r["PatientName"]) for r in rows} == {"Surv^Ivor"}
        assert archive.find("study", {"PatientID": "OLD-1"}, []) == []
        assert archive.find("patient", {}, ["PatientID"]) == [{"PatientID": "SURV-2"}]
    unknown = duckpacs("merge-patient", "--from", "SURV-2", "--into", "NOBODY", "--yes",
                       "--data", str(data))  # fmt: skip
    assert unknown.returncode != 0 and "--name" in unknown.stderr
    lines = [x for x in audit_lines(data / "audit.log") if str(x["path"]).startswith("/corr")]
    assert [(x["method"], x["instances"]) for x in lines] == [("MODIFY", 3), ("MERGE", 3)]
    assert "PatientName: Route^OLD-1 -> Roe^Rick" in str(lines[0]["changes"])
    assert lines[1]["query"] == "PatientID=OLD-1" and str(lines[1]["from"]).startswith("cli@")


def test_routing_rules_do_not_forward_corrected_instances_again(tmp_path: Path) -> None:
    from duckpacs.config import Route
    from duckpacs.routing.queue import Queue
    from duckpacs.routing.rules import Rules

    data = tmp_path / "data"
    with Archive.open(data) as archive:
        queue = Queue(data / "queue.sqlite")
        rules = Rules(archive.index, queue, [Route("all", {}, ("pacs",))],
                      corrections.Corrections(data).version_arrivals)  # fmt: skip
        rules.start()
        s = fill(archive, ["a"])
        assert rules.poll() == 3
        first = {j.sop_instance_uid for j in queue.jobs(states=())}
        archive.correct("study", {"StudyInstanceUID": s["a"]}, NEW, user="u", source="t")
        assert rules.poll() == 3  # the corrected rows are read...
        assert len(queue.jobs(states=())) == 3  # ...and not queued again
        fill(archive, ["b"])  # while a new arrival still is
        assert rules.poll() == 3
        jobs = queue.jobs(states=())
        assert len(jobs) == 6 and first < {j.sop_instance_uid for j in jobs}
        queue.close()


def test_a_correction_that_fails_halfway_leaves_every_instance_as_it_was(tmp_path: Path) -> None:
    """A deflated instance (which cannot be corrected in place) last in a study: the
    versions written before it are tombstoned, the journal says none was applied, the
    index and the store still agree on the old values."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from tests.routing_support import instance
    from tests.synthetic import encode

    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a"])
        ds = instance(s["a"], 9)
        assert archive.store(encode(ds, DeflatedExplicitVRLittleEndian)).status == 0
        archive.flush()
        with pytest.raises(StorageError, match="deflated"):
            archive.correct("study", {"StudyInstanceUID": s["a"]}, NEW, user="u", source="t")
        assert {r["PatientID"] for r in archive.find("image", {}, ["PatientID"])} == {"ROUTE-1"}
        (c,) = corrections.Corrections(data).all()
        assert c.versions == [] and len(c.keys) == 4
        expected = answers(archive)
    assert duckpacs("reindex", "--data", str(data)).returncode == 0
    with Archive.open(data) as archive:
        assert answers(archive) == expected
    assert duckpacs("verify", "--deep", "--data", str(data)).returncode == 0


@pytest.mark.parametrize(
    "name",
    ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm"],
)
def test_each_transfer_syntax_keeps_its_encoding_and_pixel_bytes(tmp_path: Path, name: str) -> None:
    from pydicom.data import get_testdata_file

    source = Path(str(get_testdata_file(name)))
    original = dcmread(source)
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        assert archive.store(source.read_bytes()).status == 0
        archive.flush()
        study = str(original.StudyInstanceUID)
        done = archive.correct("study", {"StudyInstanceUID": study},
                               {"PatientName": "Syntax^Kept"}, user="u", source="t")  # fmt: skip
        assert done["instances"] == 1
        (now,) = current(archive, study).values()
    ds = dcmread(io.BytesIO(now))
    assert str(ds.PatientName) == "Syntax^Kept"
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.PixelData == original.PixelData
    assert exported(data, tmp_path / "orig", study, "--original") == {
        str(original.SOPInstanceUID): sha(source.read_bytes())
    }
    assert duckpacs("verify", "--deep", "--data", str(data)).returncode == 0


def test_corrections_while_the_densifier_moves_records(tmp_path: Path) -> None:
    """The server's densifier rewrites originals and versions (all in the arrival encoding)
    while corrections run: each correction applies whole or not at all (a record moved under
    it is an error that changes nothing), and afterwards the index, `reindex`, `verify
    --deep` and `export --original` all agree."""
    import time

    from duckpacs.errors import DuckpacsError
    from duckpacs.server.densify import Densifier
    from tests.densify_crash_child import instance

    data = tmp_path / "data"
    originals = [instance(i) for i in range(24)]
    with Archive.open(data) as archive:
        assert all(r.status == 0 for r in archive.store_many(originals))
        archive.flush()
        study = str(dcmread(io.BytesIO(originals[0]), stop_before_pixels=True).StudyInstanceUID)
        q = {"StudyInstanceUID": study}
        densifier = Densifier(archive, idle=0.0, poll=0.01, rest=0.05)
        densifier.start()
        applied = []
        try:
            for n in range(6):
                try:
                    archive.correct("study", q, {"PatientName": f"Dense^{n}"}, user="u",
                                    source="t")  # fmt: skip
                    applied.append(f"Dense^{n}")
                except DuckpacsError:
                    pass  # a record moved under it: nothing changed
            deadline = time.monotonic() + 120
            store = archive.store_backend
            while store.stats()["arrival_instances"] and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            densifier.stop()
        assert applied, "no correction got through"
        rows = archive.find("image", q, ["PatientName", "SOPInstanceUID"])
        assert len(rows) == 24 and {str(r["PatientName"]) for r in rows} == {applied[-1]}
        for data_now in current(archive, study).values():
            assert str(dcmread(io.BytesIO(data_now)).PatientName) == applied[-1]
        expected = answers(archive)
    assert duckpacs("verify", "--deep", "--data", str(data)).returncode == 0
    assert duckpacs("reindex", "--data", str(data)).returncode == 0
    with Archive.open(data) as archive:
        assert answers(archive) == expected
    received = {str(dcmread(io.BytesIO(b)).SOPInstanceUID): sha(b) for b in originals}
    assert exported(data, tmp_path / "orig", study, "--original") == received
