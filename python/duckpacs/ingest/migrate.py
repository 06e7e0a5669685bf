"""Migration from a legacy PACS: windowed study queries, C-GET per study, a resumable journal.

The plan (PS3.4 C.4.1, C-FIND, Study Root, STUDY level): the span ``since..until`` is queried
by Study Date range (PS3.4 C.2.2.2.5). When a window returns ``window_limit`` studies or more
(the peer may have truncated the answer, or it is just too big to hold) the window is split
in two and each half is queried again, down to single days. Every study found goes into the
journal, an SQLite file, with the instance count the peer reports
(NumberOfStudyRelatedInstances, PS3.4 C.3.4).

Retrieval (PS3.4 C.4.3, C-GET, Study Root): each study not yet done is fetched over the same
association; the C-STORE sub-operations go to a :class:`Target`: Part 10 files in a folder
(``--out``), or the archive (:class:`ArchiveTarget`: staged in ``<data>/migrate/staging``,
imported with the importer of ``duckpacs import``, counted in the index, staging removed).
The study's SOP classes come from the study-level answer (SOP Classes in Study) or an
IMAGE-level C-FIND; each (SOP class, transfer syntax) pair gets its own presentation context,
so the peer can send every file in the syntax it stored it in instead of transcoding (an SCP
accepts one syntax per context, PS3.8 9.3.3.2). Some peers still re-encode the dataset around
the pixel data when they send (Orthanc does: trailing padding dropped, sequence lengths made
explicit).

A study is ``done`` when the peer reported no failed sub-operation and the target holds at
least as many instances as the peer announced (into the archive: the index's count for the
study, not only what arrived); otherwise ``incomplete`` or ``failed`` with the reason. The
journal is committed after each study, so an interrupted run (Ctrl-C, kill) resumes with the
first study not done; a study interrupted halfway is fetched again, which is harmless because
files are named by SOP Instance UID and the importer skips instances already archived with
the same bytes. Into the archive, a run first checks the studies the journal calls done
against the index and fetches again any whose instances are no longer all there.

Studies without a Study Date are not matched by any date range; a final query can pick them
up only if the peer supports it, so they are reported as a limitation by
:func:`reconcile` rather than silently skipped.
"""

from __future__ import annotations

import abc
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
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
from duckpacs.ingest import batch as batch_mod
from duckpacs.ingest import importer as importer_mod

