"""Corrections against a running `duckpacs serve`: `duckpacs modify` through its local
socket, the new name in C-FIND, DCMTK's getscu and WADO-RS at once and the received bytes by
`export --original`; the web routes for the admin role only; HL7 ADT A08/A40 over MLLP
changing archived studies; and SIGKILL of the server's process group during corrections."""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import time
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from duckpacs.archive.facade import Archive
from duckpacs.web.auth import UserStore
from duckpacs.web.multipart import decode
from tests.crash_support import SCU_AE, duckpacs, start_server
from tests.dimse_support import dcmtk_tool
from tests.helpers import dcmtk_env, free_port, running_server
from tests.test_storage_policy import audit_lines, fill
from tests.test_worklist_serve import hl7_message, send
from tests.web_support.server import browser_available, logged_in_page

ADA, VERA = ("ada", "admin-pass-123"), ("vera", "viewer-pass-1")


def c_find(port: int, **keys: str) -> list[Dataset]:
    """Study-level C-FIND answers with PatientName and PatientID."""
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DUCKPACS")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientName = ""
    query.PatientID = ""
    for k, v in keys.items():
        setattr(query, k, v)
    found = []
    try:
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
    finally:
        assoc.release()
    return found


def getscu(port: int, study: str, out: Path) -> list[Dataset]:
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [dcmtk_tool("getscu"), "-aet", SCU_AE, "-aec", "DUCKPACS", "-S", "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
         "127.0.0.1", str(port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [dcmread(f) for f in sorted(out.iterdir())]


def users(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    store = UserStore(data / "users.json")
    store.set_user(*ADA, ["admin"])
    store.set_user(*VERA, ["viewer"])
    (data / "duckpacs.toml").write_text('[dimse]\naccept_any = true\n[http]\nanonymous = "off"\n')


def test_modify_through_serve_seen_by_cfind_getscu_wado_and_original_export(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    users(data)
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        received = {
            r.sop_instance_uid: hashlib.sha256(archive.read(r.location)).hexdigest()
            for r in archive.locate("study", {"StudyInstanceUID": s["a"]})
        }
    server = start_server(data)
    base = f"http://127.0.0.1:{server.http_port}"
    metadata = f"{base}/dicom-web/studies/{s['a']}/metadata"

    def names_in_metadata() -> set[str]:  # what the viewer reads
        found = requests.get(metadata, auth=VERA, timeout=30).json()
        return {x["00100010"]["Value"][0]["Alphabetic"] for x in found}

    try:
        assert names_in_metadata() == {"Route^ROUTE-1"}  # now in the server's cache
        done = duckpacs("modify", "--study", s["a"], "PatientName=Fixed^Name",
                        "PatientID=FIX-1", "--yes", "--json", "--data", str(data))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["instances"] == 3
        found = c_find(server.dimse_port, PatientID="FIX-1")
        assert [(f.StudyInstanceUID, str(f.PatientName)) for f in found] == [(s["a"], "Fixed^Name")]
        assert names_in_metadata() == {"Fixed^Name"}
        got = getscu(server.dimse_port, s["a"], tmp_path / "got")
        assert {d.SOPInstanceUID for d in got} == set(received)
        assert {(str(d.PatientName), d.PatientID) for d in got} == {("Fixed^Name", "FIX-1")}
        r = requests.get(f"{base}/dicom-web/studies/{s['a']}", auth=VERA, timeout=60)
        assert r.status_code == 200
        parts = decode(r.content, r.headers["content-type"])
        assert {str(dcmread(io.BytesIO(p.body)).PatientName) for p in parts} == {"Fixed^Name"}
        qido = requests.get(f"{base}/dicom-web/studies?PatientID=FIX-1", auth=VERA, timeout=30)
        assert [x["0020000D"]["Value"][0] for x in qido.json()] == [s["a"]]
        merged = duckpacs("merge-patient", "--from", "FIX-1", "--into", "ROUTE-1", "--yes",
                          "--json", "--data", str(data))  # fmt: skip
        assert merged.returncode == 0, merged.stderr
        assert json.loads(merged.stdout)["changes"]["PatientName"] == "Route^ROUTE-1"
        found = c_find(server.dimse_port, PatientID="ROUTE-1")
        assert {f.StudyInstanceUID for f in found} == {s["a"], s["b"]}
    finally:
        assert server.stop() == 0
    out = tmp_path / "orig"
    exported = duckpacs("export", f"StudyInstanceUID={s['a']}", "--original", "--layout",
                        "flat", "--out", str(out), "--data", str(data))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert {
        p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.dcm")
    } == received
    lines = [x for x in audit_lines(data / "audit.log") if str(x["path"]).startswith("/corr")]
    assert [x["method"] for x in lines] == ["MODIFY", "MERGE"]
    assert "PatientID: ROUTE-1 -> FIX-1" in str(lines[0]["changes"])
    assert "PatientID: FIX-1 -> ROUTE-1" in str(lines[1]["changes"])


def test_web_modify_and_merge_are_for_admins(tmp_path: Path) -> None:
    data = tmp_path / "data"
    users(data)
    with Archive.open(data) as archive:
        s = fill(archive, ["a"], patient="OLD-3")
        t = fill(archive, ["b"], patient="KEEP-4")
    server = start_server(data)
    base = f"http://127.0.0.1:{server.http_port}"
    modify = f"{base}/api/studies/{s['a']}/modify"
    merge = f"{base}/api/patients/merge"
    body = {"changes": {"PatientName": "Web^Fixed", "AccessionNumber": "W1"}}
    try:
        assert requests.post(modify, json=body, auth=VERA, timeout=30).status_code == 403
        assert requests.post(merge, json={"from": "OLD-3", "into": "KEEP-4"}, auth=VERA,
                             timeout=30).status_code == 403  # fmt: skip
        plan = requests.post(modify, json={**body, "apply": False}, auth=ADA, timeout=30).json()
        assert plan["before"]["PatientName"] == ["Route^OLD-3"] and not plan["applied"]
        done = requests.post(modify, json=body, auth=ADA, timeout=60)
        assert done.status_code == 200 and done.json()["instances"] == 3
        qido = requests.get(f"{base}/dicom-web/studies?StudyInstanceUID={s['a']}"
                            "&includefield=00080050", auth=VERA, timeout=30).json()  # fmt: skip
        assert qido[0]["00100010"]["Value"][0]["Alphabetic"] == "Web^Fixed"
        assert qido[0]["00080050"]["Value"] == ["W1"]
        bad = requests.post(modify, json={"changes": {"SOPInstanceUID": "1"}}, auth=ADA,
                            timeout=30)  # fmt: skip
        assert bad.status_code == 400 and "cannot be corrected" in bad.json()["error"]
        missing = requests.post(f"{base}/api/studies/1.2.3/modify", json=body, auth=ADA,
                                timeout=30)  # fmt: skip
        assert missing.status_code == 404
        merged = requests.post(merge, json={"from": "OLD-3", "into": "KEEP-4"}, auth=ADA,
                               timeout=60)  # fmt: skip
        assert merged.status_code == 200 and merged.json()["changes"]["PatientName"] == (
            "Route^KEEP-4"
        )
        studies = requests.get(f"{base}/dicom-web/studies?PatientID=KEEP-4", auth=VERA,
                               timeout=30).json()  # fmt: skip
        assert {x["0020000D"]["Value"][0] for x in studies} == {s["a"], t["b"]}
    finally:
        assert server.stop() == 0
    lines = audit_lines(data / "audit.log")
    assert [(x["method"], x["user"]) for x in lines if str(x["path"]).startswith("/corr")] == [
        ("MODIFY", "ada"), ("MERGE", "ada")]  # fmt: skip
    refused = [x for x in lines if x["status"] == 403]
    assert {x["user"] for x in refused} == {"vera"} and len(refused) == 2


def test_hl7_a08_and_a40_correct_archived_studies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a"], patient="HL-1")
        t = fill(archive, ["b"], patient="HL-2")
    hl7_port = free_port()
    env = {"DUCKPACS_HL7_PORT": str(hl7_port), "DUCKPACS_ACCEPT_ANY": "true",
           "DUCKPACS_HL7_BIND": "127.0.0.1"}  # fmt: skip
    with running_server(data, env=env) as server:
        pid = ["PID", "1", "", "HL-1^^^HOSP", "", "Smith^Alan^B", "", "19800202", "M"]
        ack = send(hl7_port, hl7_message("ADT^A08", ["EVN", "A08"], pid, control_id="U1"))
        assert ack["code"] == "AA", ack
        assert "3 archived instances of 1 studies" in ack["text"]
        found = c_find(server.dimse_port, PatientID="HL-1")
        assert [str(f.PatientName) for f in found] == ["Smith^Alan^B"]
        merge = hl7_message("ADT^A40", ["EVN", "A40"], ["PID", "1", "", "HL-2^^^HOSP"],
                            ["MRG", "HL-1^^^HOSP"], control_id="M1")  # fmt: skip
        ack = send(hl7_port, merge)
        assert ack["code"] == "AA" and "3 archived instances" in ack["text"], ack
        found = c_find(server.dimse_port, PatientID="HL-2")
        assert {(f.StudyInstanceUID, str(f.PatientName)) for f in found} == {
            (s["a"], "Route^HL-2"), (t["b"], "Route^HL-2")}  # fmt: skip
        assert c_find(server.dimse_port, PatientID="HL-1") == []
        wild = hl7_message("ADT^A40", ["EVN", "A40"], ["PID", "1", "", "HL-9"],
                           ["MRG", "HL*"], control_id="M2")  # fmt: skip
        assert send(hl7_port, wild)["code"] == "AE"  # no wildcard merges
    lines = [x for x in audit_lines(data / "audit.log") if str(x["path"]).startswith("/corr")]
    assert [(x["method"], x["user"], x["auth"]) for x in lines] == [
        ("MODIFY", "hl7", "hl7"), ("MERGE", "hl7", "hl7")]  # fmt: skip
    assert str(lines[0]["from"]).startswith("hl7 127.0.0.1")


ROUNDS = 4
NAMES = [("Alpha^One", "ID-A"), ("Beta^Two", "ID-B")]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigkill_of_serve_during_corrections_leaves_one_state_per_instance(
    tmp_path: Path, round_: int
) -> None:
    rnd = random.Random(1500 + round_)
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, [f"s{n}" for n in range(3)], per_study=20)
        everything = {r.sop_instance_uid for r in archive.locate("study", {})}
    server = start_server(data)
    modifiers = []
    try:
        for n, study in enumerate(s.values()):
            name, pid = NAMES[n % 2]
            modifiers.append(subprocess.Popen(
                [*_cli(), "modify", "--study", study, f"PatientName={name}", f"PatientID={pid}",
                 "--yes", "--data", str(data)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        # The kill lands while the server corrects: after its first journal line, at a
        # random moment of the corrections that follow.
        journal = data / "store" / "corrections.jsonl"
        deadline = time.monotonic() + 60
        while not journal.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rnd.uniform(0.0, 0.4))
    finally:
        server.kill_group()
        for m in modifiers:
            m.wait(timeout=60)
    allowed = {("Route^ROUTE-1", "ROUTE-1"), *NAMES}
    with Archive.open(data) as archive:
        rows = archive.find("image", {}, ["SOPInstanceUID", "PatientName", "PatientID"])
        uids = [r["SOPInstanceUID"] for r in rows]
        assert len(uids) == len(set(uids)), "an instance has two rows"
        assert set(uids) == everything, "an instance was lost"
        for r in rows:
            assert (str(r["PatientName"]), r["PatientID"]) in allowed, r
        for ref in archive.locate("study", {}):  # each instance whole: bytes agree with row
            ds = dcmread(io.BytesIO(archive.header(ref.location)), force=True)
            row = next(r for r in rows if r["SOPInstanceUID"] == ref.sop_instance_uid)
            assert (str(ds.PatientName), ds.PatientID) == (str(row["PatientName"]),
                                                           row["PatientID"])  # fmt: skip
        before = sorted((r["SOPInstanceUID"], str(r["PatientName"])) for r in rows)
    verify = duckpacs("verify", "--deep", "--json", "--data", str(data))
    assert verify.returncode == 0, verify.stdout
    assert duckpacs("reindex", "--data", str(data)).returncode == 0
    with Archive.open(data) as archive:
        rows = archive.find("image", {}, ["SOPInstanceUID", "PatientName"])
        assert sorted((r["SOPInstanceUID"], str(r["PatientName"])) for r in rows) == before
    for study in s.values():  # a repeated correction completes
        again = duckpacs("modify", "--study", study, "PatientName=Final^Name", "--yes",
                         "--json", "--data", str(data))  # fmt: skip
        assert again.returncode == 0, again.stderr
    with Archive.open(data) as archive:
        names = {str(r["PatientName"]) for r in archive.find("image", {}, ["PatientName"])}
        assert names == {"Final^Name"}


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "duckpacs.cli.main"]


@pytest.mark.skipif(not browser_available(), reason="needs playwright and /usr/bin/chromium")
def test_admin_page_corrects_a_study_and_merges_patients(tmp_path: Path) -> None:
    data = tmp_path / "data"
    users(data)
    with Archive.open(data) as archive:
        s = fill(archive, ["a"], patient="PAGE-1")
        fill(archive, ["b"], patient="PAGE-2")
    server = start_server(data)
    base = f"http://127.0.0.1:{server.http_port}"
    try:
        with logged_in_page(base, ADA[0], ADA[1]) as page:
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(base + "/admin")
            page.on("dialog", lambda d: d.accept())
            page.fill("#modify-uid", s["a"])
            page.fill("#modify-PatientName", "Page^Fixed")
            page.click("#modify-study button")
            page.wait_for_function(
                "() => document.getElementById('correct-result').textContent"
                ".includes('3 instance(s) of 1 study(ies) corrected')"
            )
            page.fill("#merge-from", "PAGE-1")
            page.fill("#merge-into", "PAGE-2")
            page.click("#merge-patient button")
            page.wait_for_function(
                "() => document.getElementById('correct-result').textContent"
                ".includes('corrected: PatientID: PAGE-1 → PAGE-2')"
            )
            assert not [e for e in errors if "Content Security Policy" in e]
    finally:
        assert server.stop() == 0
    with Archive.open(data) as archive:
        rows = archive.find("study", {"PatientID": "PAGE-2"}, ["PatientName"])
        assert len(rows) == 2 and {str(r["PatientName"]) for r in rows} == {"Route^PAGE-2"}
