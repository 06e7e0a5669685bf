"""The worklist round trip against `duckpacs serve`: a RIS sends an ORM over MLLP (a client
built on python-hl7), DCMTK's `findscu -W` finds the entry, a pynetdicom MPPS SCU starts and
completes it with a series the archive holds. Bad HL7 gets AR/AE with the reason, bad
worklist queries and MPPS requests their PS3.4 statuses, and the listeners stay up."""

from __future__ import annotations

import json
import socket
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hl7.client import MLLPClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
)

from duckpacs.worklist.store import Worklist
from tests.helpers import dcmtk_env, duckpacs_cmd, free_port, require_tool, running_server

CT = get_testdata_file("CT_small.dcm")
AET = "DUCKPACS"


def hl7_message(kind: str, *segments: list[str], control_id: str = "MSG1") -> str:
    msh = f"MSH|^~\\&|RIS|HOSP|{AET}|CLINIC|20261204120000||{kind}|{control_id}|P|2.5"
    return "\r".join([msh, *("|".join(s) for s in segments)]) + "\r"


def obr(order: str, accession: str, modality: str, start: str) -> list[str]:
    fields = [""] * 28
    fields[0:5] = ["OBR", "1", order, "", "CTHEAD^CT head without contrast"]
    fields[18], fields[19], fields[20] = accession, "RP-" + order, "SPS-" + order
    fields[24], fields[27] = modality, f"^^^{start}"
    return fields


def orm(order: str, control: str = "NW", patient: str = "P100", name: str = "Doe^John",
        control_id: str = "MSG1") -> str:  # fmt: skip
    pid = ["PID", "1", "", f"{patient}^^^HOSP", "", name, "", "19700101", "M"]
    return hl7_message(
        "ORM^O01", pid, ["ORC", control, order],
        obr(order, "ACC-" + order, "CT", "20261204100000"), control_id=control_id,
    )  # fmt: skip


def send(port: int, message: str) -> dict[str, str]:
    """MSA-1, MSA-2 and MSA-3 of the acknowledgement."""
    with MLLPClient("127.0.0.1", port) as client:
        raw = client.send_message(message)
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    msa = next(s for s in text.strip("\x0b\x1c\r").split("\r") if s.startswith("MSA"))
    fields = msa.split("|") + ["", "", ""]
    return {"code": fields[1], "control_id": fields[2], "text": fields[3]}


def findscu(port: int, out: Path, *keys: str) -> tuple[str, list[Dataset]]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args = [require_tool("findscu"), "-v", "-W", "-aec", AET, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    done = subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, text=True,
                          env=dcmtk_env(), timeout=60)  # fmt: skip
    return done.stdout + done.stderr, [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


STEP = "ScheduledProcedureStepSequence[0]."
CT_KEYS = (
    f"{STEP}Modality=CT", f"{STEP}ScheduledProcedureStepStartDate=20261201-20261231",
    f"{STEP}ScheduledStationAETitle", f"{STEP}ScheduledProcedureStepStatus",
    f"{STEP}ScheduledProcedureStepID", "PatientName=doe*", "PatientID", "AccessionNumber",
    "StudyInstanceUID", "RequestedProcedureDescription",
)  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Any, int]]:
    hl7_port = free_port()
    env = {"DUCKPACS_HL7_PORT": str(hl7_port), "DUCKPACS_ACCEPT_ANY": "true",
           "DUCKPACS_HL7_BIND": "127.0.0.1", "DUCKPACS_WORKLIST_EXPIRE_HOURS": "0"}  # fmt: skip
    with running_server(tmp_path / "data", env=env) as running:
        yield running, hl7_port


def mpps_association(port: int) -> Any:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    return assoc


