"""The trash: deleted instances kept in the store, hidden from every query, for a while.

A delete (``duckpacs delete``, ``DELETE /api/studies/...``) does not tombstone the records:
it appends one *batch* to the trash journal ``DATA/store/trash.jsonl`` and drops the index
rows. The records stay live in the packs, so ``duckpacs trash restore`` can index them again;
after ``archive.trash_days`` days ``duckpacs compact`` tombstones them and reclaims the space.

The journal belongs to the store (the source of truth): ``reindex`` and crash recovery leave
out every record whose key is in an active batch. A record's key is its SOP Instance UID,
SHA-256 and received time (``received_at_us``), none of which moves when compaction or the
densifier relocates it, and which tell the deleted copy from one sent again later.

One JSON object per line, written with one ``write`` and fsynced before anything else
happens (docs/STORAGE-FORMAT.md, "The trash journal")::

    {"op": "trash", "batch": ID, "at_us": T, "user": U, "from": F, "level": L,
     "query": {...}, "studies": [...], "bytes": N, "instances": [[uid, sha256, received_us]]}
    {"op": "restore", "batch": ID, "at_us": T, "user": U, "from": F}
    {"op": "purge", "batch": ID, "at_us": T}

A line torn by a crash is skipped: its delete never reached the index (the journal is
written first), and the next append starts on a fresh line.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from duckpacs.archive.layout import STORE_DIRNAME
from duckpacs.archive.types import epoch_us_now
from duckpacs.errors import StorageError

JOURNAL_FILENAME = "trash.jsonl"
_DAY_US = 86_400 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Key = tuple[str, str, int]  # SOP Instance UID, SHA-256, received_at_us (0 when unknown)


def entry_key(entry: Mapping[str, Any]) -> Key:
    """The key of a store scan entry (``Store.tail``)."""
    return (
        str(entry["sop_instance_uid"]),
        str(entry.get("sha256") or ""),
        int(entry.get("received_at_us") or 0),
    )


def epoch_us(when: datetime | None) -> int:
    """The index's ``received_at`` back in the store's microseconds (0 when unknown)."""
    if when is None:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)


@dataclass
class Batch:
    """One delete: what went to the trash, when, by whom, and where it stands now."""

    batch: str
    at_us: int
    user: str
    source: str
    level: str
    query: dict[str, Any]
    studies: list[str]
    bytes: int
    keys: list[Key]
    state: str = "trashed"  # trashed, restored or purged
    closed: dict[str, Any] = field(default_factory=dict)  # the restore or purge line

    def summary(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "deleted_at": datetime.fromtimestamp(self.at_us / 1e6, UTC).isoformat(),
            "user": self.user,
            "from": self.source,
            "level": self.level,
            "query": self.query,
            "studies": self.studies,
            "instances": len(self.keys),
            "bytes": self.bytes,
            "state": self.state,
        }


class Journal:
    """A JSON-lines journal of the store (``DATA/store/<filename>``): lines appended with
    one ``write`` and fsynced, a line torn by a crash skipped on reading. The trash and the
    corrections (:mod:`duckpacs.archive.corrections`) each keep one."""

    def __init__(self, data_dir: Path, filename: str) -> None:
        self.path = Path(data_dir) / STORE_DIRNAME / filename
        self._lock = threading.Lock()

    @property
    def data_dir(self) -> Path:
        return self.path.parent.parent

    def _lines(self) -> Iterable[dict[str, Any]]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        for text in raw.split(b"\n"):
            try:
                line = json.loads(text)
            except ValueError:
                continue  # an empty line, or one torn by a crash (see the module docstring)
            if isinstance(line, dict):
                yield line

    # --- writing ----------------------------------------------------------------------

    def new_batch_id(self) -> str:
        return secrets.token_hex(6)

    def append(self, line: dict[str, Any]) -> None:
        """Append one line and make it durable before returning."""
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # a torn last line stays a line of its own
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # the new name must survive a power loss too
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)


class Trash(Journal):
    """The trash journal of the archive at ``data_dir`` (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, JOURNAL_FILENAME)

    # --- reading ----------------------------------------------------------------------

    def batches(self) -> list[Batch]:
        """Every batch in journal order, with its current state."""
        found: dict[str, Batch] = {}
        for line in self._lines():
            op, batch_id = line.get("op"), str(line.get("batch", ""))
            if op == "trash":
                found[batch_id] = Batch(
                    batch_id, int(line["at_us"]), str(line.get("user", "")),
                    str(line.get("from", "")), str(line.get("level", "")),
                    dict(line.get("query") or {}), list(line.get("studies") or []),
                    int(line.get("bytes") or 0),
                    [(str(u), str(s), int(r)) for u, s, r in line.get("instances", [])],
                )  # fmt: skip
            elif op in ("restore", "purge") and batch_id in found:
                found[batch_id].state = "restored" if op == "restore" else "purged"
                found[batch_id].closed = line
        return list(found.values())

    def active(self) -> list[Batch]:
        """The batches still in the trash (neither restored nor purged)."""
        return [b for b in self.batches() if b.state == "trashed"]

    def hidden_keys(self) -> set[Key]:
        """Keys of every record in the trash: no index row may point at one."""
        return {key for b in self.active() for key in b.keys}

    def visible(self, entries: Iterable[Mapping[str, Any]]) -> list[Any]:
        """The store scan ``entries`` that are not in the trash."""
        hidden = self.hidden_keys()
        if not hidden:
            return list(entries)
        return [e for e in entries if entry_key(e) not in hidden]

    def expired(self, days: int, now_us: int | None = None) -> list[Batch]:
        """Active batches deleted more than ``days`` days ago."""
        limit = (now_us if now_us is not None else epoch_us_now()) - days * _DAY_US
        return [b for b in self.active() if b.at_us <= limit]

    def find(self, batch_id: str) -> Batch:
        for b in self.batches():
            if b.batch == batch_id:
                return b
        raise StorageError(f"{self.path}: no trash batch {batch_id!r} (see `duckpacs trash list`)")


