"""Crash recovery: the store is the log, the index a view that catches up with it.

Every writer makes an instance durable in the store before its index row exists, so a crash
(SIGKILL, power loss) can leave acknowledged instances in the store that the index lacks.
The index therefore keeps, per store pack, a mark below which every record has been applied
(``store_marks``, written in the same transaction as the rows: see
:meth:`duckpacs.index.Index.add_batch`). Whenever the archive is opened for writing
(``serve``, ``import``, ``import-scans``, ``migrate``, ``compact``), :func:`open_for_writing`
first applies every record past the marks, then hands the index over:

- an instance the index lacks is indexed (with the provenance its record keeps);
- a copy of an indexed instance (same SOP Instance UID and SHA-256) is left as it is: an
  orphan that compaction reclaims;
- a different instance under an indexed UID follows ``archive.on_conflict``: ``replace``
  takes it when it arrived later, ``keep-first`` keeps the indexed one;
- a tombstone drops the row of the instance it deletes;
- a record in the trash (:mod:`duckpacs.archive.trash`) stays out, and a row of one (a
  delete killed before the index followed its journal line) is dropped;
- a record a correction superseded (:mod:`duckpacs.archive.corrections`) stays out, and a
  correction's version replaces the row of the record it supersedes, whatever
  ``archive.on_conflict`` says; a correction killed halfway is finished first.

When ``index.duckdb`` is missing while the store holds records, or DuckDB cannot use it (a
torn file), the file is set aside (``index.duckdb.damaged-<time>``) and the index is rebuilt
from the store, with progress in the log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from duckpacs import _core, logs
from duckpacs.archive import corrections, layout, trash
from duckpacs.errors import ArchiveLockedError, IndexUnusableError

# reindex as a module, not its names: duckpacs.index.reindex needs duckpacs.archive.types,
# so when a command imports it first (`duckpacs reindex`), this runs while it is half loaded.
from duckpacs.index import backend, bulk, reindex
from duckpacs.index.base import IndexBackend
from duckpacs.index.db import index_path

log = logs.get("index")


@dataclass
class CatchUp:
    """What one catch-up applied."""

    indexed: int = 0  # instances the index lacked
    removed: int = 0  # rows dropped for tombstones
    relocated: int = 0  # rows re-pointed at records a killed compaction had moved
    orphans: int = 0  # copies of indexed instances left for compaction
    conflicts: int = 0  # other instances under indexed UIDs, kept out by keep-first
    damaged: int = 0  # records whose checksums fail (verify lists them)
    seconds: float = 0.0


def open_for_writing(
    data_dir: Path, *, wait: float = 0.0, on_conflict: str = "keep-first"
) -> tuple[IndexBackend, CatchUp]:
    """The index of the archive at ``data_dir``, read-write and caught up with its store,
    and what the catch-up applied.

    Retries for ``wait`` seconds while another process holds the index. Rebuilds a missing
    or damaged index from the store (see the module docstring).

    Raises
    ------
    ArchiveLockedError : still locked after ``wait`` seconds (``duckpacs serve`` owns the
        index while it runs; a second import also has to wait).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        index = _open_locked(data_dir, wait)
    except IndexUnusableError as e:
        logs.event(log, "index unusable; rebuilding it from the store", reason=e, level=30)
        _set_aside(index_path(data_dir))
        _rebuild(data_dir)
        index = _open_locked(data_dir, wait)
    try:
        _finish_corrections(data_dir)
        done = catch_up(index, layout.store_dir(data_dir), on_conflict)
        done.removed += trash.reconcile(trash.Trash(data_dir), index)
        return index, done
    except BaseException:
        index.close()
        raise


def _finish_corrections(data_dir: Path) -> None:
    """Finish the corrections a kill interrupted (a full scan of the store, only then)."""
    if not corrections.Corrections(data_dir).unfinished():
        return
    store_dir = layout.store_dir(data_dir)
    with _core.Store.open(store_dir) as store:
        corrections.finish(data_dir, list(store.tail({}, headers=False)["instances"]))


def _open_locked(data_dir: Path, wait: float) -> IndexBackend:
    deadline = time.monotonic() + wait
    while True:
        try:
            return backend.open_index(data_dir)
        except ArchiveLockedError as e:
            if time.monotonic() >= deadline:
                raise ArchiveLockedError(
                    f"{data_dir}: another duckpacs process (serve or import) is writing this "
                    "archive; stop it or rerun with --wait SECONDS"
                ) from e
            time.sleep(0.5)


