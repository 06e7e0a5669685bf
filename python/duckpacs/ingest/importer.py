"""Bulk import into the archive: discovered inputs -> the archive's one write path.

Each batch goes through :meth:`duckpacs.archive.facade.Archive.store_many`, the same door
C-STORE and STOW-RS use (parse once in Rust, one caller per SOP Instance UID, the duplicate
rule, a durable record with one fsync for the batch), is committed to the index, and only
then noted in the journal (``<data>/import-journal.sqlite``: each input's path, size and
mtime, so a rerun skips unchanged inputs without reading them). So an input the journal
counts is always findable, even if the import is killed the next moment; a kill between the
store and the index is caught up when the archive is next opened for writing
(:mod:`duckpacs.archive.recovery`).

Single writer: the archive is opened for writing, which one process at a time may do; a
running ``duckpacs serve`` or another import makes this raise
:class:`~duckpacs.errors.ArchiveLockedError` (``wait`` seconds of retrying first, if asked).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckpacs import _core, logs
from duckpacs.archive import layout
from duckpacs.archive.facade import Archive
from duckpacs.archive.types import Outcome
from duckpacs.files.progress import Progress, Summary
from duckpacs.files.sources import SourceItem
from duckpacs.index.base import IndexBackend
from duckpacs.ingest import batch as batch_mod
from duckpacs.ingest.batch import Payload

log = logs.get("import")

IMPORT_WRITER = layout.IMPORT_WRITER
JOURNAL_NAME = layout.IMPORT_JOURNAL


@dataclass
class ImportCounts:
    """What an import did, beside the progress summary's files/bytes/rejects."""

    stored: int = 0
    already: int = 0  # same UID and bytes already archived (or twice in the inputs)
    journal_skipped: int = 0  # unchanged inputs the journal says were imported before
    conflicts: int = 0  # same UID, other bytes: kept the first, reported
    reconciled: int = 0  # store records indexed at start (a previous run was killed)
    conflict_list: list[tuple[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "already_archived": self.already,
            "journal_skipped": self.journal_skipped,
            "conflicts": self.conflicts,
            "reconciled": self.reconciled,
        }


class Journal:
    """(input, size, mtime) of inputs whose instance is archived; lets a rerun skip them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Written by the storing thread of duckpacs.ingest.batch.run, one batch at a time.
        self._con = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS done (input TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER)"
        )
        self._known: dict[str, tuple[int, int]] = {
            r[0]: (int(r[1]), int(r[2]))
            for r in self._con.execute("SELECT input, size, mtime_ns FROM done")
        }

    @staticmethod
    def stamp(item: SourceItem) -> tuple[int, int] | None:
        """(size, mtime_ns) of the file holding ``item`` (the zip for a zip member)."""
        holder = (
            item.description.split("!", 1)[0]
            if item.container.startswith("zip")
            else (item.description)
        )
        try:
            st = os.stat(holder)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def done(self, item: SourceItem) -> bool:
        known = self._known.get(item.description)
        return known is not None and known == self.stamp(item)

    def record(self, items: Iterable[SourceItem]) -> None:
        rows = []
        for item in items:
            stamp = self.stamp(item)
            if stamp is not None:
                rows.append((item.description, stamp[0], stamp[1]))
                self._known[item.description] = stamp
        with self._con:
            self._con.execute("BEGIN")
            self._con.executemany("INSERT OR REPLACE INTO done VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self._con.close()


class Importer:
    """The batch sink of :func:`duckpacs.ingest.batch.run` for one archive."""

    def __init__(self, archive: Archive, journal: Journal | None) -> None:
        self.archive = archive
        self.journal = journal
        self.counts = ImportCounts()

    @property
    def index(self) -> IndexBackend:
        return self.archive.index

    @property
    def store(self) -> _core.Store:
        return self.archive.store_backend

    def skip(self, item: SourceItem) -> bool:
        if self.journal is not None and self.journal.done(item):
            self.counts.journal_skipped += 1
            return True
        return False

    def __call__(self, batch: list[Payload]) -> list[str | None]:
        small = [p.data for p in batch if p.path is None]
        in_memory = iter(self.archive.store_many(small))
        results = [
            next(in_memory) if p.path is None else self.archive.store_file(p.path) for p in batch
        ]
        # Committed before the journal notes anything: what it counts is findable.
        self.archive.flush()
        outcomes = [self.count(result) for result in results]
        if self.journal is not None:
            self.journal.record(batch[i].item for i, o in enumerate(outcomes) if o is None)
        return outcomes

    def count(self, result: Any) -> str | None:
        """None when the input is archived (now or before), else why it was not."""
        if result.outcome in (Outcome.STORED, Outcome.REPLACED):
            self.counts.stored += 1
            return None
        if result.outcome == Outcome.DUPLICATE_IDENTICAL:
            self.counts.already += 1
            return None
        if result.outcome == Outcome.DUPLICATE_KEPT_FIRST:
            self.counts.conflicts += 1
            self.counts.conflict_list.append((result.sop_instance_uid, result.reason))
            return (
                f"conflict: SOP Instance UID {result.sop_instance_uid} is archived with other "
                "content (kept the first copy)"
            )
        if "malformed" in result.reason:
            return f"not storable: {result.reason.removeprefix('malformed: ')}"
        return result.reason or "not stored"


@contextmanager
def open_importer(
    data_dir: Path, wait: float = 0.0, on_conflict: str = "keep-first"
) -> Iterator[Importer]:
    """The archive at ``data_dir`` opened for importing (``duckpacs import``, ``import-scans``
    and ``migrate`` share it), caught up with the store first (records a killed run left
    unindexed are counted in ``counts.reconciled``), with the importer's own store writer.
    ``wait``: seconds to retry while another process writes the archive. No journal: set
    one if wanted."""
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = Archive.open(
        data_dir, on_conflict=on_conflict, writer_id=IMPORT_WRITER, wait=wait, committer=False
    )
    with archive:
        importer = Importer(archive, None)
        importer.counts.reconciled = archive.caught_up.indexed
        yield importer


def import_paths(
    paths: Iterable[str | os.PathLike[str]],
    data_dir: Path,
    *,
    progress: Progress | None = None,
    jobs: int = 2,
    use_journal: bool = True,
    wait: float = 0.0,
    batch_files: int = batch_mod.DEFAULT_BATCH_FILES,
    batch_bytes: int = batch_mod.DEFAULT_BATCH_BYTES,
) -> tuple[Summary, ImportCounts]:
    """Import every DICOM input below ``paths`` into the archive at ``data_dir``.

    Returns the progress summary (files, bytes, rejects with reasons) and the counts.
    Raises :class:`ArchiveLockedError` when another process writes the archive.
    """
    with (
        open_importer(data_dir, wait) as importer,
        importer.index.bulk_load(),  # each batch still commits; the WAL is folded in at the end
    ):
        journal = importer.journal = Journal(data_dir / JOURNAL_NAME) if use_journal else None
        try:
            summary = batch_mod.run(
                paths,
                importer,
                progress=progress,
                jobs=jobs,
                batch_files=batch_files,
                batch_bytes=batch_bytes,
                skip=importer.skip,
            )
        finally:
            if journal is not None:
                journal.close()
    return summary, importer.counts
