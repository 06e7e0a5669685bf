"""Discovery of DICOM inputs from the paths a user gives to a command (import, anonymize,
dicomdir).

Accepted inputs, all recognised by content rather than by name:

* folders, walked recursively (symbolic links to folders are not followed);
* single files: a Part 10 file (128-byte preamble then ``DICM``, PS3.10 7.1) or a bare
  dataset without a File Meta Information header (recognised by a plausible first element
  of group 0008, explicit or implicit VR, little or big endian, PS3.5 7.1);
* gzip-compressed files (``.gz``, ``.dcm.gz``, or any name; magic ``1f 8b``);
* zip archives (magic ``PK\\x03\\x04``): members are read from the archive, never extracted;
* DICOMDIR media (PS3.10 8.5, PS3.3 F.3): the directory records' Referenced File IDs are
  followed, and references to missing files are reported.

:func:`discover` yields :class:`SourceItem` (something whose bytes can be read) and
:class:`Reject` (a path and a reason) in a stable order. The same physical file is yielded
once, however many arguments or DICOMDIRs lead to it.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pydicom
from pydicom.errors import InvalidDicomError

# How many leading bytes the content sniffer looks at.
HEAD_SIZE = 512
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
# Media Storage Directory Storage SOP Class (PS3.4 Annex B / PS3.10 8.5): a DICOMDIR.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

# Value Representations of PS3.5 Table 6.2-1.
VALID_VRS = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO",
        b"LT", b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ",
        b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT",
        b"UV",
    }
)  # fmt: skip
# VRs whose explicit-VR element header has 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
UNDEFINED_LENGTH = 0xFFFFFFFF
# Largest instance read from a compressed container (zip member, gzip): a guard against
# decompression bombs. Uncompressed files are read as they are.
MAX_INSTANCE_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class SourceItem:
    """One candidate DICOM instance found by discovery.

    Attributes
    ----------
    description:
        Where it came from, for messages and reports: a file path, ``archive.zip!member`` or
        ``file.dcm.gz`` (the reader decompresses).
    size:
        Size in bytes of what :meth:`read` returns when it is known cheaply (file size, zip
        member size, gzip trailer), used for progress in MB/s.
    kind:
        ``"part10"`` (preamble and DICM) or ``"dataset"`` (bare dataset, no meta header).
    container:
        ``"file"``, ``"gzip"``, ``"zip"`` or ``"zip+gzip"``.
    """

    description: str
    size: int
    kind: str
    container: str
    _reader: Callable[[], bytes] = field(repr=False, compare=False)

    def read(self) -> bytes:
        """The instance's bytes, decompressed when the container was compressed."""
        return self._reader()


@dataclass(frozen=True)
class Reject:
    """An input that is not a DICOM instance, or cannot be read, with the reason why."""

    path: str
    reason: str


Found = SourceItem | Reject


def sniff(head: bytes, total_size: int | None = None) -> str | None:
    """Classify the start of a file: ``"part10"``, ``"dataset"`` or ``None`` if not DICOM.

    Parameters
    ----------
    head:
        The first bytes of the content (at least 132 for the Part 10 check, PS3.10 7.1).
    total_size:
        Size of the whole content if known, to reject element lengths that overrun it.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "part10"
    if _plausible_dataset(head, total_size):
        return "dataset"
    return None


def _plausible_dataset(head: bytes, total_size: int | None) -> bool:
    """True if ``head`` starts with two consecutive sane elements of group 0002 or 0008.

    Checks every encoding of PS3.5 7.1: explicit VR little endian, implicit VR little endian,
    explicit VR big endian (retired, still found on old media).
    """
    limit = total_size if total_size is not None else None
    for endian in ("<", ">"):
        for explicit in (True, False):
            if endian == ">" and not explicit:
                continue  # implicit VR big endian does not exist
            if _walk_elements(head, endian, explicit, limit):
                return True
    return False


def _walk_elements(head: bytes, endian: str, explicit: bool, limit: int | None) -> bool:
    """Parse up to two element headers; both must be sane and in ascending tag order."""
    offset = 0
    previous: tuple[int, int] | None = None
    for _ in range(2):
        if offset + 8 > len(head):
            return False
        group, element = struct.unpack_from(endian + "HH", head, offset)
        if group not in (0x0002, 0x0008) or (previous is not None and (group, element) <= previous):
            return False
        if explicit:
            vr = head[offset + 4 : offset + 6]
            if vr not in VALID_VRS:
                return False
            if vr in LONG_VRS:
                if offset + 12 > len(head) or head[offset + 6 : offset + 8] != b"\x00\x00":
                    return False
                (length,) = struct.unpack_from(endian + "I", head, offset + 8)
                header = 12
            else:
                (length,) = struct.unpack_from(endian + "H", head, offset + 6)
                header = 8
        else:
            (length,) = struct.unpack_from(endian + "I", head, offset + 4)
            header = 8
        if length == UNDEFINED_LENGTH:
            return True  # a sequence of undefined length; its structure is the parser's job
        if length % 2:
            return False  # element value lengths are even (PS3.5 7.1.1)
        end = offset + header + length
        if limit is not None and end > limit:
            return False
        if previous is None and end + 8 > len(head):
            # The first value runs past what we looked at: judge by that element alone.
            return limit is None or end + 8 <= limit
        previous = (group, element)
        offset = end
    return True


# --- helpers reading containers ------------------------------------------------------------


def _gzip_isize(path: Path) -> int | None:
    """The uncompressed size mod 2**32 stored in the gzip trailer (RFC 1952 2.3.1)."""
    try:
        with path.open("rb") as f:
            f.seek(-4, os.SEEK_END)
            tail = f.read(4)
    except OSError:
        return None
    return struct.unpack("<I", tail)[0] if len(tail) == 4 else None


class TooLargeError(OSError):
    """A compressed input inflates past :data:`MAX_INSTANCE_BYTES` (a zip or gzip bomb)."""


def _read_capped(stream: IO[bytes] | gzip.GzipFile, what: str) -> bytes:
    """Read a decompressing stream to its end, refusing more than MAX_INSTANCE_BYTES."""
    data = stream.read(MAX_INSTANCE_BYTES + 1)
    if len(data) > MAX_INSTANCE_BYTES:
        raise TooLargeError(f"{what} inflates to more than {MAX_INSTANCE_BYTES:,} bytes")
    return data


def _read_gzip_file(path: Path) -> bytes:
    with gzip.open(path, "rb") as f:
        return _read_capped(f, str(path))


class _ZipSource:
    """A zip archive opened lazily and shared by its members' readers (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._lock = threading.Lock()

    def open(self) -> zipfile.ZipFile:
        with self._lock:
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.path)
            return self._zip

    def read(self, name: str, gz: bool) -> bytes:
        what = f"{self.path}!{name}"
        with self.open().open(name) as member:
            if not gz:
                return _read_capped(member, what)
            with gzip.GzipFile(fileobj=member) as inflated:
                return _read_capped(inflated, what)


