"""A migration's progress on disk (SQLite), so that an interrupted run resumes.

Tables: ``scopes`` (each C-FIND scope queried, with its outcome: ``done``, ``split`` into
smaller scopes, or ``cut`` at the peer's limit; and the enumeration of each span), ``studies``
(every study found, how it was found, its status and why), ``missing`` (the SOP Instance
UIDs a study lacks, from the last comparison) and ``notes`` (what the enumeration could not
list). Every change is committed at once: a killed run loses at most the study in flight.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from datetime import datetime
from pathlib import Path

from duckpacs.errors import StorageError
from duckpacs.ingest.migrate.peer import RemoteStudy
from duckpacs.ingest.migrate.report import NotDone, Reconciliation
from duckpacs.ingest.migrate.scope import DA

# Study Instance UIDs -> how many instances of each the target holds (absent: none).
HeldCounts = Callable[[list[str]], dict[str, int]]

# Columns added since the first journals; an older journal gains them when opened.
ADDED_COLUMNS = {
    "archived": "INTEGER",
    "found_by": "TEXT NOT NULL DEFAULT 'window'",
    "listed": "INTEGER",
    "method": "TEXT NOT NULL DEFAULT ''",
}


def dated(value: str) -> bool:
    """Whether a Study Date is a valid DA value (PS3.5 6.2) a date range can match."""
    try:
        datetime.strptime(value.strip(), DA)
    except ValueError:
        return False
    return True


class Journal:
    """The migration's progress: scopes queried, studies found and their status."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS scopes (
            key TEXT PRIMARY KEY, kind TEXT NOT NULL, studies INTEGER NOT NULL,
            state TEXT NOT NULL, how TEXT NOT NULL DEFAULT '');
        CREATE TABLE IF NOT EXISTS studies (
            uid TEXT PRIMARY KEY, study_date TEXT, patient_id TEXT, remote_instances INTEGER,
            sop_classes TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'found', received INTEGER NOT NULL DEFAULT 0,
            reason TEXT NOT NULL DEFAULT '', updated REAL);
        CREATE TABLE IF NOT EXISTS missing (
            study TEXT NOT NULL, sop_uid TEXT NOT NULL, PRIMARY KEY (study, sop_uid));
        CREATE TABLE IF NOT EXISTS notes (
            key TEXT PRIMARY KEY, text TEXT NOT NULL, gap INTEGER NOT NULL);
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path)
            # One commit per query and per study: WAL without a sync per commit keeps that
            # cheap. A power cut may lose the last commits; a rerun queries those again.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(self.SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(studies)")}
            with self.db:
                for name, ddl in ADDED_COLUMNS.items():
                    if name not in columns:
                        self.db.execute(f"ALTER TABLE studies ADD COLUMN {name} {ddl}")
        except sqlite3.Error as e:
            raise StorageError(f"{self.path}: migration journal unusable: {e}") from e

    def close(self) -> None:
        self.db.close()

    # --- scopes -------------------------------------------------------------------------

    def scope_state(self, key: str) -> str | None:
        """``"done"``, ``"split"``, ``"cut"`` or None (not queried yet)."""
        row = self.db.execute("SELECT state FROM scopes WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def record_scope(self, key: str, kind: str, studies: int, state: str, how: str = "") -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO scopes VALUES (?, ?, ?, ?, ?)",
                (key, kind, studies, state, how),
            )

    # --- studies found --------------------------------------------------------------------

    def add_studies(self, studies: Iterable[RemoteStudy], found_by: str) -> None:
        """Record studies found; a study found before keeps how it was first found."""
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT INTO studies (uid, study_date, patient_id, remote_instances, sop_classes,"
                " updated, found_by) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO UPDATE "
                "SET remote_instances = excluded.remote_instances, "
                "sop_classes = excluded.sop_classes",
                [
                    (
                        s.uid,
                        s.study_date,
                        s.patient_id,
                        s.instances,
                        "\\".join(s.sop_classes),
                        now,
                        found_by,
                    )  # fmt: skip
                    for s in studies
                ],
            )

    def patient_counts(self) -> dict[str, int]:
        """Studies found so far per Patient ID."""
        rows = self.db.execute(
            "SELECT coalesce(patient_id, ''), count(*) FROM studies GROUP BY 1"
        ).fetchall()
        return {str(p): int(n) for p, n in rows}

    def _studies(self, where: str) -> list[RemoteStudy]:
        rows = self.db.execute(
            "SELECT uid, study_date, patient_id, remote_instances, sop_classes FROM studies "
            f"{where} ORDER BY study_date, uid"
        ).fetchall()
        return [
            RemoteStudy(u, d or "", p or "", n, tuple(c for c in (k or "").split("\\") if c))
            for u, d, p, n, k in rows
        ]

    def pending(self) -> list[RemoteStudy]:
        """Studies not done, oldest Study Date first."""
        return self._studies("WHERE status != 'done'")

    def all_studies(self) -> list[RemoteStudy]:
        return self._studies("")

    # --- outcomes ---------------------------------------------------------------------------

    def record_study(
        self,
        uid: str,
        status: str,
        received: int,
        reason: str = "",
        archived: int | None = None,
        *,
        listed: int | None = None,
        method: str | None = None,
        missing: Iterable[str] = (),
    ) -> None:
        """A study's outcome; ``missing`` replaces the instances it was last found to lack."""
        with self.db:
            self.db.execute(
                "UPDATE studies SET status = ?, received = ?, reason = ?, updated = ?, "
                "archived = ?, listed = coalesce(?, listed), method = coalesce(?, method) "
                "WHERE uid = ?",
                (status, received, reason, time.time(), archived, listed, method, uid),
            )
            self.db.execute("DELETE FROM missing WHERE study = ?", (uid,))
            self.db.executemany(
                "INSERT OR IGNORE INTO missing VALUES (?, ?)", [(uid, m) for m in missing]
            )

    def verified(
        self, uid: str, status: str, reason: str, listed: int | None, missing: Iterable[str]
    ) -> None:
        """The outcome of a ``--verify`` comparison (a study not done is fetched by the next
        run; counters of earlier retrievals are kept)."""
        status = "missing" if status == "incomplete" else status
        with self.db:
            self.db.execute(
                "UPDATE studies SET status = ?, reason = ?, listed = coalesce(?, listed), "
                "updated = ? WHERE uid = ?",
                (status, reason, listed, time.time(), uid),
            )
            self.db.execute("DELETE FROM missing WHERE study = ?", (uid,))
            self.db.executemany(
                "INSERT OR IGNORE INTO missing VALUES (?, ?)", [(uid, m) for m in missing]
            )

    def done_studies(self) -> list[tuple[str, int | None]]:
        """(Study Instance UID, instances the peer listed or announced) of studies done."""
        rows = self.db.execute(
            "SELECT uid, coalesce(listed, remote_instances) FROM studies "
            "WHERE status = 'done' ORDER BY uid"
        ).fetchall()
        return [(str(u), n) for u, n in rows]

    def reopen(self, uid: str, reason: str) -> None:
        """Mark a study done earlier as ``missing`` (to be fetched again) with the reason."""
        with self.db:
            self.db.execute(
                "UPDATE studies SET status = 'missing', reason = ?, updated = ? WHERE uid = ?",
                (reason, time.time(), uid),
            )

    def set_notes(self, notes: list[tuple[str, str, bool]]) -> None:
        """Replace the enumeration's notes: (key, text, whether studies are known unlisted)."""
        with self.db:
            self.db.execute("DELETE FROM notes")
            rows = [(key, text, int(gap)) for key, text, gap in notes]
            self.db.executemany("INSERT OR REPLACE INTO notes VALUES (?, ?, ?)", rows)

    # --- the report ------------------------------------------------------------------------

    def reconcile(self, held: HeldCounts | None = None) -> Reconciliation:
        """Remote counts against what arrived, and against what ``held`` says the target holds.

        With ``held`` (archive mode) a study the journal calls done but whose instances the
        archive no longer all holds is reported as ``missing``, not done.
        """
        rec = Reconciliation()
        db = self.db
        rec.windows = db.execute(
            "SELECT count(*) FROM scopes WHERE kind = 'window' AND state != 'split'"
        ).fetchone()[0]
        sweep = db.execute(
            "SELECT how FROM scopes WHERE kind = 'sweep' ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        rec.enumeration = str(sweep[0]) if sweep else ""
        for text, gap in db.execute("SELECT text, gap FROM notes ORDER BY key"):
            (rec.gaps if gap else rec.caveats).append(str(text))
        rows = db.execute(
            "SELECT uid, coalesce(listed, remote_instances), status, received, reason, "
            "study_date, found_by, method FROM studies ORDER BY uid"
        ).fetchall()
        counts = held([str(r[0]) for r in rows]) if held is not None else None
        rec.instances_archived = None if counts is None else 0
        for uid, remote, status, received, reason, study_date, found_by, method in rows:
            rec.studies_found += 1
            rec.instances_found += remote or 0
            rec.instances_received += received
            rec.found_outside += found_by == "sweep"
            rec.undated += not dated(study_date or "")
            rec.by_move += "C-MOVE" in (method or "")
            if counts is not None and rec.instances_archived is not None:
                have = counts.get(uid, 0)
                rec.instances_archived += have
                if status == "done" and remote is not None and have < remote:
                    status, reason = "missing", f"the archive holds {have} of {remote} instances"
            if status == "done":
                rec.studies_done += 1
            else:
                missing = tuple(
                    str(r[0])
                    for r in db.execute(
                        "SELECT sop_uid FROM missing WHERE study = ? ORDER BY sop_uid", (uid,)
                    )
                )
                rec.not_done.append(NotDone(uid, status, reason or "not retrieved yet", missing))
        return rec


def open_journal(path: str | Path) -> closing[Journal]:
    """A journal as a context manager: ``with open_journal(p) as j: ...``."""
    return closing(Journal(path))
