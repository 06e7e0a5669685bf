"""Where a migration puts what it retrieves: the archive, or Part 10 files in a folder.

Into the archive (:class:`ArchiveTarget`) each instance goes through the archive's one write
path as it arrives (the same duplicate rule as C-STORE and ``duckpacs import``). Whatever the
retrieval (C-GET or C-MOVE), the instances of a study arrive through the receiver
:meth:`Target.begin` gave for it.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from duckpacs.errors import StorageError
from duckpacs.ingest import importer as importer_mod
from duckpacs.ingest.migrate.journal import HeldCounts
from duckpacs.ingest.migrate.peer import RemotePeer, RemoteStudy

# Below the data folder: the journals, one per peer.
MIGRATE_DIR = "migrate"

Receiver = Callable[[str, bytes], None]  # (SOP Instance UID, Part 10 bytes)
# Instances stored together (one fsync) while a study arrives.
BATCH_INSTANCES = 64
BATCH_BYTES = 64 << 20


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
    """Retrieved instances go straight into the archive at ``data_dir``, through the same
    door as C-STORE (:meth:`duckpacs.archive.facade.Archive.store`): no staging on disk.

    An instance the archive refuses (malformed, or another instance kept under its UID)
    fails its study with the reason. Create it with :func:`open_archive`, which holds the
    archive (single writer) for the run.
    """

    def __init__(self, data_dir: Path, importer: importer_mod.Importer) -> None:
        self.data_dir = data_dir
        self.importer = importer
        self.archive = importer.archive
        self.index = importer.index
        self._problems: dict[str, list[str]] = {}
        self._batches: dict[str, list[tuple[str, bytes]]] = {}
        self._lock = threading.Lock()

    def begin(self, study: RemoteStudy) -> Receiver:
        problems: list[str] = []
        batch: list[tuple[str, bytes]] = []
        with self._lock:
            self._problems[study.uid] = problems
            self._batches[study.uid] = batch

        def store(sop_uid: str, data: bytes) -> None:
            # Batched: one parse pass on every core and one fsync per batch instead of per
            # instance. The peer still holds what a failed batch lost; the study is then
            # reported and fetched again on the next run.
            with self._lock:
                batch.append((sop_uid, data))
                full = len(batch) >= BATCH_INSTANCES or sum(len(d) for _, d in batch) >= BATCH_BYTES
                taken = batch[:] if full else []
                if full:
                    batch.clear()
            if taken:
                self._store(taken, problems)

        return store

    def _store(self, taken: list[tuple[str, bytes]], problems: list[str]) -> None:
        results = self.archive.store_many([d for _, d in taken])
        for (sop_uid, _), result in zip(taken, results, strict=True):
            counted = self.importer.count(result)
            if counted is not None:
                with self._lock:
                    problems.append(f"{sop_uid}: {counted}")

    def finish(self, study: RemoteStudy, received: int) -> tuple[int, str]:
        with self._lock:
            taken = self._batches.pop(study.uid, [])
            problems = self._problems.get(study.uid, [])
        if taken:
            self._store(taken, problems)
        self.archive.flush()  # what the journal will count is findable
        with self._lock:
            problems = self._problems.pop(study.uid, [])
        problem = ""
        if problems:
            problem = f"{len(problems)} received instances not archived: {problems[0]}"
        return self.counts([study.uid]).get(study.uid, 0), problem

    def counts(self, study_uids: list[str]) -> dict[str, int]:
        """Instances the index holds for each study (studies with none are absent)."""
        return self.index.study_counts(study_uids)

    def lacking(self, sop_uids: set[str]) -> set[str]:
        return sop_uids - self.index.known_uids(sorted(sop_uids))

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