def store_ct(port: int, path: str | Path = CT) -> Dataset:
    done = subprocess.run(
        [require_tool("storescu"), "-aec", AET, "127.0.0.1", str(port), str(path)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dcmread(path)


def test_order_query_perform_complete(server: tuple[Any, int], tmp_path: Path) -> None:
    running, hl7_port = server
    ack = send(hl7_port, orm("ORD1"))
    assert (ack["code"], ack["control_id"]) == ("AA", "MSG1"), ack

    log, answers = findscu(running.dimse_port, tmp_path / "q1", *CT_KEYS)
    assert len(answers) == 1, log
    found = answers[0]
    assert str(found.PatientName) == "Doe^John" and found.PatientID == "P100"
    assert found.AccessionNumber == "ACC-ORD1"
    assert found.RequestedProcedureDescription == "CT head without contrast"
    step = found.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledProcedureStepStartDate) == ("CT", "20261204")
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"
    assert step.ScheduledProcedureStepID == "SPS-ORD1"
    assert "PatientBirthDate" not in found  # only the keys asked for come back
    study_uid = found.StudyInstanceUID
    assert study_uid

    # Other modalities, dates and names do not match.
    for keys in ((f"{STEP}Modality=MR",), (f"{STEP}ScheduledProcedureStepStartDate=-20261130",),
                 ("PatientName=Roe*",)):  # fmt: skip
        _log, none = findscu(running.dimse_port, tmp_path / "q2", *keys, "PatientID")
        assert none == [], keys

    ct = store_ct(running.dimse_port)
    assoc = mpps_association(running.dimse_port)
    try:
        create = Dataset()
        item = Dataset()
        item.AccessionNumber, item.ScheduledProcedureStepID = "ACC-ORD1", "SPS-ORD1"
        item.StudyInstanceUID = study_uid
        create.ScheduledStepAttributesSequence = [item]
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        uid = "1.2.826.0.1.3680043.2.1125.77.1"
        status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        _log, started = findscu(running.dimse_port, tmp_path / "q3", *CT_KEYS)
        assert started[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == (
            "STARTED"
        )

        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        performed = [Dataset(), Dataset()]
        performed[0].SeriesInstanceUID = ct.SeriesInstanceUID
        performed[1].SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.77.404"
        done.PerformedSeriesSequence = performed
        status, _ = assoc.send_n_set(done, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()

    worklist = Worklist(running.data_dir / "worklist.sqlite")
    (entry,) = worklist.entries()
    assert (entry["status"], entry["mpps_uid"]) == ("COMPLETED", uid)
    series = {s["series_uid"]: s for s in worklist.performed_series(uid)}
    held = series[ct.SeriesInstanceUID]
    assert held["held"] == 1 and held["study_uid"] == ct.StudyInstanceUID
    assert series["1.2.826.0.1.3680043.2.1125.77.404"]["held"] == 0
    # Completed: no longer on the modality's worklist.
    _log, after = findscu(running.dimse_port, tmp_path / "q4", *CT_KEYS)
    assert after == []

    # The series reported before its images arrived is linked once they are stored.
    late = dcmread(CT)
    late.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.77.404"
    late.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.77.405"
    late.save_as(tmp_path / "late.dcm")
    store_ct(running.dimse_port, tmp_path / "late.dcm")
    listed = subprocess.run(
        duckpacs_cmd("worklist", "list", "--json", "--data", str(running.data_dir)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    (shown,) = json.loads(listed.stdout)
    assert {s["series_uid"]: s["held"] for s in shown["performed_series"]} == {
        ct.SeriesInstanceUID: 1, late.SeriesInstanceUID: 1,
    }  # fmt: skip


def test_patient_update_merge_and_cancel(server: tuple[Any, int], tmp_path: Path) -> None:
    running, hl7_port = server
    assert send(hl7_port, orm("ORD2", patient="OLD7", name="Smith^Al"))["code"] == "AA"
    assert send(hl7_port, orm("ORD3", patient="P200", name="Roe^Jane"))["code"] == "AA"

    pid = ["PID", "1", "", "OLD7^^^HOSP", "", "Smith^Alan^B", "", "19800202", "M"]
    ack = send(hl7_port, hl7_message("ADT^A08", ["EVN", "A08"], pid, control_id="U1"))
    assert ack["code"] == "AA" and ack["text"].startswith("1 ")
    merge = hl7_message("ADT^A40", ["EVN", "A40"],
                        ["PID", "1", "", "NEW7^^^HOSP", "", "Smith^Alan^B"],
                        ["MRG", "OLD7^^^HOSP"], control_id="M1")  # fmt: skip
    assert send(hl7_port, merge)["code"] == "AA"
    _log, found = findscu(running.dimse_port, tmp_path / "q", "PatientID=NEW7", "PatientName",
                          "PatientBirthDate")  # fmt: skip
    assert len(found) == 1
    assert str(found[0].PatientName) == "Smith^Alan^B" and found[0].PatientBirthDate == "19800202"

    cancel = send(hl7_port, orm("ORD3", control="CA", patient="P200", control_id="C1"))
    assert cancel["code"] == "AA", cancel
    _log, gone = findscu(running.dimse_port, tmp_path / "q", "PatientID=P200")
    assert gone == []
    unknown = send(hl7_port, orm("ORD404", control="CA", control_id="C2"))
    assert unknown["code"] == "AE" and "ORD404" in unknown["text"]


def test_bad_hl7_is_refused_and_the_listener_stays(server: tuple[Any, int]) -> None:
    _running, hl7_port = server
    garbage = send(hl7_port, "this is not HL7")
    assert garbage["code"] == "AR" and "MSH" in garbage["text"]
    no_id = send(hl7_port, "MSH|^~\\&|RIS|HOSP|X|Y|20261204||ORM^O01||P|2.5\r")
    assert no_id["code"] == "AR" and "MSH-10" in no_id["text"]
    other = send(hl7_port, hl7_message("ORU^R01", ["PID", "1"], control_id="X1"))
    assert (other["code"], other["control_id"]) == ("AR", "X1")
    assert "ORU" in other["text"]
    no_patient = hl7_message("ORM^O01", ["PID", "1"], ["ORC", "NW", "ORD9"],
                             obr("ORD9", "A9", "CT", "20261204"), control_id="X2")  # fmt: skip
    missing = send(hl7_port, no_patient)
    assert missing["code"] == "AE" and "PatientID" in missing["text"]
    no_control = hl7_message("ORM^O01", ["PID", "1", "", "P1"], ["ORC", "", "ORD9"],
                             control_id="X3")  # fmt: skip
    assert send(hl7_port, no_control)["code"] == "AE"
    # A block without the MLLP start character closes that connection only.
    with socket.create_connection(("127.0.0.1", hl7_port), timeout=10) as raw:
        raw.sendall(b"MSH|garbage\x1c\r")
        assert raw.recv(100) == b""
    assert send(hl7_port, orm("ORD10", control_id="LAST"))["code"] == "AA"


def test_bad_worklist_queries_and_mpps_requests(server: tuple[Any, int], tmp_path: Path) -> None:
    running, hl7_port = server
    log, answers = findscu(running.dimse_port, tmp_path / "q",
                           f"{STEP}ScheduledProcedureStepStartDate=2026-12")  # fmt: skip
    # 0xA900, Identifier does not match SOP Class (PS3.4 K.4.1.1.4)
    assert answers == [] and "DataSetDoesNotMatchSOPClass" in log, log
    log, _ = findscu(running.dimse_port, tmp_path / "q", f"{STEP}Modality=CT",
                     "ScheduledProcedureStepSequence[1].Modality=MR")  # fmt: skip
    assert "DataSetDoesNotMatchSOPClass" in log, log
    # The reason is in the Error Comment.
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", running.dimse_port, ae_title=AET)
    try:
        query = Dataset()
        query.PatientName = ""
        step = Dataset()
        with warnings.catch_warnings():  # pydicom warns of the bad TM we mean to send
            warnings.simplefilter("ignore")
            step.ScheduledProcedureStepStartTime = "25x"
            query.ScheduledProcedureStepSequence = [step]
            ((status, _),) = list(assoc.send_c_find(query, ModalityWorklistInformationFind))
        assert status.Status == 0xA900
        assert "ScheduledProcedureStepStartTime" in status.ErrorComment
    finally:
        assoc.release()

    assoc = mpps_association(running.dimse_port)
    try:
        bad = Dataset()
        bad.PerformedProcedureStepStatus = "COMPLETED"
        bad.ScheduledStepAttributesSequence = [Dataset()]
        status, _ = assoc.send_n_create(bad, ModalityPerformedProcedureStep, "1.2.3.9.1")
        assert status.Status == 0x0106
        missing = Dataset()
        missing.PerformedProcedureStepStatus = "IN PROGRESS"
        status, _ = assoc.send_n_create(missing, ModalityPerformedProcedureStep, "1.2.3.9.2")
        assert status.Status == 0x0120
        assert "ScheduledStepAttributesSequence" in status.ErrorComment
        missing.ScheduledStepAttributesSequence = [Dataset()]  # unscheduled: accepted
        status, _ = assoc.send_n_create(missing, ModalityPerformedProcedureStep, "1.2.3.9.3")
        assert status.Status == 0x0000
        status, _ = assoc.send_n_create(missing, ModalityPerformedProcedureStep, "1.2.3.9.3")
        assert status.Status == 0x0111
        change = Dataset()
        change.PerformedProcedureStepStatus = "PAUSED"
        status, _ = assoc.send_n_set(change, ModalityPerformedProcedureStep, "1.2.3.9.3")
        assert status.Status == 0x0106
        change.PerformedProcedureStepStatus = "DISCONTINUED"
        status, _ = assoc.send_n_set(change, ModalityPerformedProcedureStep, "1.2.3.9.404")
        assert status.Status == 0x0112
        status, _ = assoc.send_n_set(change, ModalityPerformedProcedureStep, "1.2.3.9.3")
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(change, ModalityPerformedProcedureStep, "1.2.3.9.3")
        assert status.Status == 0x0110 and "no longer" in status.ErrorComment
    finally:
        assoc.release()
    # Both listeners still answer.
    assert send(hl7_port, orm("ORD11"))["code"] == "AA"
    _log, answers = findscu(running.dimse_port, tmp_path / "q", "PatientID=P100")
    assert len(answers) == 1


def test_admin_page_worklist(server: tuple[Any, int], tmp_path: Path) -> None:
    import requests

    running, _hl7_port = server
    base = f"http://127.0.0.1:{running.http_port}"
    assert "Modality Worklist" in requests.get(base + "/admin", timeout=30).text
    entry = {"PatientID": "W1", "PatientName": "Web^Added", "Modality": "US",
             "ScheduledProcedureStepStartDate": "20261204"}  # fmt: skip
    added = requests.post(base + "/api/admin/worklist", json=entry, timeout=30)
    assert added.status_code == 201, added.text
    bad = requests.post(base + "/api/admin/worklist", json={"PatientID": "W2"}, timeout=30)
    assert bad.status_code == 400 and "Modality" in bad.text
    listed = requests.get(base + "/api/admin/worklist", timeout=30).json()
    assert [e["PatientID"] for e in listed] == ["W1"]
    _log, found = findscu(running.dimse_port, tmp_path / "q", "PatientID=W1",
                          f"{STEP}Modality=US")  # fmt: skip
    assert len(found) == 1
    removed = requests.post(base + "/api/admin/worklist/remove",
                            json={"ids": [added.json()["id"]]}, timeout=30)  # fmt: skip
    assert removed.json() == {"removed": 1}
    assert requests.get(base + "/api/admin/worklist", timeout=30).json() == []


def test_complete_on_arrival(tmp_path: Path) -> None:
    """A modality without MPPS: its entry completes once the archive holds the study."""
    ct = dcmread(CT)
    env = {"DUCKPACS_WORKLIST_COMPLETE_ON_ARRIVAL": "true", "DUCKPACS_ACCEPT_ANY": "true"}
    with running_server(tmp_path / "data", env=env) as running:
        add = duckpacs_cmd("worklist", "add", "--data", str(running.data_dir),
                           "--patient-id", "P5", "--modality", "CT",
                           "--study-uid", ct.StudyInstanceUID)  # fmt: skip
        assert subprocess.run(add, capture_output=True, timeout=60).returncode == 0
        other = duckpacs_cmd("worklist", "add", "--data", str(running.data_dir),
                             "--patient-id", "P6", "--modality", "CT")  # fmt: skip
        assert subprocess.run(other, capture_output=True, timeout=60).returncode == 0
        _log, before = findscu(running.dimse_port, tmp_path / "q", "PatientID")
        assert sorted(a.PatientID for a in before) == ["P5", "P6"]
        store_ct(running.dimse_port)
        _log, after = findscu(running.dimse_port, tmp_path / "q", "PatientID")
        assert [a.PatientID for a in after] == ["P6"]
        status = {e["PatientID"]: e["status"]
                  for e in Worklist(running.data_dir / "worklist.sqlite").entries()}  # fmt: skip
        assert status == {"P5": "COMPLETED", "P6": "SCHEDULED"}
