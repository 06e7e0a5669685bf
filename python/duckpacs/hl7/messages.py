"""HL7 v2 messages from a RIS or HIS, applied to the worklist; the acknowledgement for each.

Parsing is python-hl7's (``hl7.parse``); this module only reads fields and decides.

- ADT^A01 / A04 / A08: the patient's name, birth date and sex (PID-5, PID-7, PID-8) on every
  worklist entry of PID-3. An A08 (update patient information) also corrects the archived
  studies of PID-3 with the values it carries (an empty field is "not sent", not "erase").
- ADT^A40: the entries of the prior patient (MRG-1) move to PID-3, with PID's attributes;
  so do the archived studies of MRG-1 (Patient ID, and name, birth date and sex from PID,
  else from the surviving patient's archived studies).

Archived studies change through the archive's corrections (:mod:`duckpacs.archive.
corrections`: a new version per instance, the received bytes kept, an audit line per
message), when the listener runs inside ``serve`` with the server's archive.
- ORM^O01 and OMI^O23: ORC-1 ``NW`` (new order) adds a SCHEDULED entry; ``CA``, ``DC``,
  ``OC`` cancel the entries of the order (ORC-2, else ORC-3). Fields as IHE RAD TF-2 reads
  them: OBR-18 Accession Number, OBR-19 Requested Procedure ID, OBR-20 Scheduled Procedure
  Step ID, OBR-24 Modality, OBR-4 (text) the procedure, ORC-7 / OBR-27 / TQ1-7 the start;
  OMI's IPC segment (IPC-1 accession, IPC-2 requested procedure, IPC-3 Study Instance UID,
  IPC-4 step, IPC-5 modality, IPC-9 station AE title) wins where present.

Acknowledgements (HL7 v2.5 chapter 2, original mode, table 0008): AA accepted; AE a
message understood but not applicable (a field missing, an order unknown); AR a message
rejected (not HL7, unsupported type). MSA-3 carries the reason in text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import hl7

from duckpacs.worklist.store import CANCELLED, SCHEDULED, Worklist, WorklistError

PATIENT_EVENTS = {"A01", "A04", "A08"}
ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}
CANCEL_CODES = {"CA", "DC", "OC"}
_SPECIAL = str.maketrans({c: " " for c in "|^~\\&\r\n"})


@dataclass(frozen=True)
class Outcome:
    code: str  # AA, AE or AR
    text: str


def _field(msg: hl7.Message, segment: str, index: int, component: int = 1) -> str:
    """Component ``component`` of the first repetition of the first ``segment``-``index``;
    '' if the segment or the field is absent."""
    try:
        return str(msg.extract_field(segment, 1, index, 1, component)).strip()
    except (KeyError, IndexError):
        return ""


def _person_name(msg: hl7.Message, segment: str, index: int) -> str:
    """An XPN/XCN as a DICOM PN: family^given^middle^suffix^prefix share the order."""
    parts = [_field(msg, segment, index, c) for c in range(1, 6)]
    return "^".join(parts).rstrip("^")


def _date(value: str) -> tuple[str, str]:
    """A DTM as (DA, TM)."""
    digits = "".join(c for c in value if c.isdigit())
    return digits[:8], digits[8:14]


def message_type(msg: hl7.Message) -> tuple[str, str]:
    return _field(msg, "MSH", 9, 1).upper(), _field(msg, "MSH", 9, 2).upper()


def _patient(msg: hl7.Message) -> dict[str, str]:
    return {
        "PatientID": _field(msg, "PID", 3),
        "PatientName": _person_name(msg, "PID", 5),
        "PatientBirthDate": _date(_field(msg, "PID", 7))[0],
        "PatientSex": _field(msg, "PID", 8).upper()[:1],
    }


@dataclass(frozen=True)
class ArchiveDoor:
    """The server's archive and who the corrections are recorded as coming from."""

    archive: Any
    source: str


def _correct(door: ArchiveDoor | None, kind: str, query: dict[str, str],
             changes: dict[str, str]) -> str:  # fmt: skip
    """Apply a correction to the archived studies; the acknowledgement's words for it."""
    if door is None:
        return ""
    from duckpacs.archive import corrections  # the archive only when a server runs us

    summary = door.archive.correct("study", query, changes, kind, user="hl7",
                                   source=door.source)  # fmt: skip
    if summary["batch"]:
        corrections.audit(corrections.require_data_dir(door.archive), kind, summary,
                          user="hl7", source=door.source, auth="hl7")  # fmt: skip
    return f"; {summary['instances']} archived instances of {len(summary['studies'])} studies"


def _patient_update(worklist: Worklist, msg: hl7.Message, door: ArchiveDoor | None) -> Outcome:
    patient = _patient(msg)
    if not patient["PatientID"]:
        return Outcome("AE", "PID-3 (patient identifier) missing")
    changed = worklist.update_patient(patient["PatientID"], patient)
    archived = ""
    sent = {k: v for k, v in patient.items() if v and k != "PatientID"}
    if message_type(msg)[1] == "A08" and sent:
        archived = _correct(door, "modify", {"PatientID": patient["PatientID"]}, sent)
    return Outcome("AA", f"{changed} worklist entries updated{archived}")


