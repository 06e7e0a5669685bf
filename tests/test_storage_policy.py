"""The storage policy: refusing at a limit (0xA700 over C-STORE, 507 over STOW-RS),
recycling the oldest unprotected studies first, retention rules, every removal audit-logged.

The in-process tests drive the policy's classes over a real archive; the last ones start
`duckpacs serve` over an archive already past its limit, where the policy acts before the
listeners open."""

from __future__ import annotations

import datetime
import json
from io import BytesIO
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from duckpacs.archive.facade import Archive
from duckpacs.archive.types import Outcome
from duckpacs.config import Retention
from duckpacs.dicom import status
from duckpacs.policy import retention
from duckpacs.policy.protect import Protections
from duckpacs.policy.quota import Limits, Quota
from duckpacs.web.audit import AuditLog
from tests.crash_support import duckpacs, start_server
from tests.routing_support import instance, write_config
from tests.synthetic import encode, uid

# Every test on the embedded index and again on PostgreSQL (tests/pg_support.py).
pytestmark = pytest.mark.usefixtures("each_index_backend")

DAY_US = 86_400 * 1_000_000


def fill(archive: Archive, names: list[str], *, per_study: int = 3, **attrs: str) -> dict[str, str]:
    """One study per name, received a day apart in the order given; name -> Study UID."""
    start = 1_700_000_000 * 1_000_000
    studies = {}
    for day, name in enumerate(names):
        study = uid("policy", name)
        items = [encode(instance(study, n, **attrs)) for n in range(1, per_study + 1)]
        results = archive.store_many(items, received_at_us=start + day * DAY_US)
        assert all(r.outcome is Outcome.STORED for r in results)
        studies[name] = study
    archive.flush()
    return studies


def present(archive: Archive) -> set[str]:
    return {r["StudyInstanceUID"] for r in archive.find("study", {}, [])}


def audit_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def study_bytes(archive: Archive, study: str) -> int:
    return sum(r.location.length for r in archive.locate("study", {"StudyInstanceUID": study}))


def test_recycling_removes_the_oldest_unprotected_studies_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b", "c", "d", "e"])
        protections = Protections(data / "policy.sqlite")
        protections.protect(s["a"], "test")
        pending = {s["c"]}  # still to be forwarded
        # Room for three of the five studies: two must go.
        limit = sum(study_bytes(archive, x) for x in s.values()) - 2 * study_bytes(archive, s["e"])
        audit = AuditLog(data / "audit.log")
        quota = Quota(archive, data, Limits(limit, 0, "recycle"), audit,
                      lambda: protections.studies() | pending)  # fmt: skip
        removed = quota.check()
        audit.close()
        assert [r.study for r in removed] == [s["b"], s["d"]]
        assert present(archive) == {s["a"], s["c"], s["e"]}
        assert quota.refusing is None
        assert archive.store(encode(instance(uid("policy", "new"), 1))).status == status.SUCCESS
    records = audit_lines(data / "audit.log")
    assert [(r["study"], r["path"], r["instances"]) for r in records] == [
        (s["b"], "/policy/recycle", 3), (s["d"], "/policy/recycle", 3)
    ]  # fmt: skip
    assert all("archive.max_bytes reached" in str(r["reason"]) for r in records)


def test_recycling_refuses_when_only_protected_studies_are_left(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["a", "b"])
        audit = AuditLog(data / "audit.log")
        quota = Quota(archive, data, Limits(1000, 0, "recycle"), audit, lambda: {s["a"]})
        assert [r.study for r in quota.check()] == [s["b"]]
        assert present(archive) == {s["a"]}
        assert quota.refusing is not None and "nothing left to recycle" in quota.refusing
        result = archive.store(encode(instance(uid("policy", "late"), 1)))
        assert result.status == status.OUT_OF_RESOURCES
        audit.close()


