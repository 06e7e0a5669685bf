"""Migration from a legacy PACS: windowed study queries, C-GET per study, a resumable journal.

The plan (PS3.4 C.4.1, C-FIND, Study Root, STUDY level): the span ``since..until`` is queried
by Study Date range (PS3.4 C.2.2.2.5). When a window returns ``window_limit`` studies or more
(the peer may have truncated the answer, or it is just too big to hold) the window is split
in two and each half is queried again, down to single days. Every study found goes into the
journal, an SQLite file, with the instance count the peer reports
(NumberOfStudyRelatedInstances, PS3.4 C.3.4).

Retrieval (PS3.4 C.4.3, C-GET, Study Root): each study not yet done is fetched over the same
association; the C-STORE sub-operations are written by a ``receiver`` (Part 10 files into a
folder for now; the archive's store later). The study's SOP classes come from the study-level
answer (SOP Classes in Study) or an IMAGE-level C-FIND; each (SOP class, transfer syntax) pair
gets its own presentation context, so the peer can send every file in the syntax it stored it
in instead of transcoding (an SCP accepts one syntax per context, PS3.8 9.3.3.2). Some peers
still re-encode the dataset around the pixel data when they send (Orthanc does: trailing
padding dropped, sequence lengths made explicit). A study is ``done`` when the peer reported no
failed sub-operation and we received at least as many instances as the peer announced;
otherwise ``incomplete`` or ``failed`` with the reason. The journal is committed after each
study, so an interrupted run (Ctrl-C, kill) resumes with the first study not done; a study
interrupted halfway is fetched again, which is harmless because files are named by SOP
Instance UID.

Studies without a Study Date are not matched by any date range; a final query can pick them
up only if the peer supports it, so they are reported as a limitation by
:func:`reconcile` rather than silently skipped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from duckpacs.errors import NetworkError, StorageError

DA = "%Y%m%d"
PENDING = (0xFF00, 0xFF01)
# Storage SOP classes offered for C-GET sub-operations: 128 presentation contexts at most
# (PS3.8 9.3.2.2, odd IDs 1-255), one of which is the C-GET context itself.
MAX_STORAGE_CONTEXTS = 127
# Transfer syntaxes we accept for the C-STORE sub-operations, in order of preference. Each
# gets its own presentation context per SOP class, because an SCP accepts one syntax per
# context (PS3.8 9.3.3.2) and would otherwise transcode: the files must arrive as stored.
# Native, deflate, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE (PS3.5 Annex A).
PREFERRED_SYNTAXES = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
]


@dataclass(frozen=True)
class RemotePeer:
    """The legacy PACS: its AE title, host and port, and the AE title we call it with."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "DUCKPACS"
    timeout: float = 60.0


@dataclass(frozen=True)
class RemoteStudy:
    """One study as the peer describes it in a C-FIND response."""

    uid: str
    study_date: str
    patient_id: str
    instances: int | None
    sop_classes: tuple[str, ...] = ()


@dataclass
class Reconciliation:
    """Remote versus received, for the final report of a migration."""

    studies_found: int = 0
    instances_found: int = 0
    studies_done: int = 0
    instances_received: int = 0
    not_done: list[tuple[str, str, str]] = field(default_factory=list)  # uid, status, reason
    windows: int = 0

    @property
    def complete(self) -> bool:
        return self.studies_found == self.studies_done

    def lines(self) -> list[str]:
        out = [
            f"remote: {self.studies_found:,} studies, {self.instances_found:,} instances "
            f"(queried in {self.windows} date windows)",
            f"stored: {self.studies_done:,} studies complete, "
            f"{self.instances_received:,} instances received",
        ]
        out += [f"{status}: {uid}: {reason}" for uid, status, reason in self.not_done]
        out.append("studies without a Study Date are not matched by date windows")
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "studies_found": self.studies_found,
            "instances_found": self.instances_found,
            "studies_done": self.studies_done,
            "instances_received": self.instances_received,
            "windows": self.windows,
            "complete": self.complete,
            "not_done": [{"uid": u, "status": s, "reason": r} for u, s, r in self.not_done],
        }


# --- journal ---------------------------------------------------------------------------------


