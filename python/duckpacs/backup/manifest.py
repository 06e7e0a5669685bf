"""The backup folder and its manifest (docs/STORAGE-FORMAT.md, "Backups").

::

    DIR/
      MANIFEST.json        the last complete backup: every pack's copied length, every file
      backup.lock          flock held by the run writing this folder
      packs/*.dpk          pack copies; bytes past the manifest's length are a killed run's
      files/GEN/...        the small files of generation GEN (journals, users, config, SQLite)

Atomicity: a run only appends to a pack copy past the length the manifest gives it, writes
new packs and a new ``files/GEN`` folder, and makes everything durable before it replaces
``MANIFEST.json`` (temporary file, fsync, rename, fsync of the folder). A run killed at any
moment therefore leaves the previous manifest true: restore reads each pack only up to its
recorded length. What the new manifest no longer names is deleted after it is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckpacs.errors import ArchiveLockedError, ConfigError, StorageError

MANIFEST = "MANIFEST.json"
LOCK = "backup.lock"
PACKS = "packs"
FILES = "files"
FORMAT = "duckpacs-backup"
VERSION = 1


def pack_name(pack: int) -> str:
    """A pack's file name from its id (``writer << 32 | seq``, docs/STORAGE-FORMAT.md)."""
    return f"w{pack >> 32:05d}-{pack & 0xFFFF_FFFF:08d}.dpk"


def pack_id(name: str) -> int:
    writer, _, seq = name.removesuffix(".dpk").removeprefix("w").partition("-")
    return int(writer) << 32 | int(seq)


@dataclass
class PackCopy:
    """One pack in the backup: its copy (relative to DIR) holds its first ``length`` bytes.

    ``inode`` and ``check`` (the 16 bytes before ``length``: the last record's trailer,
    which carries that record's checksum) identify the live pack, so that a later run
    appends to the copy only while the live file is still the same pack."""

    file: str
    length: int
    inode: list[int]
    check: str

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "length": self.length, "inode": self.inode,
                "check": self.check}  # fmt: skip


@dataclass
class FileCopy:
    """One small file: where it goes in a data folder, where its copy is, its SHA-256."""

    file: str
    sha256: str
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes}


@dataclass
class Manifest:
    generation: int = 0
    started_at: str = ""
    finished_at: str = ""
    source: str = ""
    duckpacs: str = ""
    packs: dict[str, PackCopy] = field(default_factory=dict)
    files: dict[str, FileCopy] = field(default_factory=dict)

    @property
    def pack_bytes(self) -> int:
        return sum(p.length for p in self.packs.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "generation": self.generation,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "source": self.source, "duckpacs": self.duckpacs,
            "packs": {k: v.as_json() for k, v in sorted(self.packs.items())},
            "files": {k: v.as_json() for k, v in sorted(self.files.items())},
        }  # fmt: skip


def load(folder: Path) -> Manifest | None:
    """The folder's last complete backup, None when it has none yet."""
    path = Path(folder) / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StorageError(f"{path}: not a readable backup manifest: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StorageError(f"{path}: not a duckpacs backup manifest")
    if doc.get("version") != VERSION:
        raise StorageError(f"{path}: backup format version {doc.get('version')} is not {VERSION}")
    try:
        return Manifest(
            generation=int(doc["generation"]),
            started_at=str(doc["started_at"]),
            finished_at=str(doc["finished_at"]),
            source=str(doc.get("source", "")),
            duckpacs=str(doc.get("duckpacs", "")),
            packs={k: PackCopy(**v) for k, v in doc["packs"].items()},
            files={k: FileCopy(**v) for k, v in doc["files"].items()},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(f"{path}: damaged backup manifest ({type(e).__name__}: {e})") from None


def commit(folder: Path, manifest: Manifest) -> None:
    """Make ``manifest`` the folder's complete backup (everything it names must be durable
    already): temporary file, fsync, rename, fsync of the folder."""
    folder = Path(folder)
    tmp = folder / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest.as_json(), f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    sync_dir(folder)


def sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_folder(folder: Path) -> None:
    """A backup goes into a new or empty folder, or one a backup run wrote before (it has
    the lock file, made first): never into a folder of other files, whose ``packs/`` or
    ``files/`` a run would clean."""
    folder = Path(folder)
    if not folder.exists() or (folder / MANIFEST).exists() or (folder / LOCK).exists():
        return
    if any(folder.iterdir()):
        raise ConfigError(
            f"--to {folder}: the folder holds other files and no duckpacs backup; "
            "choose a new or empty folder"
        )


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One run at a time writes a backup folder."""
    path = Path(folder) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveLockedError(
                f"{folder}: another duckpacs backup is writing this folder"
            ) from None
        yield
    finally:
        os.close(fd)
