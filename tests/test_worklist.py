"""The worklist without a server: matching rules (PS3.4 K.2.2.1, C.2.2.2), answers carrying
only the keys asked, expiry, HL7 OMI^O23 and ADT messages applied, the CLI."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from duckpacs.hl7 import messages
from duckpacs.worklist import find
from duckpacs.worklist.matching import BadQuery, Query, matches, validate, value_matches
from duckpacs.worklist.store import Worklist, WorklistError
from tests.helpers import duckpacs_cmd

ENTRY = {
    "PatientName": "Müller^Anna", "PatientID": "P1", "PatientBirthDate": "19800101",
    "PatientSex": "F", "AccessionNumber": "A1", "Modality": "MR",
    "ScheduledStationAETitle": "MR1", "ScheduledProcedureStepStartDate": "20261204",
    "ScheduledProcedureStepStartTime": "093000", "StudyInstanceUID": "1.2.3",
}  # fmt: skip


@pytest.mark.parametrize(
    ("key", "wanted", "have", "expected"),
    [
        ("PatientName", "müller*", "Müller^Anna", True),  # PN: case folded
        ("PatientName", "M?ller^Anna", "Müller^Anna", True),
        ("PatientName", "Mueller*", "Müller^Anna", False),
        ("PatientID", "p1", "P1", False),  # LO: exact
        ("PatientID", "", "P1", True),  # universal
        ("ScheduledProcedureStepStartDate", "20261201-20261231", "20261204", True),
        ("ScheduledProcedureStepStartDate", "-20261203", "20261204", False),
        ("ScheduledProcedureStepStartDate", "20261204-", "20261204", True),
        ("ScheduledProcedureStepStartDate", "20261204", "20261205", False),
        ("ScheduledProcedureStepStartTime", "0900-1000", "093000", True),
        ("ScheduledProcedureStepStartTime", "1000-", "093000", False),
        ("ScheduledProcedureStepStartTime", "-0930", "093000", True),  # 0930 = up to 093059
        ("StudyInstanceUID", "1.2.9\\1.2.3", "1.2.3", True),
        ("StudyInstanceUID", "1.2", "1.2.3", False),
        ("ScheduledStationAETitle", "MR*", "MR1", True),
    ],
)
def test_value_matching(key: str, wanted: str, have: str, expected: bool) -> None:
    assert value_matches(key, wanted, have) is expected


@pytest.mark.parametrize("bad", ["2026-12", "20261301x", "1-2-3", "-"])
def test_bad_dates_are_refused(bad: str) -> None:
    with pytest.raises(BadQuery, match="ScheduledProcedureStepStartDate"):
        validate(Query(step={"ScheduledProcedureStepStartDate": bad}))


def test_sequence_matching_and_status(tmp_path: Path) -> None:
    wl = Worklist(tmp_path / "w.sqlite", expire_hours=0)
    wl.add(ENTRY)
    entry = wl.entries()[0]
    assert matches(Query(step={"Modality": "MR", "ScheduledStationAETitle": "MR1"}), entry)
    assert not matches(Query(step={"Modality": "CT"}), entry)
    assert matches(Query(step_status="SCHEDULED"), entry)
    wl.set_status(entry["id"], "IN PROGRESS")
    assert matches(Query(step_status="STARTED"), wl.entries()[0])


@pytest.mark.parametrize(
    ("dates", "times", "expected"),
    [
        ("20261203-20261204", "1700-0800", False),  # 3 Dec 17:00 to 4 Dec 08:00:59
        ("20261203-20261204", "1700-0930", True),  # up to 4 Dec 09:30:59
        ("20261204-20261205", "1000-1200", False),  # from 4 Dec 10:00
        ("20261204-20261205", "0900-0800", True),  # 4 Dec 09:00 to 5 Dec 08:00
        ("-20261204", "-0900", False),
        ("20261204-", "0930-", True),
    ],
)
def test_date_and_time_ranges_combine(dates: str, times: str, expected: bool) -> None:
    entry = {**{k: "" for k in find.KEYS}, **ENTRY, "status": "SCHEDULED"}
    query = Query(step={"ScheduledProcedureStepStartDate": dates,
                        "ScheduledProcedureStepStartTime": times})  # fmt: skip
    assert matches(query, entry) is expected


def test_answer_has_the_asked_keys_only_and_utf8() -> None:
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.OtherPatientIDsSequence = []
    step = Dataset()
    step.Modality = "MR"
    step.ScheduledProcedureStepStatus = ""
    identifier.ScheduledProcedureStepSequence = [step]
    entry = {**{k: "" for k in find.KEYS}, **ENTRY, "status": "SCHEDULED"}
    ds = find.answer(identifier, entry)
    assert sorted(e.keyword for e in ds) == [
        "OtherPatientIDsSequence", "PatientName", "ScheduledProcedureStepSequence",
        "SpecificCharacterSet",
    ]  # fmt: skip
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    item = ds.ScheduledProcedureStepSequence[0]
    assert (item.Modality, item.ScheduledProcedureStepStatus) == ("MR", "SCHEDULED")
    assert "ScheduledStationAETitle" not in item
    raw = find.encode(ds, "1.2.840.10008.1.2.1")
    assert str(find.read(raw, "1.2.840.10008.1.2.1").PatientName) == "Müller^Anna"


def test_expiry(tmp_path: Path) -> None:
    wl = Worklist(tmp_path / "w.sqlite", expire_hours=1, keep_done_hours=1)
    old = wl.add({**ENTRY, "ScheduledProcedureStepStartDate": "20200101"})
    later = {"ScheduledProcedureStepStartDate": "20991231"}
    kept = wl.add({**ENTRY, **later, "AccessionNumber": "A2"})
    done = wl.add({**ENTRY, **later, "AccessionNumber": "A3"})
    wl.set_status(done, "COMPLETED")
    assert {e["id"] for e in wl.entries()} == {kept, done}  # the old step expired
    assert wl.get(old) is None
    assert wl.expire(now=time.time() + 7200) == 1  # done, past keep_done_hours
    assert [e["id"] for e in wl.entries()] == [kept]


def test_entries_need_a_patient_and_a_modality(tmp_path: Path) -> None:
    wl = Worklist(tmp_path / "w.sqlite")
    with pytest.raises(WorklistError, match="PatientID or PatientName"):
        wl.add({"Modality": "CT"})
    with pytest.raises(WorklistError, match="Modality or ScheduledStationAETitle"):
        wl.add({"PatientID": "P"})
    with pytest.raises(WorklistError, match="YYYYMMDD"):
        wl.add({"PatientID": "P", "Modality": "CT", "ScheduledProcedureStepStartDate": "4 Dec"})
    with pytest.raises(WorklistError, match="unknown"):
        wl.add({"PatientID": "P", "Modality": "CT", "Colour": "blue"})


def _hl7(*segments: str) -> str:
    return "\r".join(segments) + "\r"


def test_omi_with_ipc_and_adt(tmp_path: Path) -> None:
    wl = Worklist(tmp_path / "w.sqlite", expire_hours=0)
    omi = messages.parse(_hl7(
        "MSH|^~\\&|RIS|H|PACS|C|20261204||OMI^O23^OMI_O23|M1|P|2.5.1",
        "PID|1||P7^^^H||Roe^Jane^Q||19900303|F",
        "ORC|NW|PL77|FI77",
        "TQ1|1||||||20261205083000",
        "OBR|1|PL77|FI77|MRBRAIN^MR brain",
        "IPC|ACC77|RP77|1.2.826.0.1.3680043.2.1125.7|SPS77|MR||||MRI_1",
    ))  # fmt: skip
    outcome = messages.apply(wl, omi)
    assert outcome.code == "AA", outcome
    (entry,) = wl.entries()
    assert entry["AccessionNumber"] == "ACC77" and entry["RequestedProcedureID"] == "RP77"
    assert entry["StudyInstanceUID"] == "1.2.826.0.1.3680043.2.1125.7"
    assert (entry["ScheduledProcedureStepID"], entry["Modality"]) == ("SPS77", "MR")
    assert entry["ScheduledStationAETitle"] == "MRI_1"
    assert entry["ScheduledProcedureStepStartDate"] == "20261205"
    assert entry["ScheduledProcedureStepStartTime"] == "083000"
    assert entry["PatientName"] == "Roe^Jane^Q" and entry["PatientBirthDate"] == "19900303"
    assert entry["RequestedProcedureDescription"] == "MR brain"
    ack = messages.acknowledge(omi, outcome, "DUCKPACS")
    assert "\rMSA|AA|M1|" in ack
    cancel = messages.parse(_hl7("MSH|^~\\&|RIS|H|PACS|C|20261204||OMI^O23|M2|P|2.5.1",
                                 "PID|1||P7", "ORC|CA|PL77"))  # fmt: skip
    assert messages.apply(wl, cancel).code == "AA"
    assert wl.entries()[0]["status"] == "CANCELLED"


def test_reject_escapes_the_reason() -> None:
    text = messages.reject("bad | field ^ here", "DUCKPACS")
    assert text.split("\r")[1] == "MSA|AR||bad   field   here"


def test_worklist_cli(tmp_path: Path) -> None:
    data = str(tmp_path / "data")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(duckpacs_cmd("worklist", *args, "--data", data),
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    added = run("add", "--patient-id", "P1", "--patient-name", "Doe^J", "--modality", "CT",
                "--date", "20261204", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    first = json.loads(added.stdout)["id"]
    csv_file = tmp_path / "w.csv"
    csv_file.write_text("PatientID,patient_name,modality,station-ae\nP2,Roe^J,MR,MR1\n")
    assert run("import", str(csv_file)).returncode == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("PatientID,modality\nP3,CT\nP4,\n")
    refused = run("import", str(bad))
    assert refused.returncode == 2 and "line 3" in refused.stderr
    listed = json.loads(run("list", "--json").stdout)
    assert sorted(e["PatientID"] for e in listed) == ["P1", "P2"]  # nothing of bad.csv
    assert {e["PatientID"]: e["ScheduledStationAETitle"] for e in listed}["P2"] == "MR1"
    assert run("remove", str(first)).returncode == 0
    assert [e["PatientID"] for e in json.loads(run("list", "--json").stdout)] == ["P2"]
    missing = run("remove", "999")
    assert missing.returncode == 2 and "999" in missing.stderr
