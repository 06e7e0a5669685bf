"""Bulk import into the archive: discovered inputs -> Rust store -> DuckDB index.

The order of every batch makes an interrupted import safe to rerun:

1. parse each payload's header (Rust, ``_core.describe``): unparseable inputs and inputs
   without a SOP Instance UID are rejected and never stored;
2. hash the accepted bytes and look their SOP Instance UIDs up in the index with one set
   query: same UID and SHA-256 means already archived (skipped), same UID with other bytes is
   a conflict (the first copy is kept, the input is reported);
3. ``Store.put_many`` appends the new instances with one fsync (the store is the source of
   truth: a record is durable before its index row exists);
4. ``_core.index_batch`` + :meth:`Index.add_batch` index the batch in one transaction;
5. the journal (``<data>/import-journal.sqlite``) notes each input's (path, size, mtime), so a
   rerun skips unchanged inputs without reading them.

A kill between 3 and 4 leaves records in the store that the index lacks: the next opening
of the archive for writing indexes every record past the index's per-pack marks before
anything else (:mod:`duckpacs.archive.recovery`), so nothing is stored twice. Step 4 advances
those marks in the same transaction as the rows.

Single writer: the index is opened read-write, which DuckDB grants to one process; a running
``duckpacs serve`` (the index owner) or another import makes this raise
:class:`~duckpacs.errors.ArchiveLockedError` (``wait`` seconds of retrying first, if asked).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from duckpacs import _core, logs
from duckpacs.archive import recovery
from duckpacs.archive.types import epoch_us_now, from_epoch_us
from duckpacs.errors import DuckpacsError, IntegrityError
from duckpacs.index import Index
from duckpacs.ingest import batch as batch_mod
from duckpacs.ingest.batch import Payload
from duckpacs.ingest.progress import Progress, Summary
from duckpacs.ingest.sources import SourceItem

log = logs.get("import")

# Writer id of bulk imports in the store (the server's workers use small ids, maintenance 0xFFFF).
IMPORT_WRITER = 0xFFFE
JOURNAL_NAME = "import-journal.sqlite"


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

    def __init__(self, store: _core.Store, index: Index, journal: Journal | None) -> None:
        self.store = store
        self.index = index
        self.journal = journal
        self.counts = ImportCounts()

    def skip(self, item: SourceItem) -> bool:
        if self.journal is not None and self.journal.done(item):
            self.counts.journal_skipped += 1
            return True
        return False

    def __call__(self, batch: list[Payload]) -> list[str | None]:
        outcomes: list[str | None] = [None] * len(batch)
        uids: dict[int, tuple[str, str | None]] = {}  # i -> (uid, transfer syntax)
        for i, p in enumerate(batch):
            try:
                layout = _core.describe(p.data)
            except DuckpacsError as e:
                outcomes[i] = f"not storable: {e}"
                continue
            uid = str(layout.get("sop_instance_uid") or "")
            if not uid:
                outcomes[i] = "no SOP Instance UID (0008,0018)"
                continue
            ts = layout.get("transfer_syntax")
            uids[i] = (uid, str(ts) if ts else None)
        existing = self._indexed_sha({u for u, _ in uids.values()})
        # A file is hashed here only when its UID is already known (archived, or earlier in
        # this batch): a new instance's SHA-256 is computed once, by the store.
        first_in_batch: dict[str, int] = {}
        new: list[int] = []
        for i, (uid, _) in uids.items():
            known = existing.get(uid)
            if known is None and uid not in first_in_batch:
                first_in_batch[uid] = i
                new.append(i)
                continue
            if known is None:
                known = existing[uid] = _sha256(batch[first_in_batch[uid]].data)
            if known == _sha256(batch[i].data):
                self.counts.already += 1
            else:
                self.counts.conflicts += 1
                outcomes[i] = (
                    f"conflict: SOP Instance UID {uid} is archived with other content "
                    "(kept the first copy)"
                )
        if new:
            self._store(batch, new, uids)
        if self.journal is not None:
            self.journal.record(batch[i].item for i, o in enumerate(outcomes) if o is None)
        return outcomes

    def _indexed_sha(self, uids: set[str]) -> dict[str, str]:
        if not uids:
            return {}
        con = self.index.connection()
        con.register("_dp_import_uids", pa.table({"uid": pa.array(sorted(uids), pa.string())}))
        try:
            rows = con.execute(
                "SELECT sop_instance_uid, sha256 FROM instances "
                "WHERE sop_instance_uid IN (SELECT uid FROM _dp_import_uids)"
            ).fetchall()
        finally:
            con.unregister("_dp_import_uids")
        return {str(r[0]): str(r[1]) for r in rows}

    def _store(
        self, batch: list[Payload], new: list[int], uids: dict[int, tuple[str, str | None]]
    ) -> None:
        datas = [batch[i].data for i in new]
        received_us = epoch_us_now()
        locations = self.store.put_many(datas, received_at_us=received_us)
        now = from_epoch_us(received_us)
        extras: list[dict[str, object]] = []
        for i, (pack, offset, length) in zip(new, locations, strict=True):
            _, ts = uids[i]
            extra: dict[str, object] = {
                "pack": pack,
                "offset": offset,
                "length": length,
                "size": len(batch[i].data),
                "sha256": self.store.sha256((pack, offset, length)),
                "received_at": now,
            }
            if ts:
                extra["transfer_syntax"] = ts
            extras.append(extra)
        hb = _core.index_batch(datas, extras)
        if hb.errors:
            first = batch[new[hb.errors[0][0]]].item.description
            raise IntegrityError(
                f"{first}: stored but the index parser refused it ({hb.errors[0][1]}); "
                "run `duckpacs reindex`"
            )
        # One writer, one batch at a time: everything it appended is in this batch.
        self.index.add_batch(hb, marks=self.store.low_water())
        self.counts.stored += len(new)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def open_importer(data_dir: Path, wait: float = 0.0) -> Iterator[Importer]:
    """The archive at ``data_dir`` opened for importing (``duckpacs import``, ``import-scans``
    and ``migrate`` share it): the index, held for the whole run and caught up with the
    store first (records a killed run left unindexed are counted in ``counts.reconciled``;
    see :func:`duckpacs.archive.recovery.open_for_writing`, which also says what ``wait``
    does), and the importer's own store writer. No journal: set one if wanted."""
    index, caught_up = recovery.open_for_writing(data_dir, wait=wait)
    with index, _core.Store(data_dir / "store", writer_id=IMPORT_WRITER) as store:
        importer = Importer(store, index, None)
        importer.counts.reconciled = caught_up.indexed
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