def audit(
    trash: Trash, action: str, summary: Mapping[str, Any], *, user: str, source: str,
    auth: str = "cli",
) -> None:  # fmt: skip
    """One line in the data folder's audit log per delete or restore: who, when (the log's
    own time), what (batch, level, query, studies, instances, bytes) and from where."""
    from duckpacs.web.audit import AUDIT_FILENAME, AuditLog  # the log's one writer class

    log = AuditLog(trash.path.parent.parent / AUDIT_FILENAME)
    try:
        log.record(
            user=user, auth=auth, client=source, method=action.upper(),
            path=f"/trash/{action}", status=200, batch=summary.get("batch"),
            level=summary.get("level"), query=query_text(summary.get("query")),
            studies=summary.get("studies"), instances=summary.get("instances"),
            bytes=summary.get("bytes"),
        )  # fmt: skip
    finally:
        log.close()


def query_text(query: Any) -> str:
    """A batch's query as ``TAG=VALUE`` words."""
    return " ".join(f"{k}={v}" for k, v in (query or {}).items())


# --- keeping the index and the store in line with the journal -------------------------


def reconcile(trash: Trash, index: Any) -> int:
    """Drop index rows of records in the trash: a delete killed after its journal line and
    before the index followed is finished here (at every opening for writing). Returns the
    rows dropped."""
    hidden = trash.hidden_keys()
    if not hidden:
        return 0
    indexed = index.instances_at(sorted({uid for uid, _, _ in hidden}))
    doomed = [uid for uid, row in indexed.items() if (uid, row[3], epoch_us(row[4])) in hidden]
    return int(index.remove(doomed)) if doomed else 0


def purge_expired(
    trash: Trash, store: Any, days: int,
    older: Callable[[Iterable[Key]], set[Key]] | None = None,
) -> dict[str, int]:  # fmt: skip
    """Tombstone the records of batches older than ``days`` days (``duckpacs compact``
    reclaims their space in the same run), then mark the batches purged. A kill in between
    leaves the batch active: the next compaction finds the records already gone.

    ``older(keys)`` names the records corrections superseded on the way to ``keys`` (their
    history, :mod:`duckpacs.archive.corrections`): they go too, first, so that a kill never
    leaves a superseded record live without its version."""
    expired = trash.expired(days)
    if not expired:
        return {"batches": 0, "instances": 0}
    doomed = {key for b in expired for key in b.keys}
    history = older(doomed) if older else set()
    entries = list(store.tail({}, headers=False)["instances"])
    deleted = 0
    for keys in (history, doomed):
        for entry in entries:
            if entry_key(entry) in keys:
                store.delete(tuple(entry["location"]))
                deleted += keys is doomed
    for b in expired:
        trash.append({"op": "purge", "batch": b.batch, "at_us": epoch_us_now()})
    return {"batches": len(expired), "instances": deleted}
