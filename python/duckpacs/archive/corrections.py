"""Corrections of patient and study data: ``duckpacs modify``, ``duckpacs merge-patient``,
the admin page, HL7 ADT A08/A40. IHE Patient Information Reconciliation in spirit.

A correction never rewrites or removes a record. Each instance it changes gets a *version*:
a new store record with the corrected header and the original's pixel data (built by
:mod:`duckpacs.archive.rewrite`), the same SOP Instance UID, and the same received time
(``received_at_us``) as the record it supersedes. The index then points at the version;
the received bytes stay live in the store (``duckpacs export --original``).

Why not the Rust ``ArchiveWriter``: its duplicate rule is about *arrivals* -- ``keep-first``
refuses another dataset under an archived UID and ``replace`` tombstones the earlier record
-- while a correction must keep the earlier record and say which record is current. So this
is the one other door into the store, and it only ever writes versions of indexed instances:
``Store.put_file`` (bounded memory), the index rows replaced in one DuckDB transaction
(``Index.add_batch``: a row with an indexed UID and another SHA-256 replaces it).

Which record is current is said by the corrections journal ``DATA/store/corrections.jsonl``,
which belongs to the store like the trash journal (docs/STORAGE-FORMAT.md)::

    {"op": "modify", "batch": ID, "at_us": T, "user": U, "from": F, "kind": "modify"|"merge",
     "query": {...}, "changes": {KEYWORD: NEW}, "before": {KEYWORD: [OLD, ...]},
     "studies": [...], "instances": [[uid, sha256, received_us]]}
    {"op": "done", "batch": ID, "at_us": T, "versions": [[uid, sha256, received_us]],
     "recovered": bool}

The order of a correction: the ``modify`` line (durable), then each version (held below the
store's low-water mark), then the index rows, then the ``done`` line. The records named in a
``done`` line's versions *supersede* the batch's records of the same UIDs: reindex, crash
recovery, the trash's restore and compaction treat a superseded record as history (kept,
never indexed). A ``modify`` line without its ``done`` line (a kill in between) is finished
at the next opening for writing (:func:`finish`): the versions the store holds for it -- same
UID and received time as the old record, a SHA-256 no line names -- are its versions. So
every instance is in one state after a crash: its old record current, or its version.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from duckpacs import logs
from duckpacs.archive import rewrite
from duckpacs.archive.trash import Journal, Key, Trash, entry_key, epoch_us
from duckpacs.archive.types import epoch_us_now
from duckpacs.errors import QueryError, StorageError

JOURNAL_FILENAME = "corrections.jsonl"
log = logs.get("archive")
_ONE_AT_A_TIME = threading.Lock()  # corrections of one archive never interleave


@dataclass
class Correction:
    """One ``modify`` line and, once it is applied, its ``done`` line."""

    batch: str
    at_us: int
    user: str
    source: str
    kind: str
    query: dict[str, Any]
    changes: dict[str, str]
    before: dict[str, list[str]]
    studies: list[str]
    keys: list[Key]
    versions: list[Key] | None = None  # None while the done line is missing
    recovered: bool = False

    def superseded(self) -> dict[Key, Key]:
        """version key -> the key of the record it supersedes."""
        old = {key[0]: key for key in self.keys}
        return {v: old[v[0]] for v in self.versions or [] if v[0] in old}

    def summary(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "at": datetime.fromtimestamp(self.at_us / 1e6, UTC).isoformat(),
            "user": self.user,
            "from": self.source,
            "kind": self.kind,
            "query": self.query,
            "changes": self.changes,
            "before": self.before,
            "studies": self.studies,
            "instances": len(self.versions or []),
            "matched": len(self.keys),
            "done": self.versions is not None,
        }


@dataclass
class History:
    """What the journal says about every record: which are versions, which superseded."""

    successor: dict[Key, Key] = field(default_factory=dict)  # superseded key -> version key
    previous: dict[Key, Key] = field(default_factory=dict)  # version key -> superseded key

    def original(self, key: Key) -> Key:
        """The first-received record of the chain ending at ``key``."""
        seen = {key}
        while key in self.previous:
            key = self.previous[key]
            if key in seen:
                break
            seen.add(key)
        return key

    def older(self, keys: Iterable[Key]) -> set[Key]:
        """Every record superseded, directly or not, by one of ``keys``."""
        out: set[Key] = set()
        for key in keys:
            while key in self.previous and self.previous[key] not in out:
                key = self.previous[key]
                out.add(key)
        return out


class Corrections(Journal):
    """The corrections journal of the archive at ``data_dir`` (see the module docstring)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, JOURNAL_FILENAME)
        self._cached: tuple[tuple[int, int], set[tuple[str, int]]] | None = None

    def all(self) -> list[Correction]:
        found: dict[str, Correction] = {}
        for line in self._lines():
            op, batch = line.get("op"), str(line.get("batch", ""))
            if op == "modify":
                found[batch] = Correction(
                    batch, int(line["at_us"]), str(line.get("user", "")),
                    str(line.get("from", "")), str(line.get("kind", "modify")),
                    dict(line.get("query") or {}), dict(line.get("changes") or {}),
                    dict(line.get("before") or {}), list(line.get("studies") or []),
                    [(str(u), str(s), int(r)) for u, s, r in line.get("instances", [])],
                )  # fmt: skip
            elif op == "done" and batch in found:
                found[batch].versions = [
                    (str(u), str(s), int(r)) for u, s, r in line.get("versions", [])
                ]
                found[batch].recovered = bool(line.get("recovered"))
        return list(found.values())

    def history(self) -> History:
        h = History()
        for c in self.all():
            for version, old in c.superseded().items():
                h.previous[version] = old
                h.successor[old] = version
        return h

    def superseded(self) -> set[Key]:
        return set(self.history().successor)

    def versions(self) -> set[Key]:
        return set(self.history().previous)

    def version_arrivals(self) -> set[tuple[str, int]]:
        """(SOP Instance UID, received µs) of every version, read again only when the
        journal changed (the routing rules ask at each pass)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return set()
        stamp = (st.st_size, st.st_mtime_ns)
        if self._cached is None or self._cached[0] != stamp:
            self._cached = (stamp, {(k[0], k[2]) for k in self.versions()})
        return self._cached[1]

    def unfinished(self) -> list[Correction]:
        return [c for c in self.all() if c.versions is None]


def visible(data_dir: Path, entries: Iterable[Mapping[str, Any]]) -> list[Any]:
    """The store scan ``entries`` the index may hold: neither in the trash nor superseded
    by a correction's version."""
    kept = Trash(data_dir).visible(entries)
    superseded = Corrections(data_dir).superseded()
    if not superseded:
        return kept
    return [e for e in kept if entry_key(e) not in superseded]