def _merge(worklist: Worklist, msg: hl7.Message, door: ArchiveDoor | None) -> Outcome:
    patient = _patient(msg)
    prior = _field(msg, "MRG", 1)
    if not patient["PatientID"] or not prior:
        return Outcome("AE", "A40 needs PID-3 (surviving patient) and MRG-1 (prior patient)")
    moved = worklist.update_patient(prior, patient)
    archived = ""
    if door is not None:
        from duckpacs.archive import corrections

        into = corrections.plain_id(patient["PatientID"], "PID-3")
        given = {k: patient[k] or None for k in ("PatientName", "PatientBirthDate",
                                                 "PatientSex")}  # fmt: skip
        if given["PatientName"] or door.archive.find("study", {"PatientID": into}, []):
            changes = corrections.merge_changes(door.archive, into, given)
        else:  # nothing to take the name from: the merged studies keep theirs
            changes = {"PatientID": into, **{k: v for k, v in given.items() if v}}
        query = {"PatientID": corrections.plain_id(prior, "MRG-1")}
        archived = _correct(door, "merge", query, changes)
    return Outcome(
        "AA", f"{moved} worklist entries moved from {prior} to {patient['PatientID']}{archived}"
    )


def _order_values(msg: hl7.Message) -> dict[str, str]:
    start = (_field(msg, "TQ1", 7) or _field(msg, "OBR", 27, 4) or _field(msg, "ORC", 7, 4)
             or _field(msg, "OBR", 7))  # fmt: skip
    date, start_time = _date(start)
    values = {
        **_patient(msg),
        "AccessionNumber": _field(msg, "OBR", 18),
        "RequestedProcedureID": _field(msg, "OBR", 19),
        "ScheduledProcedureStepID": _field(msg, "OBR", 20),
        "Modality": _field(msg, "OBR", 24).upper(),
        "RequestedProcedureDescription": _field(msg, "OBR", 4, 2) or _field(msg, "OBR", 4),
        "ReferringPhysicianName": _person_name(msg, "OBR", 16) or _person_name(msg, "PV1", 8),
        "ScheduledProcedureStepStartDate": date,
        "ScheduledProcedureStepStartTime": start_time,
    }
    values["ScheduledProcedureStepDescription"] = values["RequestedProcedureDescription"]
    ipc = {"AccessionNumber": 1, "RequestedProcedureID": 2, "StudyInstanceUID": 3,
           "ScheduledProcedureStepID": 4, "Modality": 5, "ScheduledStationAETitle": 9}  # fmt: skip
    for key, index in ipc.items():
        if value := _field(msg, "IPC", index):
            values[key] = value.upper() if key == "Modality" else value
    return {k: v for k, v in values.items() if v}


def _order(worklist: Worklist, msg: hl7.Message) -> Outcome:
    control = _field(msg, "ORC", 1).upper()
    order = _field(msg, "ORC", 2) or _field(msg, "ORC", 3)
    if not control:
        return Outcome("AE", "ORC-1 (order control) missing")
    if not order:
        return Outcome("AE", "ORC-2 or ORC-3 (order number) missing")
    if control in CANCEL_CODES:
        entries = [e for e in worklist.by_order(order) if e["status"] == SCHEDULED]
        if not entries:
            return Outcome("AE", f"no scheduled worklist entry for order {order}")
        for entry in entries:
            worklist.set_status(int(entry["id"]), CANCELLED)
        return Outcome("AA", f"order {order} cancelled ({len(entries)} entries)")
    if control != "NW":
        return Outcome("AR", f"order control {control} not supported (NW, CA, DC, OC are)")
    values = _order_values(msg)
    values.setdefault("AccessionNumber", order)
    try:
        entry_id = worklist.add(values, source="hl7", placer_order=order)
    except WorklistError as e:
        return Outcome("AE", str(e))
    return Outcome("AA", f"worklist entry {entry_id} scheduled for order {order}")


def apply(worklist: Worklist, msg: hl7.Message, door: ArchiveDoor | None = None) -> Outcome:
    """What ``msg`` does to the worklist (and, with ``door``, to the archived studies), as
    the acknowledgement's code and text."""
    kind, event = message_type(msg)
    if kind == "ADT" and event in PATIENT_EVENTS:
        return _patient_update(worklist, msg, door)
    if kind == "ADT" and event == "A40":
        return _merge(worklist, msg, door)
    if (kind, event) in ORDER_TYPES:
        return _order(worklist, msg)
    return Outcome("AR", f"message type {kind}^{event} not supported")


def acknowledge(msg: hl7.Message, outcome: Outcome, application: str) -> str:
    """The ACK of ``msg``: MSA-1 the code, MSA-2 its control id, MSA-3 the reason."""
    ack = msg.create_ack(ack_code=outcome.code, application=application)
    ack.segment("MSA").assign_field(outcome.text.translate(_SPECIAL)[:80], 3)
    return str(ack)


def reject(reason: str, application: str) -> str:
    """An AR for something that could not be read as a message (no MSH to answer from)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    text = reason.translate(_SPECIAL)[:80]
    return (f"MSH|^~\\&|{application}||||{stamp}||ACK|{stamp}{time.monotonic_ns() % 1000:03d}"
            f"|P|2.5\rMSA|AR||{text}\r")  # fmt: skip


def parse(raw: str) -> Any:
    """The message, or ValueError with the reason it is not one."""
    text = raw.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH"):
        raise ValueError("message does not start with an MSH segment")
    try:
        msg = hl7.parse(text)
    except Exception as e:  # noqa: BLE001 (python-hl7 raises several kinds)
        raise ValueError(f"not an HL7 v2 message: {e}") from e
    if not _field(msg, "MSH", 10):
        raise ValueError("MSH-10 (message control id) missing")
    if not _field(msg, "MSH", 9):
        raise ValueError("MSH-9 (message type) missing")
    return msg