# --- discovery ----------------------------------------------------------------------------


class _Discovery:
    def __init__(self, follow_dicomdir: bool) -> None:
        self.follow_dicomdir = follow_dicomdir
        self.seen: set[tuple[int, int]] = set()

    def _first_visit(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return True  # reported by whoever reads it
        key = (st.st_dev, st.st_ino)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def run(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[Found]:
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                yield from self._walk(path)
            elif path.exists():
                yield from self._file(path)
            else:
                yield Reject(str(path), "no such file or folder")

    def _walk(self, root: Path) -> Iterator[Found]:
        def on_error(e: OSError) -> None:
            errors.append(Reject(str(e.filename or root), f"cannot list folder: {e.strerror}"))

        errors: list[Reject] = []
        for folder, dirnames, filenames in os.walk(root, onerror=on_error):
            dirnames.sort()
            yield from errors
            errors.clear()
            # DICOMDIRs first, so their references are yielded (and marked seen) in media order.
            for name in sorted(filenames, key=lambda n: (n.upper() != "DICOMDIR", n)):
                yield from self._file(Path(folder) / name)
        yield from errors

    def _file(self, path: Path) -> Iterator[Found]:
        if not self._first_visit(path):
            return
        desc = str(path)
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(HEAD_SIZE)
        except OSError as e:
            yield Reject(desc, f"cannot read: {e.strerror or e}")
            return
        if not head:
            yield Reject(desc, "empty file")
            return
        if head.startswith(GZIP_MAGIC):
            yield from self._gzip_file(path, size)
        elif head.startswith(ZIP_MAGIC) or head.startswith(EMPTY_ZIP_MAGIC):
            yield from self._zip_file(path)
        else:
            kind = sniff(head, size)
            if kind is None:
                yield Reject(desc, _not_dicom_reason(head))
            elif kind == "part10" and self.follow_dicomdir and _head_is_dicomdir(head):
                yield from self._dicomdir(path)
            else:
                yield SourceItem(desc, size, kind, "file", path.read_bytes)

    def _gzip_file(self, path: Path, size: int) -> Iterator[Found]:
        desc = str(path)
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(HEAD_SIZE)
        except (OSError, EOFError, zlib.error) as e:
            yield Reject(desc, f"corrupt gzip data: {e}")
            return
        isize = _gzip_isize(path)
        kind = sniff(head, isize if isize is not None and isize >= len(head) else None)
        if kind is None:
            yield Reject(desc, "gzip content is not DICOM: " + _not_dicom_reason(head))
            return
        yield SourceItem(
            desc, isize if isize is not None else size, kind, "gzip", lambda: _read_gzip_file(path)
        )

    def _zip_file(self, path: Path) -> Iterator[Found]:
        source = _ZipSource(path)
        try:
            archive = source.open()
            members = sorted(archive.infolist(), key=lambda i: i.filename)
        except (OSError, zipfile.BadZipFile) as e:
            yield Reject(str(path), f"corrupt zip archive: {e}")
            return
        for info in members:
            if info.is_dir():
                continue
            yield from self._zip_member(source, archive, info)

    def _zip_member(
        self, source: _ZipSource, archive: zipfile.ZipFile, info: zipfile.ZipInfo
    ) -> Iterator[Found]:
        desc = f"{source.path}!{info.filename}"
        try:
            with archive.open(info) as f:
                head = f.read(HEAD_SIZE)
            gz = head.startswith(GZIP_MAGIC)
            if gz:
                with archive.open(info) as raw, gzip.GzipFile(fileobj=raw) as f:
                    head = f.read(HEAD_SIZE)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError) as e:
            yield Reject(desc, f"cannot read zip member: {e}")
            return
        if head.startswith(ZIP_MAGIC):
            yield Reject(desc, "nested zip archives are not followed; unpack the outer one")
            return
        kind = sniff(head, None if gz else info.file_size)
        if kind is None:
            yield Reject(desc, _not_dicom_reason(head))
            return
        if kind == "part10" and _head_is_dicomdir(head):
            return  # the members it references are in this archive and are listed anyway
        name = info.filename
        yield SourceItem(
            desc,
            info.file_size,
            kind,
            "zip+gzip" if gz else "zip",
            lambda: source.read(name, gz),
        )

    def _dicomdir(self, path: Path) -> Iterator[Found]:
        """Follow a DICOMDIR's directory records to the files they reference (PS3.3 F.3)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                records = list(ds.get("DirectoryRecordSequence", []))
        except (InvalidDicomError, OSError, ValueError, KeyError, EOFError) as e:
            yield Reject(str(path), f"unreadable DICOMDIR: {e}")
            return
        base = path.parent
        for number, record in enumerate(records, 1):
            file_id = record.get("ReferencedFileID")
            if file_id is None:
                continue
            parts = [file_id] if isinstance(file_id, str) else [str(p) for p in file_id]
            target = _resolve_media_path(base, parts)
            if target is None:
                where = "\\".join(parts)
                yield Reject(
                    str(path), f"directory record {number} references missing file {where}"
                )
                continue
            yield from self._file(target)


def _resolve_media_path(base: Path, parts: list[str]) -> Path | None:
    """Resolve a Referenced File ID (components, PS3.10 8.2) below ``base``.

    Media written on one system are often read on another that changes case (an ISO 9660 CD
    mounted with lower-case names), so each component is matched case-insensitively when the
    exact name is absent.
    """
    current = base
    for part in parts:
        part = part.strip()
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
            return None  # never leave the media root, whatever the record says
        exact = current / part
        if exact.exists():
            current = exact
            continue
        try:
            matches = [e for e in os.listdir(current) if e.upper() == part.upper()]
        except OSError:
            return None
        if not matches:
            return None
        current = current / sorted(matches)[0]
    return current if current.is_file() else None


def _meta_sop_class(head: bytes) -> str | None:
    """Media Storage SOP Class UID (0002,0002) from a Part 10 head, if it lies within it.

    The File Meta Information is always explicit VR little endian (PS3.10 7.1).
    """
    offset = 132
    while offset + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            return None
        vr = head[offset + 4 : offset + 6]
        if vr in LONG_VRS:
            if offset + 12 > len(head):
                return None
            (length,) = struct.unpack_from("<I", head, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            start = offset + 8
        if length == UNDEFINED_LENGTH or start + length > len(head):
            return None
        if element == 0x0002:
            return head[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        offset = start + length
    return None


def _head_is_dicomdir(head: bytes) -> bool:
    """Whether a Part 10 head names the Media Storage Directory SOP Class (PS3.10 8.5)."""
    return _meta_sop_class(head) == DICOMDIR_SOP_CLASS


def _not_dicom_reason(head: bytes) -> str:
    if len(head) < 132:
        return f"not DICOM: only {len(head)} bytes and no dataset start"
    return "not DICOM: no DICM prefix at offset 128 and no plausible dataset start"


def discover(
    paths: Iterable[str | os.PathLike[str]], *, follow_dicomdir: bool = True
) -> Iterator[Found]:
    """Find every DICOM input below ``paths``; yield items and rejects as they are found.

    Parameters
    ----------
    paths:
        Folders (walked recursively), files, zip archives, gzip files, DICOMDIRs.
    follow_dicomdir:
        When true (the default) a DICOMDIR is not an instance to import but a table of
        contents: the files its records reference are yielded (PS3.10 8.5) and missing
        references are rejected. When false it is yielded like any Part 10 file.
    """
    yield from _Discovery(follow_dicomdir).run(paths)


def discover_all(
    paths: Iterable[str | os.PathLike[str]], *, follow_dicomdir: bool = True
) -> tuple[list[SourceItem], list[Reject]]:
    """:func:`discover`, collected into (items, rejects)."""
    items: list[SourceItem] = []
    rejects: list[Reject] = []
    for found in discover(paths, follow_dicomdir=follow_dicomdir):
        if isinstance(found, SourceItem):
            items.append(found)
        else:
            rejects.append(found)
    return items, rejects


def read_dataset(item: SourceItem) -> pydicom.Dataset:
    """Parse an item with pydicom (used by export-side tools and tests; import uses Rust)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(io.BytesIO(item.read()), force=item.kind == "dataset")
