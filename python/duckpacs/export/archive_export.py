"""Export from the archive: query the index, read by location from the store, write files.

Files are written byte for byte as stored (SHA-256 identical to what was received); a bare
dataset (received without File Meta Information) is wrapped as a Part 10 file (PS3.10 7.1).
Options lay the files out flat or as patient/study/series folders, put them in a zip, lay them
out as media with a DICOMDIR (PS3.11 STD-GEN-CD, :mod:`duckpacs.export.dicomdir`) or apply the
PS3.15 Annex E Basic Profile (:mod:`duckpacs.export.anonymize`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckpacs import _core
from duckpacs.archive import corrections, layout, shared_packs
from duckpacs.archive.trash import entry_key, epoch_us
from duckpacs.errors import StorageError
from duckpacs.export.anonymize import Anonymizer, AnonymizeReport, anonymize_bytes
from duckpacs.export.dicomdir import DicomdirResult, write_dicomdir
from duckpacs.files import part10
from duckpacs.files.progress import Progress
from duckpacs.files.sources import Reject
from duckpacs.index import backend
from duckpacs.index.base import IndexBackend

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class ExportResult:
    """What :func:`export` wrote."""

    files: list[str] = field(default_factory=list)  # paths relative to the output
    bytes: int = 0
    target: str = ""
    anonymized: AnonymizeReport | None = None
    dicomdir: DicomdirResult | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "target": self.target,
            "files": len(self.files),
            "bytes": self.bytes,
        }
        if self.anonymized is not None:
            out["anonymized"] = self.anonymized.removed_summary()
        if self.dicomdir is not None:
            out["dicomdir"] = str(self.dicomdir.dicomdir)
            out["not_on_media"] = [
                {"path": r.path, "reason": r.reason} for r in self.dicomdir.rejected
            ]
        return out


def _name(value: object) -> str:
    text = _UNSAFE.sub("_", str(value or "")).strip("._")
    return text[:64] or "UNKNOWN"


# Records at least this long in the store are copied out as a stream, never read whole.
STREAM_AT = 8 * 1024 * 1024


def _instances(
    data_dir: Path, level: str, query: Mapping[str, str], stream: bool, original: bool = False
) -> Iterator[tuple[str, bytes | _core.InstanceStream]]:
    """(SOP Instance UID, stored bytes) of every instance under the matches; with
    ``stream``, a large one comes as a stream of its stored bytes instead. With
    ``original``, the first-received record of a corrected instance instead of its
    current version (:mod:`duckpacs.archive.corrections`)."""
    with layout.open_store(data_dir) as store:
        with backend.open_index(data_dir, read_only=True) as index:
            # With packs on S3, another node's instances are read from the bucket.
            shared_packs.connect(index, store, writer=False)
            locations = index.locations(level, dict(query))
            if original and locations:
                locations = _originals(data_dir, index, locations)
        for uid, _cls, _ts, pack, offset, length in locations:
            if pack is None or offset is None or length is None:
                raise StorageError(f"instance {uid}: the index has no store location")
            if stream and length >= STREAM_AT:
                yield uid, store.open_instance((pack, offset, length))
            else:
                yield uid, store.get((pack, offset, length))


def _originals(data_dir: Path, index: IndexBackend, locations: list[Any]) -> list[Any]:
    """``locations`` with each corrected instance's row pointing at its original record."""
    history = corrections.Corrections(data_dir).history()
    if not history.previous:
        return locations
    indexed = index.instances_at([str(row[0]) for row in locations])
    wanted: dict[tuple[str, str, int], str] = {}
    for uid, row in indexed.items():
        key = (uid, row[3], epoch_us(row[4]))
        if key in history.previous:
            wanted[history.original(key)] = uid
    if not wanted:
        return locations
    where: dict[str, tuple[int, int, int]] = {}
    with layout.open_store(data_dir) as store:
        for entry in store.tail({}, headers=False)["instances"]:
            found = wanted.get(entry_key(entry))
            if found is not None:
                pack, offset, length = entry["location"]
                where[found] = (int(pack), int(offset), int(length))
    missing = sorted(set(wanted.values()) - set(where))
    if missing:
        raise StorageError(
            f"the original record of {missing[0]} is not in the store "
            f"({len(missing)} instance(s)); `duckpacs verify` checks the store"
        )
    return [(*row[:3], *where[str(row[0])]) if str(row[0]) in where else row for row in locations]


