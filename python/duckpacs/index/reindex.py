"""Rebuild the index from the store alone: the index is a view of the store.

:func:`rebuild` takes the store's scan, an iterator of ``(record, header_bytes)`` where
``record`` holds the location and provenance values of
:data:`~duckpacs.index.schema.LOCATION_FIELDS` (``pack``, ``offset``, ``length``, ``sha256``,
``size``, ``received_at``, ``source_ae``, ``transfer_syntax``) and ``header_bytes`` is the
instance without its pixel data (Part 10 file or bare dataset). It writes a new file beside the
index and swaps it in only when complete, so an interrupted reindex leaves the old file as is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from duckpacs import logs
from duckpacs.index import backend, bulk
from duckpacs.index.db import Index, index_path

log = logs.get("index")

StoreRecord = bulk.StoreRecord


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_epoch_us(us: int) -> datetime:
    """The index's ``received_at`` (UTC, exact to the microsecond) for a store value."""
    return _EPOCH + timedelta(microseconds=us)


def store_records(scan: Iterable[Mapping[str, Any]]) -> Iterator[StoreRecord]:
    """Adapt the store's scan (``duckpacs._core.Store.scan()``: dicts with ``location``,
    ``sha256``, ``original_len``, ``transfer_syntax`` and ``header``) to :func:`rebuild`."""
    for entry in scan:
        pack, offset, length = entry["location"]
        record = {
            "pack": pack,
            "offset": offset,
            "length": length,
            "sha256": entry.get("sha256"),
            "size": entry.get("original_len"),
            "transfer_syntax": entry.get("transfer_syntax") or None,
            "source_ae": entry.get("source_ae"),
        }
        received = entry.get("received_at_us")
        if received:  # records written before the store kept provenance leave it unknown
            record["received_at"] = from_epoch_us(received)
        yield record, entry["header"]


def rebuild(
    path: str | Path,
    records: Iterable[StoreRecord],
    *,
    batch_size: int = bulk.BATCH_RECORDS,
    progress: Callable[[int], None] | None = None,
    marks: Mapping[int, int] | None = None,
) -> dict[str, int]:
    """Write a fresh index for ``path`` from ``records`` and swap it in.

    ``marks`` (store pack -> offset, from the same ``Store.tail`` read as ``records``) say
    how far into each pack the new index is complete, so the next catch-up starts there
    (:mod:`duckpacs.archive.recovery`).

    Parsing and appending overlap (:mod:`duckpacs.index.bulk`) and the new file is written
    as one bulk load (:meth:`Index.bulk_load`).

    Returns
    -------
    The counts of the new index (:meth:`Index.stats`) plus ``skipped`` (records the parser
    rejects, logged with their location).
    """
    if backend.is_postgres():
        return _rebuild_postgres(records, batch_size, progress, marks)
    final = index_path(path)
    temp = final.with_name(final.name + ".rebuild")
    for stale in (temp, temp.with_name(temp.name + ".wal")):
        stale.unlink(missing_ok=True)

    def rejected(record: Mapping[str, Any], error: str) -> None:
        where = f"pack {record.get('pack')} offset {record.get('offset')}"
        logs.event(log, "reindex skipped a record", where=where, error=error)

    with Index.open(temp, check_store=False) as index:
        with index.bulk_load(defer=True):
            _, skipped = bulk.append_records(
                index, records, batch_records=batch_size, on_rejected=rejected, progress=progress
            )
        index.set_marks(marks or {})
        stats = index.stats()
    final.with_name(final.name + ".wal").unlink(missing_ok=True)
    os.replace(temp, final)
    return {**stats, "skipped": skipped}


def _rebuild_postgres(
    records: Iterable[StoreRecord],
    batch_size: int,
    progress: Callable[[int], None] | None,
    marks: Mapping[int, int] | None,
) -> dict[str, int]:
    """Rebuild the PostgreSQL index from this node's store: its rows emptied, then
    filled from ``records``. On a shared index only this node's rows are replaced."""

    def rejected(record: Mapping[str, Any], error: str) -> None:
        where = f"pack {record.get('pack')} offset {record.get('offset')}"
        logs.event(log, "reindex skipped a record", where=where, error=error)

    index = backend.open_index("", check_store=False)
    try:
        index.clear()  # type: ignore[attr-defined]
        _, skipped = bulk.append_records(
            index, records, batch_records=batch_size, on_rejected=rejected, progress=progress
        )
        index.set_marks(marks or {})
        stats = index.stats()
    finally:
        index.close()
    return {**stats, "skipped": skipped}
