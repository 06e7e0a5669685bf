"""The Archive: the archive opened for writing in this process, and the one door for bytes.

Every way in (DIMSE C-STORE, STOW-RS, ``import``, ``import-scans``, ``migrate``) calls
:meth:`Archive.store` or :meth:`Archive.store_many`, which hand the bytes to the Rust write
path (``duckpacs._core.ArchiveWriter``, see ``rust/duckpacs-core/src/archive``): one parse
per instance, one caller per SOP Instance UID at a time, one duplicate rule, a durable
record, and the index row pending until the committer thread here writes it to DuckDB.

A correction of patient or study data (:meth:`Archive.correct`) is not an arrival: it
writes a version of an indexed instance straight to the store and keeps the record it
supersedes, which neither duplicate rule allows (:mod:`duckpacs.archive.corrections` says
why that is its own door).

Findable before acknowledged (PS3.4 B.2.3): an instance is reported stored only once its row
is pending; every query (:meth:`find`, :meth:`locate`) first commits pending rows, so it sees
everything acknowledged before it. After a crash, the next opening catches the index up with
the store (:mod:`duckpacs.archive.recovery`).

The duplicate rule: the same SOP Instance UID with the same dataset (everything after the
File Meta Information, whatever meta it came with) is the same instance, stored once and
answered with success. Another dataset under an archived UID follows
``archive.on_conflict``: ``keep-first`` answers warning 0xB006 and writes nothing;
``replace`` stores the newcomer, points the index at it and deletes the earlier record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duckpacs import _core, logs, store_config
from duckpacs.archive import corrections, layout, part10, recovery, shared_packs, trash
from duckpacs.archive.types import InstanceRef, Location, Outcome, StoreResult, epoch_us_now
from duckpacs.dicom import status
from duckpacs.errors import ArchiveIndexError, IndexUnavailableError, StorageError
from duckpacs.index.base import IndexBackend

log = logs.get("archive")

CONFLICT_POLICIES = ("keep-first", "replace")
_REJECTION_STATUS = {
    "malformed": status.CANNOT_UNDERSTAND,
    "no-uid": status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    "out-of-resources": status.OUT_OF_RESOURCES,
}
KEPT_FIRST_REASON = "SOP Instance UID already stored with different content; kept the first copy"


def result_of(outcome: dict[str, Any]) -> StoreResult:
    """The :class:`StoreResult` (and DIMSE status) of one write-path outcome."""
    uid = str(outcome.get("sop_instance_uid") or "")
    where = Location(*outcome["location"]) if "location" in outcome else None
    kind = outcome["outcome"]
    if kind == "stored":
        return StoreResult(Outcome.STORED, status.SUCCESS, uid, "", where)
    if kind == "identical":
        return StoreResult(Outcome.DUPLICATE_IDENTICAL, status.SUCCESS, uid, "", where)
    if kind == "kept-first":
        return StoreResult(
            Outcome.DUPLICATE_KEPT_FIRST, status.ELEMENTS_DISCARDED, uid, KEPT_FIRST_REASON, where
        )
    if kind == "replaced":
        return StoreResult(Outcome.REPLACED, status.SUCCESS, uid, "replaced earlier copy", where)
    code = _REJECTION_STATUS.get(str(outcome.get("rejection")), status.CANNOT_UNDERSTAND)
    return StoreResult(Outcome.REJECTED, code, uid, str(outcome.get("reason", "")))


class Archive:
    """The archive at one data folder, opened for writing (see the module docstring).

    Create it with :meth:`open`; one process at a time (the index's write lock).
    """

    def __init__(
        self,
        index: IndexBackend,
        store: _core.Store,
        on_conflict: str = "keep-first",
        *,
        flush_interval: float = 0.25,
        flush_rows: int = 512,
        committer: bool = True,
    ) -> None:
        if on_conflict not in CONFLICT_POLICIES:
            raise ValueError(f"on_conflict must be one of {CONFLICT_POLICIES}")
        self.index = index
        self.store_backend = store
        self.on_conflict = on_conflict
        self.flush_interval = flush_interval
        self.caught_up = recovery.CatchUp()  # what opening it caught up (see open)
        self.trash: trash.Trash | None = None  # the data folder's trash (see open)
        self._lookups = index.reader()
        self.writer = _core.ArchiveWriter(store, self._lookups.locate_uids, on_conflict, flush_rows)
        self._flush_lock = threading.Lock()
        self._refusal_lock = threading.Lock()
        self._refusals: dict[str, str] = {}  # see _set_refusal
        self._closing = threading.Event()
        self._seeding = threading.Thread(target=self._seed, name="uid-filter", daemon=True)
        self._seeding.start()
        self._committer: threading.Thread | None = None
        if committer:
            self._committer = threading.Thread(
                target=self._commit_loop, name="index-commit", daemon=True
            )
            self._committer.start()

    @classmethod
    def open(
        cls,
        data_dir: Any,
        *,
        on_conflict: str = "keep-first",
        writer_id: int = layout.SERVE_WRITER,
        wait: float = 0.0,
        **options: Any,
    ) -> Archive:
        """The archive at ``data_dir`` opened for writing: the index caught up with the store
        first (crash recovery), the store appending under ``writer_id``.

        Raises :class:`~duckpacs.errors.ArchiveLockedError` while another process writes
        it (after ``wait`` seconds of retrying).
        """
        index, caught_up = recovery.open_for_writing(data_dir, wait=wait, on_conflict=on_conflict)
        try:
            store = layout.open_store(data_dir, writer_id)
        except BaseException:
            index.close()
            raise
        if store_config.configured() is not None:  # packs on S3: read other nodes' too
            try:
                shared_packs.connect(index, store, writer=True)
            except BaseException:
                store.close()
                index.close()
                raise
        archive = cls(index, store, on_conflict, **options)
        archive.caught_up = caught_up
        archive.trash = trash.Trash(data_dir)
        return archive

    # --- the write path ---------------------------------------------------------------

    def store(
        self,
        data: bytes,
        transfer_syntax: str | None = None,
        *,
        calling_ae: str = "",
        sop_class_uid: str = "",
        sop_instance_uid: str = "",
    ) -> StoreResult:
        """Store one instance: a Part 10 stream, or (``transfer_syntax`` given) a bare
        dataset as received over DIMSE, framed with a meta group built from the request's
        UIDs (PS3.10 7.1) and kept exactly as received."""
        now = epoch_us_now()
        if transfer_syntax is None:
            outcome = self.writer.store(data, None, now, calling_ae or None)
        elif not sop_instance_uid:
            return StoreResult(
                Outcome.REJECTED, status.DATASET_DOES_NOT_MATCH_SOP_CLASS, "",
                "no Affected SOP Instance UID in the request",
            )  # fmt: skip
        else:
            outcome = self.writer.store_dataset(
                data, transfer_syntax, sop_class_uid, sop_instance_uid, calling_ae or None, now
            )
        return result_of(outcome)

    def store_many(
        self, items: list[bytes], *, source_ae: str = "", received_at_us: int | None = None
    ) -> list[StoreResult]:
        """Store a batch of Part 10 streams (parsed on every core, one fsync)."""
        if not items:
            return []
        when = received_at_us or epoch_us_now()
        return [result_of(o) for o in self.writer.store_many(items, when, source_ae or None)]

    def store_file(
        self, path: Path, *, source_ae: str = "", received_at_us: int | None = None
    ) -> StoreResult:
        """Store the Part 10 file at ``path`` without reading it into memory (a file of
        gigabytes costs a few MB): same rules and result as :meth:`store`."""
        when = received_at_us or epoch_us_now()
        return result_of(self.writer.store_file(path, when, source_ae or None))

    def refuse(self, reason: str | None) -> None:
        """Refuse every arrival with ``reason`` (a storage limit: 0xA700 over DIMSE, 507
        over STOW-RS) until called with None."""
        self._set_refusal("policy", reason)

    def refuse_for(self, who: str, reason: str | None) -> None:
        """Refuse every arrival for ``who``'s ``reason`` (uploads to object storage behind,
        say) until called with None; other refusals stay in force."""
        self._set_refusal(who, reason)

    def _set_refusal(self, who: str, reason: str | None) -> None:
        """Refusals of the storage policy and of an unreachable index, kept apart so that
        either clearing its own leaves the other's in force."""
        with self._refusal_lock:
            if reason is None:
                self._refusals.pop(who, None)
            else:
                self._refusals[who] = reason
            self.writer.set_refusal(next(iter(self._refusals.values()), None))

    def delete(self, refs: list[InstanceRef]) -> int:
        """Delete instances: a durable tombstone each, then the index rows. The tombstones
        are held below the store's low-water mark until the rows are gone, so a crash in
        between replays the deletion at the next opening. Returns how many were deleted."""
        self.flush()  # a pending row of one of them would come back after the removal
        tombstones = []
        for ref in refs:
            tombstones.append(self.store_backend.delete(ref.location, hold=True))
        try:
            removed = self.index.remove([r.sop_instance_uid for r in refs])
        finally:
            self.store_backend.settle(tombstones)
        return removed

    def _trash(self) -> trash.Trash:
        if self.trash is None:
            raise StorageError("this archive was opened without its data folder: no trash")
        return self.trash

    def discard(
        self, level: str, query: dict[str, Any], *, user: str, source: str
    ) -> dict[str, Any]:
        """Move every instance below the entities matching ``query`` at ``level`` to the
        trash (:mod:`duckpacs.archive.trash`): the journal line is durable first, then the
        index rows go, so queries and retrievals stop seeing them at once. Returns the
        batch's summary (``instances`` 0 when nothing matched, and no batch is written)."""
        bin_ = self._trash()
        self._visible()
        # The committer waits meanwhile: a row it commits now (an instance arriving under
        # one of these UIDs) is a newer record, not in the batch, and must stay.
        with self._flush_lock:
            refs = [InstanceRef.from_row(r) for r in self.index.locations(level, query)]
            if not refs:
                return {"batch": "", "instances": 0, "bytes": 0, "studies": []}
            uids = [r.sop_instance_uid for r in refs]
            found = self.index.find(level, query, ["StudyInstanceUID"])
            studies = sorted({str(row.get("StudyInstanceUID") or "") for row in found} - {""})
            indexed = self.index.instances_at(uids)
            keys = [[uid, row[3], trash.epoch_us(row[4])] for uid, row in indexed.items()]
            line = {
                "op": "trash", "batch": bin_.new_batch_id(), "at_us": epoch_us_now(),
                "user": user, "from": source, "level": level, "query": query,
                "studies": studies, "bytes": sum(r.location.length for r in refs),
                "instances": keys,
            }  # fmt: skip
            bin_.append(line)
            self.index.remove(list(indexed))
        batch = bin_.find(str(line["batch"]))
        return batch.summary()

    def restore(self, batch_id: str, *, user: str, source: str) -> dict[str, Any]:
        """Index a trashed batch's records again, then record the restore. An instance
        whose SOP Instance UID was stored again since stays out (``superseded``)."""
        bin_ = self._trash()
        batch = bin_.find(batch_id)
        if batch.state != "trashed":
            raise StorageError(f"trash batch {batch_id} is already {batch.state}")
        self._visible()
        keys = set(batch.keys)
        entries = [
            e
            for e in self.store_backend.tail({}, headers=False)["instances"]
            if trash.entry_key(e) in keys
        ]
        live = self.index.instances_at(sorted({str(e["sop_instance_uid"]) for e in entries}))
        chosen = [e for e in entries if str(e["sop_instance_uid"]) not in live]
        with self._flush_lock:
            if chosen:
                recovery.bulk.append_records(
                    self.index, recovery.with_headers(self.store_backend, chosen)
                )
            bin_.append({"op": "restore", "batch": batch_id, "at_us": epoch_us_now(),
                         "user": user, "from": source})  # fmt: skip
        summary = bin_.find(batch_id).summary()
        summary["restored"] = len(chosen)
        summary["superseded"] = len(entries) - len(chosen)
        return summary

    def correct(
        self, level: str, query: dict[str, Any], changes: dict[str, str],
        kind: str = "modify", *, user: str, source: str,
    ) -> dict[str, Any]:  # fmt: skip
        """Give the instances below the entities matching ``query`` new patient or study
        values: a version each, the received records kept (:mod:`.corrections`)."""
        return corrections.correct(self, level, query, changes, kind=kind, user=user, source=source)

    def trash_list(self) -> list[dict[str, Any]]:
        """Every batch still in the trash, oldest first."""
        return [b.summary() for b in self._trash().active()]

    def relocate(self, moved: Sequence[tuple[_core.Location, _core.Location]]) -> int:
        """Point index rows at records the store moved (densifying): pending rows are
        committed first, so none keeps an old location. Returns the rows updated."""
        if not moved:
            return 0
        self.flush()
        return self.index.relocate(moved)

    def flush(self) -> int:
        """Commit every pending row to the index now; returns how many were written."""
        with self._flush_lock:
            drained = self.writer.drain()
            if drained is None:
                return 0
            batch, marks = drained
            try:
                self.index.add_batch(batch, marks=marks)
            except Exception as e:  # kept by the writer and handed out again next time
                logs.event(log, "index write failed; will retry", rows=len(batch), reason=e,
                           level=40)  # fmt: skip
                kind = ArchiveIndexError
                if isinstance(e, IndexUnavailableError):
                    self._index_down(e)
                    kind = IndexUnavailableError  # a 503 for QIDO, not a 500
                raise kind(f"the index could not take {len(batch)} rows: {e}") from e
            self.writer.committed()
            if "index" in self._refusals:
                self._index_back()
            return len(batch)

    def _seed(self) -> None:
        """Feed the index's UIDs to the writer's filter, so new instances need no index
        lookup (until it is done, every arrival asks the index). Not for an index that other
        nodes write too: this node's filter would not learn their UIDs, and an instance one
        of them holds would be taken for new, whatever ``archive.on_conflict`` says."""
        if self.index.shared:
            return
        try:
            for chunk in self.index.uid_chunks():
                if self._closing.is_set():
                    return
                self.writer.seed(chunk)
        except Exception as e:  # noqa: BLE001 (only an optimisation: lookups still work)
            logs.event(log, "UID filter not built; every arrival asks the index", reason=e,
                       level=30)  # fmt: skip
            return
        self.writer.seeded()

    def _commit_loop(self) -> None:
        while not self._closing.is_set():
            self.writer.wait(self.flush_interval)
            try:
                self.flush()
                if "index" in self._refusals:  # nothing pending to try it with: ask it
                    self.index.ping()
                    self._index_back()
            except ArchiveIndexError:
                time.sleep(self.flush_interval)  # logged in flush; retried

    def _index_down(self, e: Exception) -> None:
        """A shared index (PostgreSQL) that is down or slow: arrivals are refused with
        0xA700, Refused: Out of Resources (PS3.4 B.2.3, Table B.2-1), rather than
        acknowledged into a store whose index cannot follow; what was acknowledged before
        stays pending in the writer and is committed when the index is back."""
        if "index" not in self._refusals:
            logs.event(log, "index unavailable; refusing arrivals until it is back",
                       reason=e, level=40)  # fmt: skip
        self._set_refusal("index", f"the archive's index is unavailable ({e})")

    def _index_back(self) -> None:
        logs.event(log, "index available again; accepting arrivals", level=30)
        self._set_refusal("index", None)

    # --- query and retrieve -----------------------------------------------------------

    def _visible(self) -> None:
        """Everything acknowledged so far becomes visible to the query that follows."""
        if self.writer.pending_rows:
            self.flush()

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None:
        """The archived instance with this SOP Instance UID (pending ones included)."""
        self._visible()
        rows = self.index.locations("image", {"SOPInstanceUID": sop_instance_uid})
        return InstanceRef.from_row(rows[0]) if rows else None

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Matching entities at ``level`` (PS3.4 C.4.1), each a dict keyword -> value."""
        self._visible()
        return self.index.find(level, query, return_keys, fuzzy=fuzzy, limit=limit, offset=offset)

    def locate(self, level: str, query: dict[str, Any]) -> list[InstanceRef]:
        """Every instance below the entities matching ``query`` at ``level`` (PS3.4 C.4.2)."""
        self._visible()
        return [InstanceRef.from_row(row) for row in self.index.locations(level, query)]

    def read(self, location: Location) -> bytes:
        """The stored Part 10 stream, byte for byte as it was stored."""
        return bytes(self.store_backend.get(location))

    def stream(self, location: Location) -> _core.InstanceStream:
        """The stored Part 10 stream as checked pieces (``read(n)``, iteration): memory
        does not grow with the instance. A damaged record raises IntegrityError."""
        return self.store_backend.open_instance(location)

    def header(self, location: Location) -> bytes:
        """The stored stream's bytes before its pixel data (read from the record's head)."""
        return bytes(self.store_backend.header_bytes(location))

    def read_dataset(self, ref: InstanceRef) -> tuple[bytes, str]:
        """The dataset bytes without the meta group, and their transfer syntax."""
        stream = self.read(ref.location)
        framing = part10.split(stream)
        return stream[framing.dataset_offset :], framing.transfer_syntax

    def get_frame(self, location: Location, index: int) -> bytes:
        """Frame ``index`` (0-based) as stored, from its own chunk (no whole decode)."""
        return bytes(self.store_backend.get_frame(location, index))

    def meta(self, location: Location) -> dict[str, Any]:
        """The record's own header (UIDs, transfer syntax, frame count), no index query."""
        return dict(self.store_backend.meta(location))

    # --- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Commit what is pending, stop the committer, release the index and the store."""
        self._closing.set()
        self._seeding.join(timeout=30)
        if self._committer is not None:
            self._committer.join(timeout=30)
        try:
            try:
                self.flush()
            finally:
                # Every record is settled now: the marks move to the packs' ends, so the next
                # opening has nothing of ours to read again.
                marks = self.store_backend.low_water()
                if marks:
                    self.index.advance_marks(marks)
        except ArchiveIndexError as e:
            if not isinstance(e, IndexUnavailableError):
                raise
            # A shared index that is down: what is pending is durable in the store, past
            # this node's marks, so the next opening indexes it (crash recovery's path).
            logs.event(log, "index unavailable at shutdown; pending rows are indexed at the "
                       "next start", reason=e, level=30)  # fmt: skip
        finally:
            self.writer.close()
            self._lookups.close()
            self.index.close()
            self.store_backend.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