def _copy_out(source: _core.InstanceStream, stage: Path, uid: str, layout: str) -> tuple[str, int]:
    """Writes a large instance a piece at a time, named from its header (read back without
    the pixels); returns its relative path and size."""
    stage.mkdir(parents=True, exist_ok=True)
    partial = stage / f".{_name(uid)}.partial"
    size = 0
    with partial.open("wb") as f:
        for piece in source:
            f.write(piece)
            size += len(piece)
    if layout == "flat":
        rel = f"{_name(uid)}.dcm"
    else:
        ds = part10.read_header(partial)
        rel = "/".join(
            _name(getattr(ds, key, "")) for key in ("PatientID", "StudyInstanceUID",
                                                    "SeriesInstanceUID")
        ) + f"/{_name(uid)}.dcm"  # fmt: skip
    target = stage / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(target)
    return rel, size


def _relative(uid: str, data: bytes, layout: str) -> str:
    if layout == "flat":
        return f"{_name(uid)}.dcm"
    info = _core.describe(data)
    return "/".join(
        (
            _name(info.get("patient_id")),
            _name(info.get("study_instance_uid")),
            _name(info.get("series_instance_uid")),
            f"{_name(uid)}.dcm",
        )
    )


def _as_part10(data: bytes) -> bytes:
    if len(data) >= 132 and data[128:132] == b"DICM":
        return data
    return part10.encode(part10.parse(data, force=True))


def export(
    data_dir: Path,
    out: Path,
    *,
    level: str = "study",
    query: Mapping[str, str] | None = None,
    layout: str = "hierarchy",
    as_zip: bool = False,
    dicomdir: bool = False,
    anonymize: bool = False,
    original: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the instances matching ``query`` (C-FIND rules, PS3.4 C.2.2.2) at ``level``.

    ``out`` is a new or empty folder, or with ``as_zip`` the zip file to create. With
    ``dicomdir`` the files get ISO 9660 names and a DICOMDIR (``layout`` is then ignored).
    The current version of each instance is written; with ``original``, the bytes first
    received for it (they differ once a correction changed it).

    Raises
    ------
    StorageError : the output exists and is not empty, or nothing matched.
    """
    if as_zip and out.exists():
        raise StorageError(f"{out}: the zip file exists already")
    if not as_zip and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StorageError(f"{out}: output folder must be new or empty")
    progress = progress if progress is not None else Progress("export", enabled=False)
    result = ExportResult(target=str(out))
    anonymizer = Anonymizer() if anonymize else None
    if anonymizer is not None:
        result.anonymized = AnonymizeReport()
    with tempfile.TemporaryDirectory(prefix="duckpacs-export-") as tmp, progress:
        stage = Path(tmp) / "files" if (dicomdir or as_zip) else out
        found_all = _instances(
            data_dir, level, query or {}, stream=anonymizer is None, original=original
        )
        for uid, found in found_all:
            if not isinstance(found, bytes):
                rel, size = _copy_out(found, stage, uid, layout)
                result.files.append(rel)
                result.bytes += size
                progress.advance(size)
                continue
            data = _as_part10(found)
            if anonymizer is not None and result.anonymized is not None:
                data, changes, ds = anonymize_bytes(data, anonymizer)
                uid = str(ds.SOPInstanceUID)
                rel = _relative(uid, data, layout)
                result.anonymized.changes[rel] = changes
            else:
                rel = _relative(uid, data, layout)
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            result.files.append(rel)
            result.bytes += len(data)
            progress.advance(len(data))
        if not result.files:
            raise StorageError("nothing to export: no instance matches the query")
        if anonymizer is not None and result.anonymized is not None:
            result.anonymized.uid_map = dict(anonymizer.uid_map)
        if dicomdir:
            media = Path(tmp) / "media" if as_zip else out
            with warnings.catch_warnings():  # pydicom warns on every legacy value it meets
                warnings.simplefilter("ignore", UserWarning)
                result.dicomdir = write_dicomdir([stage], media)
            result.dicomdir.rejected = [
                Reject(_inside(r.path, stage), r.reason) for r in result.dicomdir.rejected
            ]
            result.files = [rel for rel, _ in result.dicomdir.files] + ["DICOMDIR"]
            stage = media
        if as_zip:
            _zip(stage, out)
    return result


def _inside(path: str, folder: Path) -> str:
    prefix = str(folder) + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path


def _zip(folder: Path, target: Path) -> None:
    """Zip ``folder``'s files (stored, not recompressed: pixel data rarely shrinks)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    shutil.move(partial, target)