class Journal:
    """The migration's progress on disk (SQLite): windows queried and studies with status."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS windows (
            first TEXT NOT NULL, last TEXT NOT NULL, studies INTEGER NOT NULL,
            PRIMARY KEY (first, last));
        CREATE TABLE IF NOT EXISTS studies (
            uid TEXT PRIMARY KEY, study_date TEXT, patient_id TEXT, remote_instances INTEGER,
            sop_classes TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'found', received INTEGER NOT NULL DEFAULT 0,
            reason TEXT NOT NULL DEFAULT '', updated REAL);
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.executescript(self.SCHEMA)
        except sqlite3.Error as e:
            raise StorageError(f"{self.path}: migration journal unusable: {e}") from e

    def close(self) -> None:
        self.db.close()

    def window_state(self, first: date, last: date) -> str | None:
        """``"done"``, ``"split"`` (too many answers: its halves hold them) or ``None``."""
        row = self.db.execute(
            "SELECT studies FROM windows WHERE first = ? AND last = ?",
            (first.strftime(DA), last.strftime(DA)),
        ).fetchone()
        if row is None:
            return None
        return "split" if row[0] < 0 else "done"

    def record_split(self, first: date, last: date) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO windows VALUES (?, ?, -1)",
                (first.strftime(DA), last.strftime(DA)),
            )

    def record_window(self, first: date, last: date, studies: list[RemoteStudy]) -> None:
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT INTO studies (uid, study_date, patient_id, remote_instances, sop_classes,"
                " updated) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO UPDATE SET "
                "remote_instances = excluded.remote_instances, "
                "sop_classes = excluded.sop_classes",
                [
                    (s.uid, s.study_date, s.patient_id, s.instances, "\\".join(s.sop_classes), now)
                    for s in studies
                ],
            )
            self.db.execute(
                "INSERT OR REPLACE INTO windows VALUES (?, ?, ?)",
                (first.strftime(DA), last.strftime(DA), len(studies)),
            )

    def pending(self) -> list[RemoteStudy]:
        rows = self.db.execute(
            "SELECT uid, study_date, patient_id, remote_instances, sop_classes FROM studies "
            "WHERE status != 'done' ORDER BY study_date, uid"
        ).fetchall()
        return [
            RemoteStudy(u, d or "", p or "", n, tuple(c for c in (k or "").split("\\") if c))
            for u, d, p, n, k in rows
        ]

    def record_study(self, uid: str, status: str, received: int, reason: str = "") -> None:
        with self.db:
            self.db.execute(
                "UPDATE studies SET status = ?, received = ?, reason = ?, updated = ? "
                "WHERE uid = ?",
                (status, received, reason, time.time(), uid),
            )

    def reconcile(self) -> Reconciliation:
        rec = Reconciliation()
        rec.windows = self.db.execute("SELECT count(*) FROM windows WHERE studies >= 0").fetchone()[
            0
        ]
        for uid, remote, status, received, reason in self.db.execute(
            "SELECT uid, remote_instances, status, received, reason FROM studies ORDER BY uid"
        ):
            rec.studies_found += 1
            rec.instances_found += remote or 0
            rec.instances_received += received
            if status == "done":
                rec.studies_done += 1
            else:
                rec.not_done.append((uid, status, reason or "not retrieved yet"))
        return rec


# --- DIMSE -----------------------------------------------------------------------------------


def _associate(ae: AE, peer: RemotePeer, **kwargs: object) -> Association:
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, **kwargs)  # type: ignore[arg-type]
    if not assoc.is_established:
        raise NetworkError(
            f"cannot associate with {peer.ae_title}@{peer.host}:{peer.port} "
            f"(rejected, aborted or unreachable)"
        )
    return assoc


def find_studies(peer: RemotePeer, first: date, last: date) -> tuple[list[RemoteStudy], bool]:
    """C-FIND at STUDY level for Study Dates ``first``..``last`` (PS3.4 C.2.2.2.5 range).

    Returns the studies and whether the peer cut the answer short: some PACS (Orthanc with
    ``LimitFindResults``) end a too-long answer with status Cancel (0xFE00).
    """
    ae = AE(ae_title=peer.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyDate = f"{first.strftime(DA)}-{last.strftime(DA)}"
    query.StudyInstanceUID = ""
    query.PatientID = ""
    query.NumberOfStudyRelatedInstances = ""
    query.SOPClassesInStudy = ""
    assoc = _associate(ae, peer)
    studies: list[RemoteStudy] = []
    truncated = False
    try:
        for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = int(getattr(status, "Status", -1))
            if code in PENDING and ident is not None and ident.get("StudyInstanceUID"):
                studies.append(_remote_study(ident))
            elif code == 0xFE00:
                truncated = True
            elif code not in PENDING and code != 0x0000:
                raise NetworkError(f"C-FIND {query.StudyDate} failed with status 0x{code:04X}")
    finally:
        assoc.release()
    return studies, truncated


def _remote_study(ident: Dataset) -> RemoteStudy:
    count = ident.get("NumberOfStudyRelatedInstances")
    classes = ident.get("SOPClassesInStudy") or []
    classes = [classes] if isinstance(classes, str) else list(classes)
    return RemoteStudy(
        str(ident.StudyInstanceUID),
        str(ident.get("StudyDate", "") or ""),
        str(ident.get("PatientID", "") or ""),
        int(count) if count not in (None, "") else None,
        tuple(str(c) for c in classes if str(c)),
    )


def plan(
    peer: RemotePeer,
    journal: Journal,
    since: date,
    until: date,
    *,
    window_limit: int = 500,
    find: Callable[[RemotePeer, date, date], tuple[list[RemoteStudy], bool]] = find_studies,
) -> int:
    """Query ``since..until`` in date windows small enough; record studies; return windows.

    Windows already in the journal are not queried again (resume). A single day that still
    reaches the limit is kept as it is (it cannot be split by date): its studies beyond the
    peer's limit are missed, which :func:`migrate`'s reconciliation cannot see, so choose
    ``window_limit`` at or below the peer's own limit.
    """
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    queried = 0
    stack = [(since, until)]
    while stack:
        first, last = stack.pop()
        state = journal.window_state(first, last)
        if state == "done":
            continue
        if state is None:
            studies, truncated = find(peer, first, last)
            queried += 1
            if (len(studies) < window_limit and not truncated) or first == last:
                journal.record_window(first, last, studies)
                continue
            journal.record_split(first, last)
        middle = first + (last - first) // 2
        stack.append((middle + timedelta(days=1), last))
        stack.append((first, middle))
    return queried


Receiver = Callable[[str, bytes], None]  # (SOP Instance UID, Part 10 bytes)


def folder_receiver(out_dir: str | Path) -> Receiver:
    """Write each received instance to ``out_dir/<SOP Instance UID>.dcm`` (atomic rename)."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)

    def receive(sop_uid: str, data: bytes) -> None:
        safe = "".join(c for c in sop_uid if c.isdigit() or c == ".") or "unknown"
        target = root / f"{safe}.dcm"
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)

    return receive


