"""``duckpacs restore --from DIR --data NEWDIR``: the last complete backup in DIR as a data
folder of its own.

Each pack is copied up to the length the manifest records (bytes a killed later run left
past it are not read), each small file is checked against its SHA-256, then the index is
rebuilt from the restored store as an archive that lost ``index.duckdb`` does: the trash
journal keeps deleted instances out.
A folder that already holds something is refused unless the caller says ``force``, which
moves it aside whole (``NEWDIR.replaced-<time>``): nothing is overwritten.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from duckpacs.archive import layout, recovery
from duckpacs.backup import manifest
from duckpacs.backup.take import CHUNK, Progress
from duckpacs.errors import IntegrityError, StorageError


def restore(
    source: Path, data: Path, *, force: bool = False, progress: Progress | None = None
) -> dict[str, Any]:
    """Restore the backup in ``source`` into ``data``; returns the summary."""
    source, data = Path(source).resolve(), Path(data).resolve()
    found = manifest.load(source)
    if found is None:
        raise StorageError(f"{source}: no complete backup here (no {manifest.MANIFEST})")
    started = time.monotonic()
    aside = _make_room(data, force)
    packs = layout.store_dir(data) / "packs"
    packs.mkdir(parents=True, exist_ok=True)
    total, done = found.pack_bytes, 0
    if progress is not None:
        progress(0, total)
    for name, copy in sorted(found.packs.items()):
        for n in _copy_prefix(source / _relative(copy.file), packs / name, copy.length):
            done += n
            if progress is not None:
                progress(done, total)
    for name, file in sorted(found.files.items()):
        _restore_file(source / _relative(file.file), data / _relative(name), file.sha256)
    manifest.sync_dir(packs)
    copied = time.monotonic() - started
    counts = _rebuild_index(data)
    return {
        "source": str(source), "data": str(data), "backup_started_at": found.started_at,
        "backup_finished_at": found.finished_at, "generation": found.generation,
        "packs": len(found.packs), "bytes": done, "files": sorted(found.files),
        "instances": counts["instances"], "studies": counts["studies"],
        "moved_aside": str(aside) if aside else None,
        "copy_seconds": round(copied, 3),
        "index_seconds": round(time.monotonic() - started - copied, 3),
        "seconds": round(time.monotonic() - started, 3),
    }  # fmt: skip


def _rebuild_index(data: Path) -> dict[str, Any]:
    """The index of the restored store, built by the archive's own rebuild (the one an
    opening runs when ``index.duckdb`` is lost), so whatever leaves records out of it (the
    trash, and any other journal of the store) is applied the same way."""
    recovery.rebuild_index(data)
    index, _ = recovery.open_for_writing(data)
    try:
        return dict(index.stats())
    finally:
        index.close()


def _make_room(data: Path, force: bool) -> Path | None:
    """An empty (or new) ``data``; with ``force`` a non-empty one is moved aside first."""
    if not data.exists() or (data.is_dir() and not any(data.iterdir())):
        data.mkdir(parents=True, exist_ok=True)
        return None
    if not force:
        raise StorageError(
            f"{data} is not empty: restore into a new folder, or add --force to move what it "
            f"holds aside (to {data.name}.replaced-<time>) first"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = data.with_name(f"{data.name}.replaced-{stamp}")
    os.replace(data, aside)
    data.mkdir(parents=True)
    return aside


def _relative(name: str) -> Path:
    """A path from the manifest, which must stay inside its folder."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise IntegrityError(f"backup manifest: path {name!r} leaves the backup folder")
    return Path(*path.parts)


def _copy_prefix(src: Path, target: Path, length: int) -> Any:
    """Copy the first ``length`` bytes of ``src``; yields the bytes copied as it goes."""
    try:
        src_fd = os.open(src, os.O_RDONLY)
    except FileNotFoundError:
        raise IntegrityError(f"{src}: missing from the backup (the manifest lists it)") from None
    try:
        size = os.fstat(src_fd).st_size
        if size < length:
            raise IntegrityError(f"{src}: {size} bytes, the backup manifest says {length}")
        dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            offset = 0
            while offset < length:
                chunk = os.pread(src_fd, min(CHUNK, length - offset), offset)
                os.pwrite(dst_fd, chunk, offset)
                offset += len(chunk)
                yield len(chunk)
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def _restore_file(src: Path, target: Path, sha256: str) -> None:
    try:
        body = src.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{src}: missing from the backup (the manifest lists it)") from None
    if hashlib.sha256(body).hexdigest() != sha256:
        raise IntegrityError(f"{src}: SHA-256 differs from the backup manifest's")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
