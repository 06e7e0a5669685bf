"""Where a migration puts what it retrieves: the archive, or Part 10 files in a folder.

Into the archive (:class:`ArchiveTarget`) each study is staged as Part 10 files in
``<data>/migrate/staging/<study>``, imported with the importer of ``duckpacs import`` (dedupe
by UID and SHA-256, durable store, then index), and its staging folder removed. Whatever the
retrieval (C-GET or C-MOVE), the instances of a study arrive through the receiver
:meth:`Target.begin` gave for it.
"""

from __future__ import annotations

import abc
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from duckpacs.errors import StorageError
from duckpacs.ingest import batch as batch_mod
from duckpacs.ingest import importer as importer_mod
from duckpacs.ingest.migrate.journal import HeldCounts
from duckpacs.ingest.migrate.peer import RemotePeer, RemoteStudy

# Below the data folder: journals (one per peer) and the staging area of archive mode.
MIGRATE_DIR = "migrate"

Receiver = Callable[[str, bytes], None]  # (SOP Instance UID, Part 10 bytes)


def safe_name(uid: str) -> str:
    """A UID as a file name (digits and dots only)."""
    return "".join(c for c in uid if c.isdigit() or c == ".") or "unknown"


def _write(target: Path, data: bytes) -> None:
    tmp = target.with_suffix(".part")
    try:
        tmp.write_bytes(data)
        tmp.replace(target)
    except OSError as e:
        raise StorageError(f"{target}: cannot write: {e.strerror or e}") from e


def folder_receiver(out_dir: str | Path) -> Receiver:
    """Write each received instance to ``out_dir/<SOP Instance UID>.dcm`` (atomic rename)."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)

    def receive(sop_uid: str, data: bytes) -> None:
        _write(root / f"{safe_name(sop_uid)}.dcm", data)

    return receive


class Target(abc.ABC):
    """Where a migration puts what it retrieves.

    :meth:`begin` runs on the calling thread and gives the receiver of one study, which
    retrieval threads then call once per instance; :meth:`finish` and :meth:`lacking` run
    on the calling thread after that study's retrieval.
    """

    @abc.abstractmethod
    def begin(self, study: RemoteStudy) -> Receiver:
        """Prepare for ``study``; return the receiver of its instances."""

    def finish(self, study: RemoteStudy, received: int) -> tuple[int, str]:
        """Called after retrieval: (instances of ``study`` the target now holds, problem)."""
        return received, ""

    @abc.abstractmethod
    def lacking(self, sop_uids: set[str]) -> set[str]:
        """Which of these SOP Instance UIDs the target does not hold."""

    @property
    def held(self) -> HeldCounts | None:
        """Counts per study from the target itself, when it can tell (the archive can)."""
        return None


class FolderTarget(Target):
    """Every instance to one receiver (e.g. :func:`folder_receiver`).

    With ``folder`` (where the receiver writes ``<SOP Instance UID>.dcm``) the target holds
    what is in it; without, only what this object received.
    """

    def __init__(self, receive: Receiver, folder: str | Path | None = None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.received: set[str] = set()
        self._lock = threading.Lock()

        def keep(sop_uid: str, data: bytes) -> None:
            receive(sop_uid, data)
            with self._lock:
                self.received.add(sop_uid)

        self.receive = keep

    @classmethod
    def into(cls, out_dir: str | Path) -> FolderTarget:
        """Part 10 files in ``out_dir``, named by SOP Instance UID."""
        return cls(folder_receiver(out_dir), out_dir)

    def begin(self, study: RemoteStudy) -> Receiver:
        return self.receive

    def lacking(self, sop_uids: set[str]) -> set[str]:
        folder = self.folder
        if folder is None:
            with self._lock:
                return sop_uids - self.received
        return {u for u in sop_uids if not (folder / f"{safe_name(u)}.dcm").is_file()}


class ArchiveTarget(Target):
    """Retrieved studies go into the archive at ``data_dir`` (see the module).

    Files the importer refused stay in the staging folder for inspection and fail the study.
    Create it with :func:`open_archive`, which holds the index (single writer) for the run.
    """

    def __init__(self, data_dir: Path, importer: importer_mod.Importer) -> None:
        self.data_dir = data_dir
        self.index = importer.index
        self.staging = data_dir / MIGRATE_DIR / "staging"
        self.importer = importer

    def folder(self, study: RemoteStudy) -> Path:
        """The staging folder of ``study``."""
        return self.staging / safe_name(study.uid)

    def begin(self, study: RemoteStudy) -> Receiver:
        folder = self.folder(study)
        shutil.rmtree(folder, ignore_errors=True)  # left by an interrupted run
        folder.mkdir(parents=True, exist_ok=True)

        def stage(sop_uid: str, data: bytes) -> None:
            _write(folder / f"{safe_name(sop_uid)}.dcm", data)

        return stage

    def finish(self, study: RemoteStudy, received: int) -> tuple[int, str]:
        folder = self.folder(study)
        summary = batch_mod.run([folder], self.importer, jobs=2)
        problem = ""
        if summary.rejected:
            first = summary.rejected[0]
            problem = (
                f"{len(summary.rejected)} received files not archived (kept in "
                f"{folder}): {first.path}: {first.reason}"
            )
        else:
            shutil.rmtree(folder, ignore_errors=True)
        return self.counts([study.uid]).get(study.uid, 0), problem

    def _select(self, uids: list[str], sql: str) -> list[tuple[object, ...]]:
        """Run ``sql`` with the UIDs as table ``_dp_migrate_uids(uid)``."""
        con = self.index.connection()
        con.register("_dp_migrate_uids", pa.table({"uid": pa.array(uids, pa.string())}))
        try:
            return con.execute(sql).fetchall()
        finally:
            con.unregister("_dp_migrate_uids")

    def counts(self, study_uids: list[str]) -> dict[str, int]:
        """Instances the index holds for each study (studies with none are absent)."""
        if not study_uids:
            return {}
        rows = self._select(
            study_uids,
            "SELECT study_instance_uid, count(*) FROM instances WHERE study_instance_uid "
            "IN (SELECT uid FROM _dp_migrate_uids) GROUP BY study_instance_uid",
        )
        return {str(u): int(str(n)) for u, n in rows}

    def lacking(self, sop_uids: set[str]) -> set[str]:
        if not sop_uids:
            return set()
        rows = self._select(
            sorted(sop_uids),
            "SELECT sop_instance_uid FROM instances WHERE sop_instance_uid "
            "IN (SELECT uid FROM _dp_migrate_uids)",
        )
        return sop_uids - {str(r[0]) for r in rows}

    @property
    def held(self) -> HeldCounts | None:
        return self.counts


@contextmanager
def open_archive(data_dir: str | Path, wait: float = 0.0) -> Iterator[ArchiveTarget]:
    """The archive at ``data_dir`` as a migration target, owned for the whole run.

    Raises :class:`~duckpacs.errors.ArchiveLockedError` (after ``wait`` seconds of retrying)
    while ``duckpacs serve`` or an import writes the archive, like ``duckpacs import``.
    """
    data = Path(data_dir)
    with importer_mod.open_importer(data, wait) as importer:
        yield ArchiveTarget(data, importer)


def journal_path(data_dir: str | Path, peer: RemotePeer) -> Path:
    """The journal of migrating ``peer`` into the archive: one per peer in ``<data>/migrate``."""
    name = "".join(
        c if c.isalnum() or c in "-." else "_" for c in f"{peer.ae_title}@{peer.host}-{peer.port}"
    )
    folder = Path(data_dir) / MIGRATE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.sqlite"
