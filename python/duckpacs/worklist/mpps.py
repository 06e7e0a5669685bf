"""Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE and N-SET.

N-CREATE opens a step IN PROGRESS and marks the worklist entry it names (Scheduled Step
Attributes Sequence: Scheduled Procedure Step ID, Accession Number or Study Instance UID)
in progress; an unscheduled step (no entry named) is kept too. N-SET changes an IN PROGRESS
step; COMPLETED or DISCONTINUED ends it and its entry, and each series of the Performed
Series Sequence is linked to the study the archive holds it in.

Statuses (PS3.4 F.7.2.1.2, F.7.2.2.2, PS3.7 C.4.2 and C.4.3): 0x0111 a step created twice,
0x0112 N-SET of an unknown step, 0x0110 N-SET of a step already ended ("may no longer be
updated") or an unreadable dataset, 0x0120 a required attribute missing, 0x0106 a status
other than IN PROGRESS at creation or one not defined for N-SET, 0x0118 another SOP class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from duckpacs import logs
from duckpacs.dicom import status
from duckpacs.worklist.find import read
from duckpacs.worklist.store import COMPLETED, DISCONTINUED, IN_PROGRESS, Worklist

log = logs.get("mpps")

MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE = 0x0120
DUPLICATE_SOP_INSTANCE = 0x0111

# What names the scheduled step an MPPS performs (Scheduled Step Attributes Sequence).
_NAMING = ("ScheduledProcedureStepID", "AccessionNumber", "StudyInstanceUID")
NOT_UPDATABLE = "Performed Procedure Step may no longer be updated"  # F.7.2.2.2, A710

# (status, error comment, affected SOP Instance UID of the response)
Reply = tuple[int, str | None, str | None]


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def held_in(find: Callable[..., list[dict[str, Any]]], series_uid: str) -> str | None:
    """The Study Instance UID the archive holds ``series_uid`` in, or None."""
    rows = find("SERIES", {"SeriesInstanceUID": series_uid}, ["StudyInstanceUID"])
    return str(rows[0].get("StudyInstanceUID") or "") if rows else None


def relink(worklist: Worklist, find: Callable[..., list[dict[str, Any]]]) -> int:
    """Link the performed series that arrived after their N-SET (a modality often reports
    before its images are stored); how many were linked now."""
    linked = 0
    for mpps_uid, series_uid in worklist.unheld_series():
        study = held_in(find, series_uid)
        if study is not None:
            worklist.mark_held(mpps_uid, series_uid, study)
            linked += 1
    return linked


class Mpps:
    """The MPPS SCP over the worklist; ``archive`` links performed series to studies."""

    def __init__(self, worklist: Worklist, archive: Any) -> None:
        self.worklist = worklist
        self.archive = archive

    def handle(
        self, peer: dict[str, Any], command: dict[str, Any], data: bytes, transfer_syntax: str
    ) -> Reply:
        create = command.get("field") == 0x0140
        sop_class = command.get("affected_sop_class_uid" if create else "requested_sop_class_uid")
        if sop_class != MPPS_CLASS:
            return status.NO_SUCH_SOP_CLASS, f"{sop_class} has no N-CREATE/N-SET here", None
        try:
            ds = read(data, transfer_syntax)
        except Exception as e:  # noqa: BLE001 (the peer reads why in the Error Comment)
            return status.PROCESSING_FAILURE, f"dataset cannot be read: {e}", None
        if create:
            uid = command.get("affected_sop_instance_uid") or generate_uid()
            return self.create(peer, uid, ds)
        return self.set(peer, str(command.get("requested_sop_instance_uid") or ""), ds)

    def _entry(self, ds: Dataset) -> tuple[int | None, str]:
        """The worklist entry the step performs and its study, from the first item of the
        Scheduled Step Attributes Sequence that names one."""
        study = ""
        for item in ds.get("ScheduledStepAttributesSequence", []):
            study = study or _text(item, "StudyInstanceUID")
            wanted = {k: _text(item, k) for k in _NAMING}
            for entry in self.worklist.entries(include_done=False):
                named = [k for k, v in wanted.items() if v]
                if named and all(entry[k] == wanted[k] for k in named):
                    return int(entry["id"]), study or entry["StudyInstanceUID"]
        return None, study

    def create(self, peer: dict[str, Any], uid: str, ds: Dataset) -> Reply:
        if self.worklist.mpps(uid) is not None:
            return DUPLICATE_SOP_INSTANCE, f"performed procedure step {uid} exists", uid
        for keyword in ("ScheduledStepAttributesSequence", "PerformedProcedureStepStatus"):
            if keyword not in ds:
                return MISSING_ATTRIBUTE, f"{keyword} missing", uid
        pps_status = _text(ds, "PerformedProcedureStepStatus")
        if pps_status != IN_PROGRESS:
            why = f"N-CREATE status must be IN PROGRESS, not {pps_status!r}"
            return INVALID_ATTRIBUTE_VALUE, why, uid
        entry_id, study = self._entry(ds)
        self.worklist.create_mpps(uid, entry_id, study, peer["calling_ae"])
        if entry_id is not None:
            self.worklist.set_status(entry_id, IN_PROGRESS, mpps_uid=uid)
        logs.event(log, "MPPS created", uid=uid, entry=entry_id or "unscheduled",
                   peer=peer["calling_ae"])  # fmt: skip
        return status.SUCCESS, None, uid

    def set(self, peer: dict[str, Any], uid: str, ds: Dataset) -> Reply:
        step = self.worklist.mpps(uid)
        if step is None:
            return status.NO_SUCH_OBJECT_INSTANCE, f"no performed procedure step {uid}", None
        if step["status"] != IN_PROGRESS:
            return status.PROCESSING_FAILURE, NOT_UPDATABLE, None
        new = _text(ds, "PerformedProcedureStepStatus") or IN_PROGRESS
        if new not in (IN_PROGRESS, COMPLETED, DISCONTINUED):
            return INVALID_ATTRIBUTE_VALUE, f"PerformedProcedureStepStatus {new!r} unknown", None
        series = self._series(ds, step["study_uid"])
        self.worklist.set_mpps(uid, new, series)
        if new != IN_PROGRESS and step["entry_id"] is not None:
            self.worklist.set_status(int(step["entry_id"]), new)
        logs.event(log, "MPPS set", uid=uid, status=new, series=len(series),
                   held=sum(1 for s in series if s[2]), peer=peer["calling_ae"])  # fmt: skip
        return status.SUCCESS, None, None

    def _series(self, ds: Dataset, study: str) -> list[tuple[str, str, bool]]:
        """(series UID, study UID, held by the archive) of the Performed Series Sequence."""
        out = []
        for item in ds.get("PerformedSeriesSequence", []):
            series_uid = _text(item, "SeriesInstanceUID")
            if not series_uid:
                continue
            held = held_in(self.archive.find, series_uid)
            out.append((series_uid, held or study, held is not None))
        return out
