"""Removing a whole study on the storage policy's behalf, with its audit record.

The policy bypasses the trash (:mod:`duckpacs.archive.trash`), as it removes to free
space: the study is deleted through the archive's door
(:meth:`duckpacs.archive.facade.Archive.delete`: durable tombstones, then the index rows),
and its store space returns to the disk at the next ``duckpacs compact``. Every removal is
one line in the audit log (``DATA/audit.log``, the web layer's, :mod:`duckpacs.web.audit`)
and one WARNING in the server's log, naming the study, its patient and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from duckpacs import logs
from duckpacs.archive.facade import Archive
from duckpacs.web.audit import AuditLog

log = logs.get("policy")


@dataclass(frozen=True)
class Removed:
    study: str
    patient_id: str
    instances: int
    bytes: int


def remove_study(
    archive: Archive, audit: AuditLog, study: str, *, policy: str, reason: str
) -> Removed:
    """Delete every instance of ``study`` and record why (``policy``: ``recycle`` or
    ``retention:<rule>``)."""
    found = archive.find("study", {"StudyInstanceUID": study}, ["PatientID"])
    patient = str((found[0].get("PatientID") if found else "") or "")
    refs = archive.locate("study", {"StudyInstanceUID": study})
    size = sum(r.location.length for r in refs)
    deleted = archive.delete(refs)
    audit.record(
        user="duckpacs",
        auth="policy",
        client=None,
        method="DELETE",
        path=f"/policy/{policy}",
        status=200,
        study=study,
        patient=patient,
        instances=deleted,
        bytes=size,
        reason=reason,
    )
    logs.event(log, "study removed", policy=policy, study=study, patient=patient,
               instances=deleted, bytes=size, reason=reason, level=30)  # fmt: skip
    return Removed(study, patient, deleted, size)


def describe(removed: list[Removed]) -> dict[str, Any]:
    return {
        "studies": len(removed),
        "instances": sum(r.instances for r in removed),
        "bytes": sum(r.bytes for r in removed),
    }