DA = "%Y%m%d"
# Below the data folder: journals (one per peer) and the staging area of archive mode.
MIGRATE_DIR = "migrate"
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
    # Largest PDU we accept (PS3.8 D.1; 0 = no limit). pynetdicom's default, 16 KiB, splits
    # each received instance into many PDUs, and one association handles each in turn.
    max_pdu: int = 262144


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
    instances_archived: int | None = None  # the index's count for these studies (archive mode)

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
        if self.instances_archived is not None:
            out.append(f"archive: {self.instances_archived:,} instances of these studies")
        out += [f"{status}: {uid}: {reason}" for uid, status, reason in self.not_done]
        out.append("studies without a Study Date are not matched by date windows")
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "studies_found": self.studies_found,
            "instances_found": self.instances_found,
            "studies_done": self.studies_done,
            "instances_received": self.instances_received,
            "instances_archived": self.instances_archived,
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
            reason TEXT NOT NULL DEFAULT '', updated REAL, archived INTEGER);
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.executescript(self.SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(studies)")}
            if "archived" not in columns:  # a journal written before archive mode existed
                with self.db:
                    self.db.execute("ALTER TABLE studies ADD COLUMN archived INTEGER")
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

    def record_study(
        self, uid: str, status: str, received: int, reason: str = "", archived: int | None = None
    ) -> None:
        with self.db:
            self.db.execute(
                "UPDATE studies SET status = ?, received = ?, reason = ?, updated = ?, "
                "archived = ? WHERE uid = ?",
                (status, received, reason, time.time(), archived, uid),
            )

    def done_studies(self) -> list[tuple[str, int | None]]:
        """(Study Instance UID, instances the peer announced) of every study marked done."""
        rows = self.db.execute(
            "SELECT uid, remote_instances FROM studies WHERE status = 'done' ORDER BY uid"
        ).fetchall()
        return [(str(u), n) for u, n in rows]

    def reopen(self, uid: str, reason: str) -> None:
        """Mark a study done earlier as ``missing`` (to be fetched again) with the reason."""
        with self.db:
            self.db.execute(
                "UPDATE studies SET status = 'missing', reason = ?, updated = ? WHERE uid = ?",
                (reason, time.time(), uid),
            )

    def reconcile(self, held: HeldCounts | None = None) -> Reconciliation:
        """Remote counts against what arrived, and against what ``held`` says the target holds.

        With ``held`` (archive mode) a study the journal calls done but whose instances the
        archive no longer all holds is reported as ``missing``, not done.
        """
        rec = Reconciliation()
        rec.windows = self.db.execute("SELECT count(*) FROM windows WHERE studies >= 0").fetchone()[
            0
        ]
        rows = self.db.execute(
            "SELECT uid, remote_instances, status, received, reason FROM studies ORDER BY uid"
        ).fetchall()
        counts = held([str(r[0]) for r in rows]) if held is not None else None
        if counts is not None:
            rec.instances_archived = 0
        for uid, remote, status, received, reason in rows:
            rec.studies_found += 1
            rec.instances_found += remote or 0
            rec.instances_received += received
            if counts is not None and rec.instances_archived is not None:
                have = counts.get(uid, 0)
                rec.instances_archived += have
                if status == "done" and remote is not None and have < remote:
                    status, reason = "missing", f"the archive holds {have} of {remote} instances"
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
    ae.maximum_pdu_size = peer.max_pdu
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
            elif code < 0:  # pynetdicom's empty status: no response before the association ended
                raise NetworkError(
                    f"C-FIND {query.StudyDate}: {peer.ae_title} sent no answer (it aborted; "
                    f"does it know our AE title {peer.calling_ae}?)"
                )
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
# Study Instance UIDs -> how many instances of each the target holds (absent: none).
HeldCounts = Callable[[list[str]], dict[str, int]]


def folder_receiver(out_dir: str | Path) -> Receiver:
    """Write each received instance to ``out_dir/<SOP Instance UID>.dcm`` (atomic rename)."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)

    def receive(sop_uid: str, data: bytes) -> None:
        target = root / f"{_safe_name(sop_uid)}.dcm"
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)

    return receive


def _safe_name(uid: str) -> str:
    return "".join(c for c in uid if c.isdigit() or c == ".") or "unknown"


class Target(abc.ABC):
    """Where a migration puts what it retrieves.

    :meth:`begin` runs on the calling thread and gives the receiver of one study, which a
    retrieval thread then calls once per instance; :meth:`finish` runs on the calling thread
    after that study's retrieval.
    """

    @abc.abstractmethod
    def begin(self, study: RemoteStudy) -> Receiver:
        """Prepare for ``study``; return the receiver of its instances."""

    def finish(self, study: RemoteStudy, received: int) -> tuple[int, str]:
        """Called after retrieval: (instances of ``study`` the target now holds, problem)."""
        return received, ""

    @property
    def held(self) -> HeldCounts | None:
        """Counts per study from the target itself, when it can tell (the archive can)."""
        return None


class FolderTarget(Target):
    """Every instance to one receiver (e.g. :func:`folder_receiver`); the received count is
    what it holds."""

    def __init__(self, receive: Receiver) -> None:
        self.receive = receive

    def begin(self, study: RemoteStudy) -> Receiver:
        return self.receive


class ArchiveTarget(Target):
    """Retrieved studies go into the archive at ``data_dir``.

    Each study is staged as Part 10 files in ``<data>/migrate/staging/<study>``, imported
    with :class:`~duckpacs.ingest.importer.Importer` (dedupe by UID and SHA-256, durable
    store, then index), counted in the index, and its staging folder removed. Files the
    importer refused stay in the staging folder for inspection and fail the study. Create it
    with :func:`open_archive`, which holds the index (single writer) for the whole run.
    """

    def __init__(self, data_dir: Path, importer: importer_mod.Importer) -> None:
        self.data_dir = data_dir
        self.index = importer.index
        self.staging = data_dir / MIGRATE_DIR / "staging"
        self.importer = importer

    def folder(self, study: RemoteStudy) -> Path:
        """The staging folder of ``study``."""
        return self.staging / _safe_name(study.uid)

    def begin(self, study: RemoteStudy) -> Receiver:
        folder = self.folder(study)
        shutil.rmtree(folder, ignore_errors=True)  # left by an interrupted run
        folder.mkdir(parents=True, exist_ok=True)

        def stage(sop_uid: str, data: bytes) -> None:
            target = folder / f"{_safe_name(sop_uid)}.dcm"
            tmp = target.with_suffix(".part")
            try:
                tmp.write_bytes(data)
                tmp.replace(target)
            except OSError as e:
                raise StorageError(f"{target}: cannot stage: {e.strerror or e}") from e

        return stage

    def finish(self, study: RemoteStudy, received: int) -> tuple[int, str]:
        folder = self.folder(study)
        summary = batch_mod.run([folder], self.importer, jobs=2)
        problem = ""
        if summary.rejected:
            first = summary.rejected[0]
            problem = (
                f"{len(summary.rejected)} received files not archived (kept in "
                f"{folder}): {first.path}: {first.reason}"
            )
        else:
            shutil.rmtree(folder, ignore_errors=True)
        return self.counts([study.uid]).get(study.uid, 0), problem

    def counts(self, study_uids: list[str]) -> dict[str, int]:
        """Instances the index holds for each study (studies with none are absent)."""
        if not study_uids:
            return {}
        con = self.index.connection()
        con.register("_dp_migrate_uids", pa.table({"uid": pa.array(study_uids, pa.string())}))
        try:
            rows = con.execute(
                "SELECT study_instance_uid, count(*) FROM instances WHERE study_instance_uid "
                "IN (SELECT uid FROM _dp_migrate_uids) GROUP BY study_instance_uid"
            ).fetchall()
        finally:
            con.unregister("_dp_migrate_uids")
        return {str(u): int(n) for u, n in rows}

    @property
    def held(self) -> HeldCounts | None:
        return self.counts


@contextmanager
def open_archive(data_dir: str | Path, wait: float = 0.0) -> Iterator[ArchiveTarget]:
    """The archive at ``data_dir`` as a migration target, owned for the whole run.

    Raises :class:`~duckpacs.errors.ArchiveLockedError` (after ``wait`` seconds of retrying)
    while ``duckpacs serve`` or an import writes the archive, like ``duckpacs import``.
    """
    data = Path(data_dir)
    with importer_mod.open_importer(data, wait) as importer:
        yield ArchiveTarget(data, importer)


def journal_path(data_dir: str | Path, peer: RemotePeer) -> Path:
    """The journal of migrating ``peer`` into the archive: one per peer in ``<data>/migrate``."""
    name = "".join(
        c if c.isalnum() or c in "-." else "_" for c in f"{peer.ae_title}@{peer.host}-{peer.port}"
    )
    folder = Path(data_dir) / MIGRATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.sqlite"


def study_sop_classes(peer: RemotePeer, study_uid: str) -> list[str]:
    """SOP classes of a study's instances, from an IMAGE-level C-FIND (PS3.4 C.6.2)."""
    ae = AE(ae_title=peer.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout
    ae.maximum_pdu_size = peer.max_pdu
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
    ae.maximum_pdu_size = peer.max_pdu
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
    target: Receiver | Target,
    since: date,
    until: date,
    *,
    window_limit: int = 500,
    max_studies: int | None = None,
    parallel: int = 1,
    on_study: Callable[[RemoteStudy, int], None] | None = None,
    on_instance: Callable[[int], None] | None = None,
) -> Reconciliation:
    """Plan (or resume the plan), retrieve every study not done, return the reconciliation.

    ``target`` is a :class:`Target` (e.g. :class:`ArchiveTarget`) or a plain receiver
    callable. ``max_studies`` stops after that many retrievals (a bounded run; the next run
    resumes). ``parallel`` studies are retrieved at once, each on its own association, in
    worker threads; the target's ``finish`` (the archive's import) and the journal run on
    this thread as each retrieval completes, while the next retrievals go on, so even with
    ``parallel=1`` the import of one study overlaps the retrieval of the next.
    ``on_instance`` is called with each received instance's size, from the worker threads.
    """
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    sink = target if isinstance(target, Target) else FolderTarget(target)
    plan(peer, journal, since, until, window_limit=window_limit)
    _reopen_missing(journal, sink)
    pending = journal.pending()
    queue = iter(pending if max_studies is None else pending[: max(0, max_studies)])
    running: dict[Future[tuple[int, int, str]], RemoteStudy] = {}
    with ThreadPoolExecutor(parallel, thread_name_prefix="duckpacs-migrate") as pool:

        def start_next() -> None:
            study = next(queue, None)
            if study is not None:
                receive = _counting(sink.begin(study), on_instance)
                running[pool.submit(retrieve_study, peer, study, receive)] = study

        for _ in range(parallel):
            start_next()
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    study = running.pop(future)
                    received, failed, problem = future.result()
                    start_next()  # the next retrieval runs while this study is imported
                    held, kept = sink.finish(study, received)
                    status, reason = _verdict(study, received, held, failed, problem or kept, sink)
                    archived = held if sink.held is not None else None
                    journal.record_study(study.uid, status, received, reason, archived)
                    if on_study is not None:
                        on_study(study, received)
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return journal.reconcile(sink.held)


def _counting(receive: Receiver, on_instance: Callable[[int], None] | None) -> Receiver:
    if on_instance is None:
        return receive

    def counted(sop_uid: str, data: bytes) -> None:
        receive(sop_uid, data)
        on_instance(len(data))

    return counted


def _verdict(
    study: RemoteStudy, received: int, held: int, failed: int, problem: str, sink: Target
) -> tuple[str, str]:
    """(status, reason) of a retrieved study: the peer's failures, then the counts."""
    expected = study.instances
    if problem or failed:
        return "failed", problem or f"{failed} sub-operations failed at the peer"
    if expected is not None and held < expected:
        if sink.held is not None:
            return "incomplete", (
                f"the archive holds {held} of {expected} instances ({received} received)"
            )
        return "incomplete", f"received {received} of {expected} instances"
    return "done", ""


def _reopen_missing(journal: Journal, sink: Target) -> None:
    """Studies done earlier whose instances the target no longer all holds are fetched again."""
    if sink.held is None:
        return
    done = journal.done_studies()
    counts = sink.held([uid for uid, _ in done])
    for uid, remote in done:
        have = counts.get(uid, 0)
        if remote is not None and have < remote:
            journal.reopen(uid, f"the archive holds {have} of {remote} instances")


def open_journal(path: str | Path) -> closing[Journal]:
    """A journal as a context manager: ``with open_journal(p) as j: ...``."""
    return closing(Journal(path))
