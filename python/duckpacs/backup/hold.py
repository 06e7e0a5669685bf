"""Keeping packs from being rewritten while a backup copies them.

Appends never disturb a copy: a pack only grows, and a backup copies it up to the end of
its last whole record as found when the run began. What does disturb it is a rewrite:
compaction and densifying copy a sealed pack's live records into a new pack and then delete
the old one (docs/STORAGE-FORMAT.md, "Compaction", "Densifying"). A backup that listed the
old pack, or half of the new one, would hold an instance twice or not at all. So a backup
holds rewriting, and only rewriting, for the time of its copy:

- while ``duckpacs serve`` runs, its densifier is the only thing that rewrites (compaction
  needs the index, which the server holds): the backup asks it over the local socket
  (``backup_begin``), and the hold ends with ``backup_end`` or when the connection closes,
  so a killed backup never leaves densifying paused;
- otherwise the backup takes the store's own locks that every rewriter needs:
  ``compact.lock`` (compaction) and ``w65533.lock`` (the densifier's output writer), so a
  ``compact`` started meanwhile stops with "locked" and a ``serve`` started meanwhile
  densifies only once the backup is done. Imports and a starting server still append.

Arrivals are never held: C-STOREs keep being acknowledged during the whole backup.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from duckpacs.archive import ipc, layout
from duckpacs.errors import ArchiveIndexError, ArchiveLockedError

_REWRITER_LOCKS = ("compact.lock", f"w{layout.DENSIFY_WRITER:05d}.lock")


def running_server(data_dir: Path) -> ipc.RemoteArchive | None:
    """The running server's local socket, if one answers."""
    key = Path(data_dir) / layout.KEY_FILENAME
    try:
        authkey = key.read_bytes()
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ArchiveLockedError(
            f"{key}: not readable by this user; run the backup as the archive's user (the "
            "running server's local socket answers only it)"
        ) from None
    remote = ipc.RemoteArchive(ipc.socket_path(data_dir), authkey)
    return remote if remote.reachable() else None  # a key left by a killed server


@contextlib.contextmanager
def rewrites_held(data_dir: Path) -> Iterator[str]:
    """Hold pack rewriting for the body (see the module); yields ``"server"`` when the
    running server holds it, ``"locks"`` when this process holds the store's locks."""
    remote = running_server(data_dir)
    if remote is not None:
        remote.backup_begin()
        try:
            yield "server"
        finally:
            with contextlib.suppress(ArchiveIndexError):
                remote.backup_end()
            remote.close()
        return
    with _store_locks(layout.store_dir(data_dir) / "packs"):
        yield "locks"


@contextlib.contextmanager
def _store_locks(packs: Path) -> Iterator[None]:
    fds: list[int] = []
    try:
        for name in _REWRITER_LOCKS:
            fd = _open_lock(packs / name)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ArchiveLockedError(
                    f"{packs / name}: packs are being rewritten (duckpacs compact, or a server "
                    "whose local socket does not answer); run the backup when that is done"
                ) from None
        yield
    finally:
        for fd in fds:
            os.close(fd)


def _open_lock(path: Path) -> int:
    """A lock file opened for flock: read-only when it exists (a backup needs no write
    access to the store), created as the store would create it otherwise."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