def finish(data_dir: Path, entries: Sequence[Mapping[str, Any]]) -> int:
    """Write the ``done`` line of every correction killed before it (see the module
    docstring), its versions found among the store scan ``entries`` (all live records).
    Returns how many corrections were finished."""
    journal = Corrections(data_dir)
    unfinished = journal.unfinished()
    if not unfinished:
        return 0
    named = {k for c in journal.all() for k in [*c.keys, *(c.versions or [])]}
    for c in unfinished:
        # A version's received time is its old record's, or the batch's when that was
        # unknown (records written before the store kept provenance).
        received = {uid: recv or c.at_us for uid, _sha, recv in c.keys}
        versions = []
        for e in entries:
            key = entry_key(e)
            if received.get(key[0]) == key[2] and key not in named:
                versions.append(key)
                named.add(key)
        journal.append({"op": "done", "batch": c.batch, "at_us": epoch_us_now(),
                        "versions": [list(v) for v in versions], "recovered": True})  # fmt: skip
        logs.event(log, "correction finished after a crash", batch=c.batch,
                   versions=len(versions), matched=len(c.keys), level=30)  # fmt: skip
    return len(unfinished)


# --- applying a correction in the process that writes the archive -----------------------


def _before(archive: Any, level: str, query: dict[str, Any], keywords: list[str]) -> Any:
    rows = archive.index.find(level, query, [*keywords, "StudyInstanceUID"])
    studies = sorted({str(r.get("StudyInstanceUID") or "") for r in rows} - {""})
    before = {k: sorted({str(r.get(k) or "") for r in rows}) for k in keywords}
    return studies, before


