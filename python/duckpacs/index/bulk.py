"""Bulk indexing: header bytes -> Arrow batches (Rust) -> DuckDB, the two stages overlapped.

``reindex`` and the index benchmark feed a whole store's headers through here. A producer
thread groups the records and has the Rust batch builder parse them (``index_batch``, GIL
released) while the calling thread appends the previous batch to DuckDB, so the parser and
the database work at the same time instead of in turn; the queue between them holds two
batches, which bounds memory to about three batches of headers.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from duckpacs._core import index_batch
from duckpacs.index.base import IndexBackend

StoreRecord = tuple[Mapping[str, Any], bytes]
# Batches big enough that DuckDB's per-commit costs vanish, small enough in bytes that real
# MR headers (tens of KB each) do not pile up in memory.
BATCH_RECORDS = 50_000
BATCH_BYTES = 256 * 1024 * 1024

_DONE = object()


def _groups(
    records: Iterable[StoreRecord], batch_records: int, batch_bytes: int
) -> Iterator[list[StoreRecord]]:
    pending: list[StoreRecord] = []
    size = 0
    for record in records:
        pending.append(record)
        size += len(record[1])
        if len(pending) >= batch_records or size >= batch_bytes:
            yield pending
            pending, size = [], 0
    if pending:
        yield pending


def _produce(
    groups: Iterator[list[StoreRecord]],
    out: queue.Queue[Any],
    stop: threading.Event,
    threads: int,
) -> None:
    try:
        for group in groups:
            batch = index_batch([h for _, h in group], [dict(r) for r, _ in group], None, threads)
            while not stop.is_set():
                try:
                    out.put((group, batch), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        out.put(_DONE)
    except BaseException as e:  # noqa: BLE001 (re-raised in the consuming thread)
        out.put(e)


def append_records(
    index: IndexBackend,
    records: Iterable[StoreRecord],
    *,
    batch_records: int = BATCH_RECORDS,
    batch_bytes: int = BATCH_BYTES,
    on_rejected: Callable[[Mapping[str, Any], str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Index every ``(extra, header_bytes)`` record; returns ``(records seen, rejected)``.

    ``extra`` holds the location and provenance values of
    :data:`~duckpacs.index.schema.LOCATION_FIELDS`. A header the parser refuses is reported
    to ``on_rejected(extra, reason)`` and skipped; ``progress(done)`` follows each batch.
    """
    threads = max(1, (os.cpu_count() or 2) - 1)  # leave a core to DuckDB
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()
    groups = _groups(records, batch_records, batch_bytes)
    producer = threading.Thread(
        target=_produce, args=(groups, handoff, stop, threads), name="index-parse", daemon=True
    )
    producer.start()
    seen = rejected = 0
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            group, batch = item
            for i, error in batch.errors:
                if on_rejected:
                    on_rejected(group[i][0], error)
            rejected += len(batch.errors)
            index.add_batch(batch)
            seen += len(group)
            if progress:
                progress(seen)
    finally:
        stop.set()
        producer.join()
    return seen, rejected
