"""Writing DICOM media: a File-set with a DICOMDIR, e.g. to burn a patient CD.

PS3.10 8 defines the File-set and its DICOMDIR (Media Storage Directory, PS3.3 F); PS3.11
Annex D defines the General Purpose CD-R Interchange profile (``STD-GEN-CD``): files are
Explicit VR Little Endian, File IDs are at most 8 components of at most 8 characters from
``A-Z 0-9 _`` (ISO 9660 level 1, PS3.10 8.2 and PS3.12 Annex F).

The DICOMDIR and the directory tree are built by pydicom's :class:`~pydicom.fileset.FileSet`
(``PTnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn``, which satisfies both rules). pydicom re-encodes each
instance when it stages it; we then put every Part 10 input back byte for byte, so the media
carry exactly the archived files. Files in a transfer syntax other than Explicit VR Little
Endian are still written (unchanged) but reported as outside ``STD-GEN-CD``.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian

from duckpacs.errors import StorageError
from duckpacs.files import part10
from duckpacs.files.progress import Progress
from duckpacs.files.sources import Reject, SourceItem, discover

PROFILE = "STD-GEN-CD"
# PS3.10 8.2: File ID components use the ISO 646 G0 subset "A-Z 0-9 _", 1 to 8 characters.
FILE_ID_COMPONENT = re.compile(r"^[A-Z0-9_]{1,8}$")
MAX_FILE_ID_DEPTH = 8
# (0004,1130) File-set ID is CS: 16 characters of upper case, digits, space, underscore.
FILE_SET_ID = re.compile(r"^[A-Z0-9_ ]{0,16}$")


@dataclass
class DicomdirResult:
    """What :func:`write_dicomdir` wrote.

    Attributes
    ----------
    dicomdir:
        Path of the DICOMDIR file.
    files:
        ``(File ID relative to the media root, source description)`` for every instance.
    rejected:
        Inputs that could not go on the media, with the reason.
    outside_profile:
        ``(File ID, transfer syntax UID)`` of files that are not Explicit VR Little Endian, so
        the media is not strictly ``STD-GEN-CD`` (PS3.11 D.3).
    invented:
        ``(source, keyword, value)`` for each Type 1 record key the instance left empty and
        the DICOMDIR record got an invented value for (the file itself is unchanged).
    """

    dicomdir: Path
    files: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[Reject] = field(default_factory=list)
    outside_profile: list[tuple[str, str]] = field(default_factory=list)
    invented: list[tuple[str, str, str]] = field(default_factory=list)  # source, key, value

    @property
    def conformant(self) -> bool:
        return not self.outside_profile

    def as_json(self) -> dict[str, object]:
        return {
            "dicomdir": str(self.dicomdir),
            "profile": PROFILE,
            "conformant": self.conformant,
            "files": [{"file_id": f, "source": s} for f, s in self.files],
            "outside_profile": [
                {"file_id": f, "transfer_syntax": t} for f, t in self.outside_profile
            ],
            "rejected": [{"path": r.path, "reason": r.reason} for r in self.rejected],
            "invented": [{"source": s, "key": k, "value": v} for s, k, v in self.invented],
        }


@contextmanager
def file_set() -> Iterator[FileSet]:
    """A pydicom FileSet whose staging folder is removed when done, not left to the GC."""
    fs = FileSet()
    try:
        yield fs
    finally:
        stage = getattr(fs, "_stage", {}).get("t")
        if stage is not None:
            stage.cleanup()


def check_file_id(parts: Iterable[str]) -> str | None:
    """Why a File ID breaks PS3.10 8.2 / ISO 9660 rules, or ``None`` if it is fine."""
    parts = list(parts)
    if not 1 <= len(parts) <= MAX_FILE_ID_DEPTH:
        return f"{len(parts)} components (1 to {MAX_FILE_ID_DEPTH} allowed)"
    for part in parts:
        if not FILE_ID_COMPONENT.match(part):
            return f"component {part!r} is not 1-8 characters of A-Z, 0-9, _"
    return None


def write_dicomdir(
    inputs: Iterable[str | os.PathLike[str]] | Iterable[SourceItem],
    out_dir: str | os.PathLike[str],
    *,
    file_set_id: str = "DUCKPACS",
    progress: Progress | None = None,
) -> DicomdirResult:
    """Lay the input instances out as DICOM media in ``out_dir`` with a DICOMDIR.

    Parameters
    ----------
    inputs:
        Paths (folders, files, zips: anything :func:`~duckpacs.files.sources.discover`
        accepts) or already discovered :class:`SourceItem` objects.
    out_dir:
        Media root to create; must not exist or be empty.
    file_set_id:
        (0004,1130) File-set ID, e.g. the volume label (PS3.3 F.2.2.1).
    progress:
        Counts instances staged and inputs rejected (quiet by default).

    Raises
    ------
    StorageError
        If ``out_dir`` is not empty, the File-set ID is invalid, or nothing could be written.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StorageError(f"{out}: output folder must be new or empty")
    if not FILE_SET_ID.match(file_set_id):
        raise StorageError(f"File-set ID {file_set_id!r}: up to 16 of A-Z, 0-9, space, _")
    result = DicomdirResult(out / "DICOMDIR")
    progress = progress if progress is not None else Progress("dicomdir", enabled=False)
    with file_set() as fs, progress:
        fs.ID = file_set_id
        originals = _stage(fs, _items(inputs, result, progress), result, progress)
        if not originals:
            raise StorageError("no DICOM instance to write: " + _first_reasons(result))
        out.mkdir(parents=True, exist_ok=True)
        fs.write(out)
        for instance in fs:
            item = originals[str(instance.SOPInstanceUID)]
            file_id = list(instance.ReferencedFileID) if instance.ReferencedFileID else []
            rel = "/".join(str(p) for p in file_id) or instance.FileID
            problem = check_file_id(rel.split("/"))
            if problem:
                raise StorageError(f"{rel}: File ID breaks PS3.10 8.2: {problem}")
            if item.kind == "part10":
                (out / rel).write_bytes(item.read())
            else:  # a bare dataset: Part 10 wrapping of the pristine dataset, nothing invented
                (out / rel).write_bytes(part10.encode(part10.parse(item.read(), force=True)))
            tsyntax = str(instance.TransferSyntaxUID)
            if tsyntax != ExplicitVRLittleEndian:
                result.outside_profile.append((rel, tsyntax))
            result.files.append((rel, item.description))
    result.files.sort()
    return result


