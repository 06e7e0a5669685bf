"""The worklist's own store: ``DATA/worklist.sqlite``.

Scheduled procedure steps (from HL7 orders, ``duckpacs worklist add``, a CSV import) and the
Modality Performed Procedure Steps that report on them. Not in the DuckDB index, because:

- they are written while ``serve`` holds the index (the HL7 listener, MPPS, and the CLI in
  another process), and DuckDB lets one process write; SQLite in WAL mode lets several;
- they are small rows changed one at a time (status moves), not bulk appends;
- ``duckpacs reindex`` rebuilds the index from the store of instances, which has no
  worklist: entries kept in the index would be lost by a rebuild.

An entry's attributes are kept under their DICOM keywords, so matching and answers need no
mapping (PS3.4 K.6.1.2.2, Table K.6-1).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from duckpacs.errors import DuckpacsError

FILENAME = "worklist.sqlite"

# Attributes at the top level of a worklist answer (patient, visit, requested procedure).
TOP_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
    "ReferringPhysicianName", "RequestedProcedureID", "RequestedProcedureDescription",
    "StudyInstanceUID",
)  # fmt: skip
# Attributes of the item of the Scheduled Procedure Step Sequence (0040,0100).
STEP_KEYS = (
    "Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
)  # fmt: skip
KEYS = TOP_KEYS + STEP_KEYS

SCHEDULED, IN_PROGRESS = "SCHEDULED", "IN PROGRESS"
COMPLETED, DISCONTINUED, CANCELLED = "COMPLETED", "DISCONTINUED", "CANCELLED"
DONE = (COMPLETED, DISCONTINUED, CANCELLED)
STATUSES = (SCHEDULED, IN_PROGRESS) + DONE

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(f"{k} TEXT NOT NULL DEFAULT ''" for k in KEYS)},
    status TEXT NOT NULL DEFAULT 'SCHEDULED',
    placer_order TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    done_at REAL,
    mpps_uid TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS entries_patient ON entries (PatientID);
CREATE INDEX IF NOT EXISTS entries_order ON entries (placer_order);
CREATE TABLE IF NOT EXISTS mpps (
    uid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    entry_id INTEGER,
    study_uid TEXT NOT NULL DEFAULT '',
    calling_ae TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mpps_series (
    mpps_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL DEFAULT '',
    held INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (mpps_uid, series_uid)
);
"""


class WorklistError(DuckpacsError):
    """A worklist entry that cannot be added or changed as asked."""


def _today_start(date: str, start_time: str) -> float | None:
    """Epoch seconds of a DA (+ TM) start, local time; None if not a date."""
    digits = (start_time or "").replace(":", "").split(".")[0].ljust(6, "0")[:6]
    try:
        return time.mktime(time.strptime(date + digits, "%Y%m%d%H%M%S"))
    except ValueError:
        return None


