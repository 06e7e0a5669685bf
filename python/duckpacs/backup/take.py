"""One backup run: ``duckpacs backup --to DIR``.

1. Open the store read-only (which first finishes a rewrite a killed process left behind),
   then hold pack rewriting (:mod:`duckpacs.backup.hold`).
2. Copy the small files into ``files/GEN``: the store's journals (trash, corrections) up to
   their last whole line, users, configuration, audit log, SQLite databases through
   SQLite's backup API. First, so that every record a journal line names was durable
   before the packs' ends are read (a line written later is simply not in this backup).
3. Plan from the store's own log (:meth:`duckpacs._core.Store.tail`): for each pack, the end
   of its last whole, checked record. A pack the previous backup copied and that is still the
   same file (inode, and the trailer bytes before the copied length) is read only past that
   length, so a second run reads and copies only what is new. A record being appended at
   that moment is not whole yet and stays out; every instance acknowledged before the run
   began was durable before it, so it is in.
4. Copy: the new range of each pack, appended to its copy; a new pack (or one whose name
   came back as another file) whole, under a name the previous manifest does not use.
   Then release the hold.
5. fsync everything, write the manifest last (:func:`duckpacs.backup.manifest.commit`), then
   delete what it no longer names (packs compaction or densifying removed; old files).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckpacs
from duckpacs import logs
from duckpacs.archive import layout
from duckpacs.backup import hold, manifest, status
from duckpacs.backup.manifest import FileCopy, Manifest, PackCopy
from duckpacs.config import Settings
from duckpacs.errors import ConfigError, StorageError

log = logs.get("backup")
CHUNK = 8 << 20
CHECK_BYTES = 16  # a record's trailer: DRECEND\0 and the xxh3 of the record
Progress = Callable[[int, int], None]  # (bytes copied, bytes to copy)
# Files of a data folder a backup keeps besides the packs (the index is rebuilt instead).
DATA_FILES = ("users.json", "audit.log")
# Beside the packs, store/ holds journals (store/trash.jsonl, and whatever else a feature
# keeps there): every regular file in it is kept, except locks and temporary files.
SKIPPED_SUFFIXES = (".lock", ".tmp", ".partial")


@dataclass
class Step:
    """Copy ``name``'s bytes [start, end) into ``file`` (relative to the backup folder)."""

    name: str
    start: int
    end: int
    file: str
    kind: str  # "grown" (appended to its copy), "new" or "same" (nothing new)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def take(settings: Settings, dest: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Back up the archive of ``settings`` into ``dest``; returns the run's summary."""
    data = settings.data_dir.resolve()
    packs_dir = layout.store_dir(data) / "packs"
    if not packs_dir.is_dir():
        raise StorageError(f"{packs_dir}: no store here, nothing to back up")
    dest = Path(dest).resolve()
    if dest == data or data in dest.parents:
        raise ConfigError(f"--to {dest}: the backup must not be inside the data folder {data}")
    manifest.check_folder(dest)
    _mkdir(dest)
    clock = time.monotonic()
    with manifest.locked(dest):
        prev = manifest.load(dest) or Manifest()
        new = Manifest(generation=prev.generation + 1, started_at=now_iso(), source=str(data),
                       duckpacs=duckpacs.__version__)  # fmt: skip
        _mkdir(dest / manifest.PACKS)
        with layout.open_store(data) as store, hold.rewrites_held(data) as held_by:
            # The journals before the packs' ends are read: every line names records that
            # were durable before it was written, so the packs copied next hold them all.
            new.files = _copy_files(settings, data, dest, new.generation)
            steps, records, damaged = _plan(store, packs_dir, prev, new.generation)
            copied = _copy_packs(steps, packs_dir, dest, new, progress)
        manifest.sync_dir(dest / manifest.PACKS)
        new.finished_at = now_iso()
        manifest.commit(dest, new)
        removed = _clean(dest, prev, new)
    seconds = time.monotonic() - clock
    summary = {
        "destination": str(dest), "generation": new.generation, "held_by": held_by,
        "started_at": new.started_at, "finished_at": new.finished_at,
        "seconds": round(seconds, 3), "packs": len(new.packs),
        "new_packs": sum(s.kind == "new" for s in steps),
        "grown_packs": sum(s.kind == "grown" for s in steps),
        "removed_packs": removed, "records_new": records, "damaged_records": damaged,
        "bytes_copied": copied, "bytes_total": new.pack_bytes,
        "mb_per_second": round(copied / 1e6 / seconds, 1) if seconds > 0 else 0.0,
        "files": sorted(new.files),
    }  # fmt: skip
    try:
        status.record(data, summary)
    except OSError as e:  # the backup is complete all the same; only the admin page lags
        logs.event(log, "backup complete, but not noted in the data folder", reason=e, level=30)
    return summary


def _mkdir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _same_pack(live: Path, copy: PackCopy) -> bool:
    """Whether ``live`` is still the pack ``copy`` holds the start of (packs only grow, but
    a pack compacted away may be followed by a new one under the same name)."""
    try:
        with open(live, "rb") as f:
            st = os.fstat(f.fileno())
            if [st.st_ino] != copy.inode or st.st_size < copy.length:
                return False
            return os.pread(f.fileno(), CHECK_BYTES, copy.length - CHECK_BYTES).hex() == copy.check
    except FileNotFoundError:
        return False