def plan(archive: Any, level: str, query: dict[str, Any], changes: Mapping[str, str]) -> Any:
    """What a correction would change: the studies, and each keyword's current values."""
    changes = rewrite.check_changes(changes)
    archive._visible()
    studies, before = _before(archive, level, query, list(changes))
    return {"studies": studies, "before": before, "changes": changes}


def correct(
    archive: Any, level: str, query: dict[str, Any], changes: Mapping[str, str], *,
    kind: str, user: str, source: str,
) -> dict[str, Any]:  # fmt: skip
    """Give every instance below the entities matching ``query`` at ``level`` the new
    ``changes`` (see the module docstring). Returns the correction's summary (``instances``
    is how many got a version; 0 when nothing matched or all already had the values)."""
    changes = rewrite.check_changes(changes)
    if not any(v for v in query.values()):
        raise QueryError("a correction needs a query with a value (nothing is corrected "
                         "by an empty key)")  # fmt: skip
    journal = Corrections(require_data_dir(archive))
    with _ONE_AT_A_TIME:
        archive._visible()
        refs = archive.locate(level, query)
        if not refs:
            return {"batch": "", "instances": 0, "matched": 0, "studies": [],
                    "changes": changes, "before": {}}  # fmt: skip
        studies, before = _before(archive, level, query, list(changes))
        indexed = archive.index.instances_at([r.sop_instance_uid for r in refs])
        keys = [(u, row[3], epoch_us(row[4])) for u, row in indexed.items()]
        line = {
            "op": "modify", "batch": journal.new_batch_id(), "at_us": epoch_us_now(),
            "user": user, "from": source, "kind": kind, "query": query, "changes": changes,
            "before": before, "studies": studies, "instances": [list(k) for k in keys],
        }  # fmt: skip
        journal.append(line)
        done = {"op": "done", "batch": line["batch"]}
        try:
            written = _write_versions(archive, refs, dict(zip(indexed, keys, strict=True)),
                                      changes, int(line["at_us"]))  # fmt: skip
        except Exception:  # nothing reached the index and the versions are tombstoned
            journal.append({**done, "at_us": epoch_us_now(), "versions": []})
            raise
        try:
            # A failure in here (the index refusing rows) leaves the done line out: the
            # next opening finishes the correction from the store (see the module).
            versions = _index_versions(archive, written)
        finally:
            if written:
                archive.store_backend.settle([w["location"] for w in written])
        journal.append({**done, "at_us": epoch_us_now(), "versions": [list(v) for v in versions]})
    found = next(c for c in journal.all() if c.batch == line["batch"])
    return found.summary()


def _write_versions(
    archive: Any, refs: list[Any], keys: dict[str, Key], changes: dict[str, str], at_us: int
) -> list[dict[str, Any]]:
    """Store a version of each instance that lacks a value of ``changes``, held below the
    store's low-water mark until the caller settles them. On an error (a record unreadable,
    a disk full) the versions written so far are tombstoned before it is raised."""
    store = archive.store_backend
    folder = rewrite.spool_dir(Path(store.path))
    written: list[dict[str, Any]] = []
    try:
        for ref in refs:
            old = keys.get(ref.sop_instance_uid)
            if old is None:
                continue
            header = bytes(store.header_bytes(tuple(ref.location)))
            new_header = rewrite.rewrite_header(header, changes)
            if new_header is None:
                continue  # already carries the new values
            meta = dict(store.meta(tuple(ref.location)))
            location = _put_version(store, folder, ref.location, len(header), new_header,
                                    old[2] or at_us, meta.get("source_ae"))  # fmt: skip
            written.append({**dict(store.meta(location)), "location": location, "old": old})
    except Exception:
        for w in written:
            store.delete(tuple(w["location"]))
        store.settle([w["location"] for w in written])
        raise
    return written