def _set_aside(file: Path) -> None:
    """Keep a damaged index (and its WAL) for inspection instead of deleting it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for path in (file, file.with_name(file.name + ".wal")):
        if path.exists():
            kept = path.with_name(f"{path.name}.damaged-{stamp}")
            os.replace(path, kept)
            logs.event(log, "damaged index kept aside", path=kept)


def _rebuild(data_dir: Path) -> None:
    store_dir = layout.store_dir(data_dir)
    started = time.monotonic()
    with _core.Store.open(store_dir) as store:
        tail = store.tail({}, headers=True)
        entries = list(tail["instances"])  # the scan is an iterator: read it once
        corrections.finish(data_dir, entries)
        records = corrections.visible(data_dir, entries)
        total = len(records)
        last = [time.monotonic()]

        def progress(done: int) -> None:
            if time.monotonic() - last[0] >= 2 or done == total:
                last[0] = time.monotonic()
                logs.event(log, "rebuilding the index", done=done, total=total)

        stats = reindex.rebuild(
            data_dir,
            reindex.store_records(records),
            progress=progress,
            marks=tail["ends"],
        )
    logs.event(
        log, "index rebuilt from the store", instances=stats["instances"],
        skipped=stats["skipped"], seconds=round(time.monotonic() - started, 1), level=30,
    )  # fmt: skip


def catch_up(index: IndexBackend, store_dir: Path, on_conflict: str = "keep-first") -> CatchUp:
    """Apply every store record past the index's marks (see the module docstring)."""
    started = time.monotonic()
    done = CatchUp()
    if not store_dir.is_dir():
        return done
    with _core.Store.open(store_dir) as store:
        tail = store.tail(index.marks(), headers=False)
        done.damaged = int(tail["damaged"])
        done.removed = index.remove_locations(tail["tombstoned"])
        # Records in the trash or superseded stay out (a densifier may have moved one past
        # the marks).
        entries = corrections.visible(store_dir.parent, tail["instances"])
        packs = set(tail["ends"])
        versions = corrections.Corrections(store_dir.parent).history().previous
        chosen, moved = _choose(entries, index, on_conflict, packs, done, versions)
        if moved:  # compaction moved them and was killed before the index followed
            done.relocated = index.relocate(moved)
        if chosen:
            _, rejected = bulk.append_records(index, with_headers(store, chosen))
            done.indexed = len(chosen) - rejected
        index.set_marks(tail["ends"])
    done.seconds = round(time.monotonic() - started, 3)
    if done.indexed or done.removed or done.relocated or done.conflicts or done.damaged:
        logs.event(
            log, "caught up with the store", indexed=done.indexed, removed=done.removed,
            relocated=done.relocated, orphans=done.orphans, conflicts=done.conflicts,
            damaged=done.damaged,
            seconds=done.seconds, level=30,
        )  # fmt: skip
    return done


Move = tuple[tuple[int, int, int], tuple[int, int, int]]


def _choose(
    entries: list[dict[str, Any]],
    index: IndexBackend,
    on_conflict: str,
    packs: set[int],
    done: CatchUp,
    versions: Mapping[trash.Key, trash.Key] | None = None,
) -> tuple[list[dict[str, Any]], list[Move]]:
    """The tail's instance records that the index must take, one per SOP Instance UID, and
    the rows to re-point: indexed in a pack that no longer exists (compacted away) while the
    same bytes sit in the tail."""
    known = index.instances_at(sorted({str(e["sop_instance_uid"]) for e in entries}))
    moved: list[Move] = []
    # Log order across packs is arrival order: the record's own received time.
    entries = sorted(entries, key=lambda e: (e.get("received_at_us") or 0, e["location"]))
    chosen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        uid = str(entry["sop_instance_uid"])
        earlier = chosen.get(uid)
        if earlier is not None:
            if earlier["sha256"] == entry["sha256"]:
                done.orphans += 1
            elif on_conflict == "replace":
                chosen[uid] = entry
            else:
                done.conflicts += 1
            continue
        indexed = known.get(uid)
        if indexed is None:
            chosen[uid] = entry
        elif tuple(indexed[:3]) == tuple(entry["location"]):
            continue
        elif (versions or {}).get(trash.entry_key(entry)) == (
            uid,
            indexed[3],
            trash.epoch_us(indexed[4]),
        ):
            chosen[uid] = entry  # a correction's version replaces the record it supersedes
        elif indexed[3] == entry["sha256"] and indexed[0] not in packs:
            pack, offset, length = entry["location"]
            moved.append(((indexed[0], indexed[1], indexed[2]), (pack, offset, length)))
            known[uid] = (pack, offset, length, indexed[3], indexed[4])
        elif indexed[3] == entry["sha256"]:
            done.orphans += 1
        elif on_conflict == "replace" and _later(entry, indexed[4]):
            chosen[uid] = entry
        else:
            done.conflicts += 1
    return list(chosen.values()), moved


def orphan_copies(
    index: IndexBackend, store: _core.Store, trash_keys: set[trash.Key] | None = None
) -> list[tuple[int, int, int]]:
    """Live store records no index row points at, whose SOP Instance UID the index holds
    elsewhere: the losers of a race between senders of one instance before the write path
    let one caller at a time handle a UID (a store written since has none). Compaction
    deletes them so that `stats`, `verify` and the index count the same instances."""
    entries = list(store.tail({}, headers=False)["instances"])
    hidden = trash_keys or set()
    entries = [e for e in entries if trash.entry_key(e) not in hidden]  # kept for restore
    known = index.instances_at(sorted({str(e["sop_instance_uid"]) for e in entries}))
    out = []
    for entry in entries:
        indexed = known.get(str(entry["sop_instance_uid"]))
        if indexed is not None and tuple(indexed[:3]) != tuple(entry["location"]):
            out.append(tuple(entry["location"]))
    return out


def _later(entry: Mapping[str, Any], indexed_at: datetime | None) -> bool:
    us = entry.get("received_at_us") or 0
    if indexed_at is None:
        return bool(us)
    return us > int(indexed_at.timestamp() * 1_000_000)


def with_headers(store: _core.Store, entries: list[dict[str, Any]]) -> Iterator[Any]:
    """The chosen entries with their header bytes, read one by one (bounded memory)."""
    for entry in entries:
        yield from reindex.store_records(
            [{**entry, "header": store.header_bytes(entry["location"])}]
        )


def rebuild_index(data_dir: Path) -> None:
    """Build the index of a data folder that has none from its store alone, as ``reindex``
    and an opening after the loss of ``index.duckdb`` do (``duckpacs restore``)."""
    _rebuild(data_dir)
