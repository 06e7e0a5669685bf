"""Protected studies: never recycled, never removed by a retention rule.

Kept in ``DATA/policy.sqlite`` (table ``protected``), so ``duckpacs protect`` works whether
or not the server runs, and the server's storage policy reads the list before each removal.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Protections:
    """The protected studies of one archive."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._con() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS protected (study_instance_uid TEXT PRIMARY KEY, "
                "since REAL NOT NULL, by TEXT NOT NULL, note TEXT NOT NULL DEFAULT '')"
            )

    @contextlib.contextmanager
    def _con(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(str(self.path), timeout=30)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            with con:  # one transaction, committed on leaving
                yield con
        finally:
            con.close()

    def protect(self, study: str, by: str, note: str = "") -> bool:
        """Protect ``study``; False when it already was."""
        with self._con() as con:
            cursor = con.execute(
                "INSERT INTO protected VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [study, time.time(), by, note],
            )
            return cursor.rowcount == 1

    def unprotect(self, study: str) -> bool:
        """Lift the protection; False when the study was not protected."""
        with self._con() as con:
            return (
                con.execute("DELETE FROM protected WHERE study_instance_uid = ?", [study]).rowcount
                == 1
            )

    def studies(self) -> set[str]:
        with self._con() as con:
            return {str(r[0]) for r in con.execute("SELECT study_instance_uid FROM protected")}

    def entries(self) -> list[dict[str, Any]]:
        with self._con() as con:
            rows = con.execute(
                "SELECT study_instance_uid, since, by, note FROM protected ORDER BY since"
            ).fetchall()
        return [{"study": r[0], "since": r[1], "by": r[2], "note": r[3]} for r in rows]
