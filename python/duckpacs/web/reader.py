"""The narrow view of the archive that the web layer needs: the :class:`ArchiveReader` protocol.

DICOMweb and the viewer only ever search the index, locate instances, read an instance's
Part 10 bytes or one frame, and hand new instances to the ingest path. Keeping that surface
small lets the HTTP layer run over the real archive (store + DuckDB index) or over a plain
folder of files in tests, unchanged.

Levels are ``"study"``, ``"series"`` and ``"instance"`` (PS3.4 C.6.1.1: the Study Root
information model). A *query* maps DICOM keywords to matching values written as in C-FIND /
QIDO-RS (``*``/``?`` wildcards, ``a-b`` date ranges, ``\\``-separated UID lists; PS3.4
C.2.2.2). A *result* maps keywords to Python values: ``str`` for text VRs (PN as its
``Alphabetic`` string), ``int``/``float`` for numbers, a ``list`` when the value has several
values, ``None`` when empty; DICOM text with ``\\``-separated values (what the DuckDB index returns)
is accepted too. ``duckpacs.index.Index.find`` has this very signature.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydicom.dataset import Dataset

LEVELS = ("study", "series", "instance")


@dataclass(frozen=True)
class InstanceLocation:
    """Where one instance lives; ``handle`` is opaque to the web layer (pack/offset/length for
    the store, a file path for a folder)."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    handle: Any = None
    instance_number: int | None = None
    number_of_frames: int = 1


@dataclass
class IngestOutcome:
    """What happened to one instance handed to :meth:`ArchiveReader.ingest`.

    ``failure`` is ``None`` when stored; otherwise a PS3.18 Table 10.5.3-2 failure reason
    (``0xA700`` out of resources, ``0xA900`` data set does not match SOP class, ``0xC000``
    cannot understand, ``0xC122`` referenced SOP class not supported) and a text ``reason``.
    """

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    failure: int | None = None
    reason: str = ""
    warning: int | None = None  # stored with a warning: PS3.18 WarningReason, e.g. 0xB006


@runtime_checkable
class ArchiveReader(Protocol):
    """What the HTTP layer asks of the archive."""

    def find(
        self,
        level: str,
        query: Mapping[str, str],
        return_keys: Sequence[str],
        *,
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Matching entities at ``level``, each with at least ``return_keys`` and the UIDs of
        its level and the levels above it."""
        ...

    def locations(self, level: str, query: Mapping[str, str]) -> list[InstanceLocation]:
        """The instances under the entities matching ``query`` (UIDs only, exact), sorted by
        series then instance number."""
        ...

    def read_instance(self, location: InstanceLocation) -> bytes:
        """The instance's Part 10 bytes, exactly as received."""
        ...

    def stream_instance(self, location: InstanceLocation) -> Iterator[bytes]:
        """The instance's Part 10 bytes as received, in pieces: memory does not grow with
        the instance."""
        ...

    def frame_dataset(self, location: InstanceLocation, number: int) -> tuple[Dataset, int]:
        """A dataset holding frame ``number`` (1-based) with every attribute needed to show
        it, and that frame's number in it: the whole instance, or for a large one with
        native pixels, its header and that one frame."""
        ...

    def large_header(self, location: InstanceLocation) -> bytes | None:
        """For a large instance whose pixel data is its last element: the stored bytes up to
        and including that element's header (tag, VR, length), read without the pixels.
        None for any other instance (it is small enough to read whole)."""
        ...

    def read_frame(self, location: InstanceLocation, number: int) -> bytes:
        """Frame ``number`` (1-based) as stored: native pixel bytes, or the compressed
        fragment(s) of that frame for an encapsulated transfer syntax."""
        ...

    def ingest(self, data: bytes) -> IngestOutcome:
        """Store one Part 10 instance through the same path as C-STORE.

        A reader may also offer ``ingest_file(path) -> IngestOutcome`` for a Part 10 file
        (a large STOW-RS part spooled to disk); STOW-RS uses it when present, so the
        instance need not be read into memory."""
        ...