def study_sop_classes(peer: RemotePeer, study_uid: str) -> list[str]:
    """SOP classes of a study's instances, from an IMAGE-level C-FIND (PS3.4 C.6.2)."""
    ae = AE(ae_title=peer.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    query.SOPClassUID = ""
    assoc = _associate(ae, peer)
    classes: set[str] = set()
    try:
        for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = int(getattr(status, "Status", -1))
            if code in PENDING and ident is not None and ident.get("SOPClassUID"):
                classes.add(str(ident.SOPClassUID))
    finally:
        assoc.release()
    return sorted(classes)


def storage_offers(sop_classes: list[str]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs, one presentation context each, within 127."""
    if not sop_classes:
        # Unknown: every storage class with the two native syntaxes (the peer may transcode).
        return [
            (str(cx.abstract_syntax), syntax)
            for cx in StoragePresentationContexts[: MAX_STORAGE_CONTEXTS // 2]
            for syntax in PREFERRED_SYNTAXES[:2]
        ]
    per_class = max(1, min(len(PREFERRED_SYNTAXES), MAX_STORAGE_CONTEXTS // len(sop_classes)))
    return [
        (c, t) for c in sop_classes[:MAX_STORAGE_CONTEXTS] for t in PREFERRED_SYNTAXES[:per_class]
    ]


def retrieve_study(
    peer: RemotePeer, study: RemoteStudy, receiver: Receiver
) -> tuple[int, int, str]:
    """C-GET one study; return (received, failed sub-operations, problem or "").

    The SCP/SCU role selection (PS3.7 D.3.3.4) makes us the Storage SCP for the study's SOP
    classes on this association.
    """
    ae = AE(ae_title=peer.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    classes = list(study.sop_classes) or study_sop_classes(peer, study.uid)
    roles: list[SCP_SCU_RoleSelectionNegotiation] = []
    for sop_class, syntax in storage_offers(classes):
        ae.add_requested_context(sop_class, [syntax])
        if all(r.sop_class_uid != sop_class for r in roles):
            roles.append(build_role(sop_class, scp_role=True))
    received = 0
    errors: list[str] = []

    def on_store(event: evt.Event) -> int:
        nonlocal received
        try:
            uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
            receiver(uid, event.encoded_dataset())
        except (OSError, StorageError) as e:
            errors.append(str(e))
            return 0xA700  # Out of resources (PS3.4 Table GG.4-1)
        received += 1
        return 0x0000

    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.uid
    assoc = _associate(ae, peer, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    failed, problem = 0, ""
    try:
        for status, _ident in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            code = int(getattr(status, "Status", -1))
            if code in PENDING:
                continue
            failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
            if code not in (0x0000, 0xB000):
                problem = f"C-GET status 0x{code:04X}"
    finally:
        assoc.release()
    if errors:
        problem = f"could not keep {len(errors)} instances: {errors[0]}"
    return received, failed, problem


def migrate(
    peer: RemotePeer,
    journal: Journal,
    receiver: Receiver,
    since: date,
    until: date,
    *,
    window_limit: int = 500,
    max_studies: int | None = None,
    on_study: Callable[[RemoteStudy, int], None] | None = None,
) -> Reconciliation:
    """Plan (or resume the plan), retrieve every study not done, return the reconciliation.

    ``max_studies`` stops after that many retrievals (a bounded run; the next run resumes).
    """
    plan(peer, journal, since, until, window_limit=window_limit)
    for done, study in enumerate(journal.pending()):
        if max_studies is not None and done >= max_studies:
            break
        received, failed, problem = retrieve_study(peer, study, receiver)
        expected = study.instances
        if problem or failed:
            status = "failed"
            reason = problem or f"{failed} sub-operations failed at the peer"
        elif expected is not None and received < expected:
            status, reason = "incomplete", f"received {received} of {expected} instances"
        else:
            status, reason = "done", ""
        journal.record_study(study.uid, status, received, reason)
        if on_study is not None:
            on_study(study, received)
    return journal.reconcile()


def open_journal(path: str | Path) -> closing[Journal]:
    """A journal as a context manager: ``with open_journal(p) as j: ...``."""
    return closing(Journal(path))