def test_refuse_mode_refuses_past_the_limit_and_resumes_within_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        fill(archive, ["a"])
        audit = AuditLog(data / "audit.log")
        full = Quota(archive, data, Limits(1000, 0, "refuse"), audit, set)
        assert full.check() == []
        result = archive.store(encode(instance(uid("policy", "x"), 1)))
        assert (result.outcome, result.status) == (Outcome.REJECTED, status.OUT_OF_RESOURCES)
        assert "archive.max_bytes" in result.reason
        roomy = Quota(archive, data, Limits(10**12, 0, "refuse"), audit, set)
        roomy.refusing = full.refusing
        roomy.check()
        assert archive.store(encode(instance(uid("policy", "x"), 1))).status == status.SUCCESS
        assert len(present(archive)) == 2  # refusing removes nothing
        audit.close()


def test_retention_removes_old_studies_but_protected_ones(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        old = fill(archive, ["old1", "old2"], study_date="20100101")
        new = fill(archive, ["new"], study_date="20240101")
        undated = fill(archive, ["undated"], study_date="")  # received 2023-11-14: its date
        audit = AuditLog(data / "audit.log")
        rules = [Retention("ten-years", {"Modality": "CT"}, 3653)]
        retention.check(archive, rules)
        removed = retention.apply(archive, audit, rules, lambda: {old["old2"]},
                                  today=datetime.date(2034, 1, 1))  # fmt: skip
        audit.close()
        assert {r.study for r in removed} == {old["old1"], undated["undated"]}
        assert present(archive) == {old["old2"], new["new"]}
    records = audit_lines(data / "audit.log")
    assert {r["path"] for r in records} == {"/policy/retention:ten-years"}
    assert {r["patient"] for r in records} == {"ROUTE-1"}


# --- through `duckpacs serve` --------------------------------------------------------------


def c_store_status(port: int, study: str) -> int:
    ae = AE(ae_title="POLICYSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DUCKPACS")
    assert assoc.is_established
    try:
        result = assoc.send_c_store(dcmread(BytesIO(encode(instance(study, 1)))))
        return int(result.Status)
    finally:
        assoc.release()


@pytest.mark.parametrize(
    "limit", ['max_bytes = "1 KB"', 'min_free_bytes = "1000 TB"'], ids=["max_bytes", "min_free"]
)
def test_serve_past_a_limit_answers_0xA700_and_507(tmp_path: Path, limit: str) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        fill(archive, ["before"])
    write_config(data, f"[archive]\n{limit}\n")
    server = start_server(data)
    try:
        assert c_store_status(server.dimse_port, uid("policy", "refused")) == 0xA700
        body = encode(instance(uid("policy", "stow"), 1))
        response = requests.post(
            f"http://127.0.0.1:{server.http_port}/dicom-web/studies",
            data=body,
            headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
            timeout=30,
        )
        assert response.status_code == 507
        (failed,) = response.json()["00081198"]["Value"]
        assert failed["00081197"]["Value"] == [0xA700]
        assert any("refusing new instances" in line for line in server.log)
    finally:
        server.stop()


def test_serve_in_recycle_mode_makes_room_before_listening(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Archive.open(data) as archive:
        s = fill(archive, ["first", "second", "third"])
        # One byte short: one study must go, and then a new instance still fits.
        room = sum(study_bytes(archive, x) for x in s.values()) - 1
    write_config(data, f'[archive]\nmax_bytes = {room}\non_limit = "recycle"\n')
    protect = duckpacs("protect", s["first"], "--data", str(data))
    assert protect.returncode == 0, protect.stderr
    server = start_server(data)
    try:
        assert c_store_status(server.dimse_port, uid("policy", "welcome")) == 0x0000
    finally:
        server.stop()
    with Archive.open(data) as archive:
        assert present(archive) == {s["first"], s["third"], uid("policy", "welcome")}
    records = audit_lines(data / "audit.log")
    assert [(r["method"], r["study"]) for r in records] == [
        ("PROTECT", s["first"]), ("DELETE", s["second"])
    ]  # fmt: skip