def _items(
    inputs: Iterable[str | os.PathLike[str]] | Iterable[SourceItem],
    result: DicomdirResult,
    progress: Progress,
) -> Iterator[SourceItem]:
    paths: list[str | os.PathLike[str]] = []
    for entry in inputs:
        if isinstance(entry, SourceItem):
            yield entry
        else:
            paths.append(entry)
    for found in discover(paths):
        if isinstance(found, SourceItem):
            yield found
        else:
            result.rejected.append(found)
            progress.reject(found.path, found.reason)


class _Inventor:
    """Values for Type 1 directory record keys an instance leaves empty (PS3.3 F.5).

    Like DCMTK's ``dcmmkdir --invent``: only the DICOMDIR record gets the invented value; the
    file on the media is the archived one, unchanged (``write_dicomdir`` puts it back).
    """

    def __init__(self) -> None:
        self.studies: dict[str, int] = {}
        self.series: dict[str, int] = {}
        self.instances: dict[str, int] = {}

    def fill(self, ds: Dataset) -> list[tuple[str, str]]:
        study = str(ds.get("StudyInstanceUID", "") or "")
        series = str(ds.get("SeriesInstanceUID", "") or "")
        study_no = self.studies.setdefault(study, len(self.studies) + 1)
        series_no = self.series.setdefault(series, 1 + sum(1 for k in self.series if k))
        self.instances[series] = self.instances.get(series, 0) + 1
        wanted = {
            "PatientID": "UNKNOWN",
            "StudyDate": "19000101",
            "StudyTime": "000000",
            "StudyID": str(study_no),
            "Modality": "OT",
            "SeriesNumber": str(series_no),
            "InstanceNumber": str(self.instances[series]),
        }
        invented = []
        for keyword, value in wanted.items():
            if ds.get(keyword) in (None, ""):
                setattr(ds, keyword, value)
                invented.append((keyword, value))
        return invented


def _stage(
    fs: FileSet, items: Iterable[SourceItem], result: DicomdirResult, progress: Progress
) -> dict[str, SourceItem]:
    """Add each item to the FileSet; return SOP Instance UID -> item for those accepted."""
    originals: dict[str, SourceItem] = {}
    invent = _Inventor()
    for item in items:
        before = len(result.rejected)
        _stage_one(fs, item, result, originals, invent)
        if len(result.rejected) > before:
            progress.reject(result.rejected[-1].path, result.rejected[-1].reason)
        else:
            progress.advance(item.size)
    return originals


def _stage_one(
    fs: FileSet,
    item: SourceItem,
    result: DicomdirResult,
    originals: dict[str, SourceItem],
    invent: _Inventor,
) -> None:
    try:
        ds = part10.parse(item.read(), force=item.kind == "dataset")
        uid = str(ds.SOPInstanceUID)
    except (InvalidDicomError, ValueError, AttributeError, KeyError) as e:
        result.rejected.append(Reject(item.description, f"unreadable: {e}"))
        return
    except (OSError, EOFError, zlib.error) as e:
        result.rejected.append(Reject(item.description, f"cannot read: {e}"))
        return
    if uid in originals:
        first = originals[uid].description
        result.rejected.append(
            Reject(item.description, f"duplicate SOP Instance UID {uid} (kept {first})")
        )
        return
    part10.ensure_file_meta(ds)
    for keyword, value in invent.fill(ds):
        result.invented.append((item.description, keyword, value))
    try:
        fs.add(ds)
    except (ValueError, AttributeError, KeyError, TypeError) as e:
        reason = str(e).split(". See DICOM", 1)[0].split("\n", 1)[0]
        for staged in fs.find(SOPInstanceUID=uid):  # fs.add may fail after staging it
            fs.remove(staged)
        result.rejected.append(Reject(item.description, f"cannot be listed: {reason}"))
        return
    originals[uid] = item


def _first_reasons(result: DicomdirResult) -> str:
    if not result.rejected:
        return "no inputs"
    shown = "; ".join(f"{r.path}: {r.reason}" for r in result.rejected[:3])
    more = len(result.rejected) - 3
    return shown + (f" (and {more} more)" if more > 0 else "")


def read_back(dicomdir: str | os.PathLike[str]) -> list[str]:
    """SOP Instance UIDs a DICOMDIR lists, loaded with pydicom's FileSet (orphans raise)."""
    fs = FileSet()
    try:
        fs.load(dicomdir, raise_orphans=True)
        return sorted(str(i.SOPInstanceUID) for i in fs)
    finally:
        stage = getattr(fs, "_stage", {}).get("t")
        if stage is not None:
            stage.cleanup()
