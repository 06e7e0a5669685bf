"""The import driver: discovered inputs, read in parallel, handed to a sink in batches.

This is the seam where ``duckpacs import`` meets the store. Discovery
(:mod:`duckpacs.files.sources`) finds the inputs; this module reads their bytes with a small
thread pool (file reads, zip inflation and gunzip release the GIL), groups them into batches
bounded by count and bytes, and calls ``sink(batch)``. The sink does the real work (for the
archive: parse, compress and store in Rust, then add the batch to the index) and returns one
outcome per payload: ``None`` when accepted, or the reason it was refused. Progress, rejects
and the final summary are kept by :class:`~duckpacs.files.progress.Progress`.

Read errors (a truncated gzip stream, a zip member failing its CRC) become rejects and never
reach the sink; an exception from the sink stops the run (it means the archive itself is in
trouble), after the progress summary is closed.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from duckpacs.files.progress import Progress, Summary
from duckpacs.files.sources import Found, Reject, SourceItem, discover


@dataclass(frozen=True)
class Payload:
    """One input's bytes and where they came from. A large plain Part 10 file is not read:
    ``path`` names it and ``data`` is empty, and the sink stores it from disk (in memory
    that does not grow with it)."""

    item: SourceItem
    data: bytes
    path: Path | None = None

    @property
    def size(self) -> int:
        return self.item.size if self.path is not None else len(self.data)


Sink = Callable[[list[Payload]], list[str | None]]

DEFAULT_BATCH_FILES = 256
DEFAULT_BATCH_BYTES = 64 * 1024 * 1024


# Plain Part 10 files from this size on are stored from disk instead of being read.
LARGE_FILE = 32 * 1024 * 1024


def _read(item: SourceItem) -> Payload | Reject:
    if item.container == "file" and item.kind == "part10" and item.size >= LARGE_FILE:
        return Payload(item, b"", Path(item.description))
    try:
        return Payload(item, item.read())
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, RuntimeError) as e:
        return Reject(item.description, f"cannot read: {e}")


def _read_ahead(found: Iterable[Found], jobs: int) -> Iterator[Payload | Reject]:
    """Read items in a thread pool, at most ``2 * jobs`` ahead, yielding in input order."""
    window = max(1, 2 * jobs)
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="duckpacs-read") as pool:
        pending: list[Future[Payload | Reject] | Reject] = []
        for entry in found:
            pending.append(pool.submit(_read, entry) if isinstance(entry, SourceItem) else entry)
            while len(pending) >= window:
                yield _resolve(pending.pop(0))
        for waiting in pending:
            yield _resolve(waiting)


def _unskipped(
    found: Iterable[Found], skip: Callable[[SourceItem], bool], progress: Progress
) -> Iterator[Found]:
    for entry in found:
        if isinstance(entry, SourceItem) and skip(entry):
            progress.advance(entry.size)
            continue
        yield entry


def _resolve(entry: Future[Payload | Reject] | Reject) -> Payload | Reject:
    return entry if isinstance(entry, Reject) else entry.result()


def run(
    paths: Iterable[str | os.PathLike[str]],
    sink: Sink,
    *,
    progress: Progress | None = None,
    jobs: int = 2,
    batch_files: int = DEFAULT_BATCH_FILES,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    follow_dicomdir: bool = True,
    skip: Callable[[SourceItem], bool] | None = None,
) -> Summary:
    """Feed every DICOM input below ``paths`` to ``sink`` in batches; return the summary.

    Parameters
    ----------
    paths:
        Anything :func:`~duckpacs.files.sources.discover` accepts.
    sink:
        Called with each batch; returns one outcome per payload (``None`` = accepted, else the
        reason for refusing it), in the same order.
    progress:
        Display and counters; a quiet one is made if not given.
    jobs:
        Reader threads.
    batch_files, batch_bytes:
        A batch is handed over when it reaches either bound.
    skip:
        Called on each discovered item before it is read; True means it is already done (a
        re-import's journal hit): it is counted as done without being read.
    """
    if batch_files < 1 or batch_bytes < 1 or jobs < 1:
        raise ValueError("jobs, batch_files and batch_bytes must be at least 1")
    progress = progress if progress is not None else Progress(enabled=False)
    batch: list[Payload] = []
    size = 0
    # One batch is stored (sink, on its own thread) while the next one is read: the store
    # and the index work in Rust and DuckDB with the GIL released, so reading overlaps them.
    # Batches reach the sink one at a time and in order.
    storing: Future[None] | None = None
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckpacs-store") as storer:
            found = discover(paths, follow_dicomdir=follow_dicomdir)
            if skip is not None:
                found = _unskipped(found, skip, progress)
            for entry in _read_ahead(found, jobs):
                if isinstance(entry, Reject):
                    progress.reject(entry.path, entry.reason)
                    continue
                batch.append(entry)
                size += entry.size
                if len(batch) >= batch_files or size >= batch_bytes:
                    storing = _hand_over(storing, storer, batch, sink, progress)
                    batch, size = [], 0
            if batch:
                storing = _hand_over(storing, storer, batch, sink, progress)
            if storing is not None:
                storing.result()
    except BaseException:
        progress.finish(interrupted=True)
        raise
    return progress.finish()


def _hand_over(
    previous: Future[None] | None,
    storer: ThreadPoolExecutor,
    batch: list[Payload],
    sink: Sink,
    progress: Progress,
) -> Future[None]:
    """Wait for the batch being stored (raising its error), then start storing ``batch``."""
    if previous is not None:
        previous.result()
    return storer.submit(_flush, batch, sink, progress)


def _flush(batch: list[Payload], sink: Sink, progress: Progress) -> None:
    outcomes = sink(batch)
    if len(outcomes) != len(batch):
        raise RuntimeError(f"sink returned {len(outcomes)} outcomes for {len(batch)} payloads")
    for payload, outcome in zip(batch, outcomes, strict=True):
        if outcome is None:
            progress.advance(payload.size)
        else:
            progress.reject(payload.item.description, outcome)