class Worklist:
    """Entries and performed steps in ``path`` (one short connection per operation)."""

    def __init__(
        self,
        path: Path,
        expire_hours: int = 72,
        keep_done_hours: int = 24,
        complete_on_arrival: bool = False,
    ) -> None:
        self.path = path
        self.expire_hours = expire_hours
        self.keep_done_hours = keep_done_hours
        self.complete_on_arrival = complete_on_arrival
        with self._con() as con:
            con.executescript(_SCHEMA)

    @classmethod
    def from_settings(cls, settings: Any) -> Worklist:
        return cls(settings.data_dir / FILENAME, settings["worklist.expire_hours"],
                   settings["worklist.keep_done_hours"],
                   settings["worklist.complete_on_arrival"])  # fmt: skip

    @contextlib.contextmanager
    def _con(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(self.path), timeout=30)
        con.row_factory = sqlite3.Row
        try:
            con.execute("PRAGMA journal_mode=WAL")
            with con:  # one transaction, committed on leaving
                yield con
        finally:
            con.close()

    # Entries

    @staticmethod
    def check(values: dict[str, str]) -> dict[str, str]:
        """``values`` cleaned, or WorklistError saying why they cannot be an entry."""
        unknown = set(values) - set(KEYS)
        if unknown:
            raise WorklistError(f"unknown worklist attribute(s): {', '.join(sorted(unknown))}")
        clean = {k: str(v or "").strip() for k, v in values.items()}
        if not clean.get("PatientID") and not clean.get("PatientName"):
            raise WorklistError("a worklist entry needs PatientID or PatientName")
        if not clean.get("Modality") and not clean.get("ScheduledStationAETitle"):
            raise WorklistError("a worklist entry needs Modality or ScheduledStationAETitle")
        date = clean.get("ScheduledProcedureStepStartDate", "")
        if date and _today_start(date, clean.get("ScheduledProcedureStepStartTime", "")) is None:
            raise WorklistError(f"ScheduledProcedureStepStartDate {date!r} is not YYYYMMDD")
        return clean

    def add(self, values: dict[str, str], source: str = "cli", placer_order: str = "") -> int:
        """A new SCHEDULED entry; its id. Needs a patient and a modality or station."""
        clean = self.check(values)
        # The modality puts it in the images (PS3.4 Table K.6-1: required, type 1), so the
        # study the archive receives can be linked back to its order.
        clean["StudyInstanceUID"] = clean.get("StudyInstanceUID") or generate_uid()
        cols = list(clean) + ["placer_order", "source", "created"]
        args = list(clean.values()) + [placer_order, source, time.time()]
        with self._con() as con:
            cur = con.execute(
                f"INSERT INTO entries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                args,
            )
            return int(cur.lastrowid or 0)

    def entries(self, include_done: bool = True) -> list[dict[str, Any]]:
        """Every entry (after expiry), oldest scheduled start first."""
        self.expire()
        where = "" if include_done else f"WHERE status NOT IN ({', '.join('?' * len(DONE))})"
        with self._con() as con:
            rows = con.execute(
                f"SELECT * FROM entries {where} ORDER BY ScheduledProcedureStepStartDate, "
                "ScheduledProcedureStepStartTime, id",
                () if include_done else DONE,
            ).fetchall()
        return [dict(r) for r in rows]

    def get(self, entry_id: int) -> dict[str, Any] | None:
        with self._con() as con:
            row = con.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return dict(row) if row else None

    def remove(self, entry_id: int) -> bool:
        with self._con() as con:
            return con.execute("DELETE FROM entries WHERE id = ?", (entry_id,)).rowcount > 0

    def set_status(self, entry_id: int, status: str, mpps_uid: str = "") -> None:
        if status not in STATUSES:
            raise WorklistError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        done = time.time() if status in DONE else None
        with self._con() as con:
            con.execute(
                "UPDATE entries SET status = ?, done_at = ?, "
                "mpps_uid = CASE WHEN ? = '' THEN mpps_uid ELSE ? END WHERE id = ?",
                (status, done, mpps_uid, mpps_uid, entry_id),
            )

    def by_order(self, placer_order: str) -> list[dict[str, Any]]:
        with self._con() as con:
            rows = con.execute(
                "SELECT * FROM entries WHERE placer_order = ? OR AccessionNumber = ?",
                (placer_order, placer_order),
            ).fetchall()
        return [dict(r) for r in rows]

    def update_patient(self, patient_id: str, values: dict[str, str]) -> int:
        """Patient attributes of every entry of ``patient_id`` (HL7 ADT); entries changed.
        A new ``PatientID`` in ``values`` moves them to it (a merge)."""
        allowed = {"PatientID", "PatientName", "PatientBirthDate", "PatientSex"}
        changes = {k: v for k, v in values.items() if k in allowed and v}
        if not changes:
            return 0
        sets = ", ".join(f"{k} = ?" for k in changes)
        with self._con() as con:
            return con.execute(
                f"UPDATE entries SET {sets} WHERE PatientID = ?",
                (*changes.values(), patient_id),
            ).rowcount

    def expire(self, now: float | None = None) -> int:
        """Drop steps never started ``expire_hours`` after their scheduled start, and done
        entries ``keep_done_hours`` after they ended; how many went."""
        now = time.time() if now is None else now
        gone = 0
        with self._con() as con:
            if self.keep_done_hours:
                gone += con.execute(
                    "DELETE FROM entries WHERE done_at IS NOT NULL AND done_at < ?",
                    (now - self.keep_done_hours * 3600,),
                ).rowcount
            if self.expire_hours:
                rows = con.execute(
                    "SELECT id, ScheduledProcedureStepStartDate AS d, "
                    "ScheduledProcedureStepStartTime AS t FROM entries WHERE status = ?",
                    (SCHEDULED,),
                ).fetchall()
                late = [
                    r["id"] for r in rows
                    if (start := _today_start(r["d"], r["t"])) is not None
                    and start < now - self.expire_hours * 3600
                ]  # fmt: skip
                for entry_id in late:
                    con.execute("DELETE FROM entries WHERE id = ?", (entry_id,))
                gone += len(late)
        return gone

    def complete_arrived(self, find: Callable[..., list[dict[str, Any]]]) -> int:
        """With ``complete_on_arrival``: entries whose study the archive holds (by Study
        Instance UID) are COMPLETED, for modalities that send no MPPS; how many."""
        if not self.complete_on_arrival:
            return 0
        waiting = {e["StudyInstanceUID"]: e["id"] for e in self.entries(include_done=False)}
        if not waiting:
            return 0
        rows = find("STUDY", {"StudyInstanceUID": "\\".join(waiting)}, ["StudyInstanceUID"])
        arrived = {str(r.get("StudyInstanceUID") or "") for r in rows} & set(waiting)
        for uid in arrived:
            self.set_status(int(waiting[uid]), COMPLETED)
        return len(arrived)

    # Performed procedure steps

    def mpps(self, uid: str) -> dict[str, Any] | None:
        with self._con() as con:
            row = con.execute("SELECT * FROM mpps WHERE uid = ?", (uid,)).fetchone()
        return dict(row) if row else None

    def create_mpps(self, uid: str, entry_id: int | None, study_uid: str, calling_ae: str) -> None:
        now = time.time()
        with self._con() as con:
            con.execute(
                "INSERT INTO mpps (uid, status, entry_id, study_uid, calling_ae, created, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (uid, IN_PROGRESS, entry_id, study_uid, calling_ae, now, now),
            )

    def set_mpps(self, uid: str, status: str, series: list[tuple[str, str, bool]]) -> None:
        """The step's status and its performed series (series UID, study UID, held)."""
        with self._con() as con:
            con.execute("UPDATE mpps SET status = ?, updated = ? WHERE uid = ?",
                        (status, time.time(), uid))  # fmt: skip
            con.executemany(
                "INSERT OR REPLACE INTO mpps_series (mpps_uid, series_uid, study_uid, held) "
                "VALUES (?, ?, ?, ?)",
                [(uid, s, st, int(h)) for s, st, h in series],
            )

    def unheld_series(self) -> list[tuple[str, str]]:
        """(MPPS UID, series UID) of performed series the archive did not hold when linked."""
        with self._con() as con:
            rows = con.execute("SELECT mpps_uid, series_uid FROM mpps_series WHERE held = 0")
            return [(r["mpps_uid"], r["series_uid"]) for r in rows.fetchall()]

    def mark_held(self, mpps_uid: str, series_uid: str, study_uid: str) -> None:
        with self._con() as con:
            con.execute(
                "UPDATE mpps_series SET held = 1, study_uid = ? "
                "WHERE mpps_uid = ? AND series_uid = ?",
                (study_uid, mpps_uid, series_uid),
            )

    def performed_series(self, uid: str) -> list[dict[str, Any]]:
        with self._con() as con:
            rows = con.execute(
                "SELECT series_uid, study_uid, held FROM mpps_series WHERE mpps_uid = ? "
                "ORDER BY series_uid",
                (uid,),
            ).fetchall()
        return [dict(r) for r in rows]