def _put_version(store: Any, folder: Path, location: Any, header_len: int, header: bytes,
                 received_us: int, source_ae: str | None) -> Any:  # fmt: skip
    fd, name = tempfile.mkstemp(prefix="version-", suffix=".dcm", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            rewrite.write_version(store, location, header_len, header, out)
        return store.put_file(Path(name), received_at_us=received_us, source_ae=source_ae,
                              hold=True)  # fmt: skip
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _index_versions(archive: Any, written: list[dict[str, Any]]) -> list[Key]:
    """Point the index at the versions. One whose instance changed meanwhile (deleted,
    replaced) is tombstoned instead: only a record the index still showed is superseded."""
    from duckpacs.archive import recovery  # recovery imports this module

    if not written:
        return []
    with archive._flush_lock:
        now = archive.index.instances_at([str(w["sop_instance_uid"]) for w in written])
        applied: list[dict[str, Any]] = []
        stale: list[dict[str, Any]] = []
        for w in written:
            row = now.get(str(w["sop_instance_uid"]))
            current = row and (str(w["sop_instance_uid"]), row[3], epoch_us(row[4]))
            (applied if current == w["old"] else stale).append(w)
        for w in stale:
            archive.store_backend.delete(tuple(w["location"]))
        if applied:
            recovery.bulk.append_records(
                archive.index, recovery.with_headers(archive.store_backend, applied)
            )
    return [entry_key(w) for w in applied]


def plain_id(value: str, flag: str) -> str:
    value = value.strip()
    if not value or any(c in value for c in "*?\\"):
        raise QueryError(f"{flag} needs one Patient ID, without wildcards (got {value!r})")
    return value


def merge_changes(client: Any, into: str, given: dict[str, str | None]) -> dict[str, str]:
    """The surviving patient's values for a merge: Patient ID ``into``, and the name, birth
    date and sex given (not None), else those of its newest archived study. With no
    archived study, what is not given stays as each merged study has it, but a name must
    be given."""
    changes = {"PatientID": into}
    missing = [k for k in rewrite.PATIENT_DEMOGRAPHICS if given.get(k) is None]
    if missing:
        rows = client.find("study", {"PatientID": into}, [*missing, "StudyDate"])
        if not rows and "PatientName" in missing:
            raise QueryError(f"no archived study of patient {into}: give its name with --name "
                             "(and --birth-date, --sex)")  # fmt: skip
        if rows:
            newest = max(rows, key=lambda r: str(r.get("StudyDate") or ""))
            changes.update({k: str(newest.get(k) or "") for k in missing})
    changes.update({k: v for k, v in given.items() if v is not None})
    return rewrite.check_changes(changes)


def summary_line(summary: Mapping[str, Any]) -> str:
    """``Keyword: old -> new`` for the audit log and the CLI."""
    before = summary.get("before") or {}
    parts = []
    for k, new in (summary.get("changes") or {}).items():
        old = "|".join(before.get(k) or []) or "(empty)"
        parts.append(f"{k}: {old} -> {new or '(empty)'}")
    return "; ".join(parts)


def audit(data_dir: Path, action: str, summary: Mapping[str, Any], *, user: str, source: str,
          auth: str = "cli") -> None:  # fmt: skip
    """One line in the audit log per correction: who, when (the log's own time), what
    changed (old -> new), which studies and instances, from where."""
    from duckpacs.web.audit import AUDIT_FILENAME, AuditLog  # the log's one writer class

    log_ = AuditLog(Path(data_dir) / AUDIT_FILENAME)
    try:
        log_.record(
            user=user, auth=auth, client=source, method=action.upper(),
            path=f"/corrections/{action}", status=200, batch=summary.get("batch"),
            changes=summary_line(summary), query=" ".join(
                f"{k}={v}" for k, v in (summary.get("query") or {}).items()),
            studies=summary.get("studies"), instances=summary.get("instances"),
        )  # fmt: skip
    finally:
        log_.close()


def original_key(data_dir: Path, key: Key) -> Key:
    """The first-received record of the instance whose current record is ``key``."""
    return Corrections(data_dir).history().original(key)


def require_data_dir(archive: Any) -> Path:
    if archive.trash is None:
        raise StorageError("this archive was opened without its data folder: no corrections")
    return Path(archive.trash.data_dir)