def _plan(
    store: Any, packs_dir: Path, prev: Manifest, generation: int
) -> tuple[list[Step], int, int]:
    """What to copy of each pack, the number of new records, and of damaged ones."""
    since = {
        manifest.pack_id(name): copy.length
        for name, copy in prev.packs.items()
        if _same_pack(packs_dir / name, copy)
    }
    # Packs on this disk only: with store.local_bytes, older packs live only in the bucket,
    # which keeps them (README, "[store] on S3").
    tail = store.tail(since, headers=False, local_only=True)
    records = sum(1 for _ in tail["instances"])
    steps = []
    for pack, end in sorted(dict(tail["ends"]).items()):
        name = manifest.pack_name(pack)
        old = prev.packs.get(name)
        if pack in since and old is not None:
            kind = "grown" if end > old.length else "same"
            steps.append(Step(name, old.length, max(end, old.length), old.file, kind))
        else:
            # A copy the previous manifest names must stay as it is until the new one is
            # written: a pack that came back under that name gets a file of its own.
            file = f"{manifest.PACKS}/{name}"
            if old is not None and old.file == file:
                file = f"{file}.g{generation}"
            steps.append(Step(name, 0, end, file, "new"))
    return steps, records, int(tail["damaged"])


def _copy_packs(
    steps: list[Step], packs_dir: Path, dest: Path, new: Manifest, progress: Progress | None
) -> int:
    total = sum(s.end - s.start for s in steps)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    advance(0)
    for step in steps:
        new.packs[step.name] = _copy_pack(step, packs_dir / step.name, dest / step.file, advance)
    return done


def _copy_pack(step: Step, src: Path, target: Path, advance: Callable[[int], None]) -> PackCopy:
    try:
        src_fd = os.open(src, os.O_RDONLY)
    except FileNotFoundError:
        raise StorageError(f"{src}: the pack went away during the backup") from None
    try:
        dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            # Bytes past the recorded length are a killed run's: they go first.
            os.ftruncate(dst_fd, step.start)
            offset = step.start
            while offset < step.end:
                n = _copy_range(src_fd, dst_fd, min(CHUNK, step.end - offset), offset)
                if n == 0:
                    raise StorageError(f"{src}: ends at byte {offset}, before {step.end}")
                offset += n
                advance(n)
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
        check = os.pread(src_fd, CHECK_BYTES, step.end - CHECK_BYTES).hex()
        inode = os.fstat(src_fd).st_ino
    finally:
        os.close(src_fd)
    return PackCopy(file=step.file, length=step.end, inode=[inode], check=check)


def _copy_range(src_fd: int, dst_fd: int, count: int, offset: int) -> int:
    """Copy ``count`` bytes at ``offset`` to the same offset (in the kernel when it can)."""
    try:
        return os.copy_file_range(src_fd, dst_fd, count, offset, offset)
    except OSError:  # another file system, an old kernel: through user space
        chunk = os.pread(src_fd, count, offset)
        os.pwrite(dst_fd, chunk, offset)
        return len(chunk)


def small_files(settings: Settings, data: Path) -> list[tuple[str, Path]]:
    """(place in a data folder, current file) of everything a backup keeps besides packs."""
    found: list[tuple[str, Path]] = []
    config = settings.config_file
    if config is None or not Path(config).is_file():
        config = data / "duckpacs.toml"
    if Path(config).is_file():
        found.append(("duckpacs.toml", Path(config)))
    found += [(name, data / name) for name in DATA_FILES if (data / name).is_file()]
    store = layout.store_dir(data)
    found += [(f"store/{p.name}", p) for p in sorted(store.iterdir())
              if p.is_file() and not p.name.endswith(SKIPPED_SUFFIXES)]  # fmt: skip
    found += [(p.name, p) for p in sorted(data.glob("*.sqlite"))]
    migrate = data / "migrate"
    if migrate.is_dir():
        found += [(p.relative_to(data).as_posix(), p) for p in sorted(migrate.rglob("*"))
                  if p.is_file() and not p.name.endswith(("-wal", "-shm", "-journal"))]  # fmt: skip
    return found


def _copy_files(settings: Settings, data: Path, dest: Path, generation: int) -> dict[str, FileCopy]:
    folder = dest / manifest.FILES / str(generation)
    _mkdir(dest / manifest.FILES)
    if folder.exists():
        shutil.rmtree(folder)  # a killed run's
    out = {}
    for name, src in small_files(settings, data):
        rel = f"{manifest.FILES}/{generation}/{name}"
        target = dest / rel
        _mkdir(target.parent)
        if src.suffix == ".sqlite":
            _sqlite_copy(src, target)
        else:
            _text_copy(src, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        out[name] = FileCopy(file=rel, sha256=digest, bytes=target.stat().st_size)
    for parent in sorted({(dest / f.file).parent for f in out.values()} | {folder}):
        if parent.is_dir():
            manifest.sync_dir(parent)
    manifest.sync_dir(dest / manifest.FILES)
    return out


def _text_copy(src: Path, target: Path) -> None:
    """A journal or log being appended to is copied up to its last whole line."""
    body = src.read_bytes()
    if src.suffix in (".jsonl", ".log") and not body.endswith(b"\n"):
        body = body[: body.rfind(b"\n") + 1]
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())


def _sqlite_copy(src: Path, target: Path) -> None:
    """A consistent copy of a database others may be writing (SQLite's online backup)."""
    target.unlink(missing_ok=True)
    source = sqlite3.connect(src, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    os.chmod(target, 0o600)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean(dest: Path, prev: Manifest, new: Manifest) -> int:
    """Delete what the new manifest does not name; returns how many packs went."""
    kept = {p.file for p in new.packs.values()}
    removed = sum(1 for name in prev.packs if name not in new.packs)
    for path in (dest / manifest.PACKS).iterdir():
        if f"{manifest.PACKS}/{path.name}" not in kept:
            path.unlink()
    for path in (dest / manifest.FILES).iterdir():
        if path.name != str(new.generation):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    manifest.sync_dir(dest / manifest.PACKS)
    return removed
