"""Rebuild the index from the store alone: the index is a view of the store.

:func:`rebuild` takes the store's scan, an iterator of ``(record, header_bytes)`` where
``record`` holds the location and provenance values of
:data:`~duckpacs.index.schema.LOCATION_FIELDS` (``pack``, ``offset``, ``length``, ``sha256``,
``size``, ``received_at``, ``source_ae``, ``transfer_syntax``) and ``header_bytes`` is the
instance without its pixel data (Part 10 file or bare dataset). It writes a new file beside the
index and swaps it in only when complete, so an interrupted reindex leaves the old file as is.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from duckpacs import logs
from duckpacs.errors import ParseError
from duckpacs.index.db import Index, index_path
from duckpacs.index.rows import build_batch

log = logs.get("index")

StoreRecord = tuple[Mapping[str, Any], bytes]


def read_header(data: bytes, where: str = "") -> Dataset:
    """Parse header bytes (Part 10 or a bare dataset) with pydicom, pixel data excluded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
        except Exception as e:  # pydicom raises many types on damaged input
            raise ParseError(f"{where or 'record'}: cannot parse header: {e}") from e


def rebuild(
    path: str | Path,
    records: Iterable[StoreRecord],
    *,
    batch_size: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write a fresh index for ``path`` from ``records`` and swap it in.

    Returns
    -------
    The counts of the new index (:meth:`Index.stats`) plus ``skipped`` (unparseable records,
    logged with their location).
    """
    final = index_path(path)
    temp = final.with_name(final.name + ".rebuild")
    for stale in (temp, temp.with_name(temp.name + ".wal")):
        stale.unlink(missing_ok=True)
    skipped = done = 0
    with Index.open(temp, check_store=False) as index:
        pending: list[tuple[Dataset, Mapping[str, Any]]] = []
        for record, header in records:
            where = f"pack {record.get('pack')} offset {record.get('offset')}"
            try:
                pending.append((read_header(header, where), record))
            except ParseError as e:
                skipped += 1
                logs.event(log, "reindex skipped a record", error=str(e))
                continue
            if len(pending) >= batch_size:
                index.add_batch(build_batch(pending))
                done += len(pending)
                pending.clear()
                if progress:
                    progress(done)
        if pending:
            index.add_batch(build_batch(pending))
            done += len(pending)
            if progress:
                progress(done)
        stats = index.stats()
    final.with_name(final.name + ".wal").unlink(missing_ok=True)
    os.replace(temp, final)
    return {**stats, "skipped": skipped}
