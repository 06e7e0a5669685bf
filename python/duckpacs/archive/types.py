"""Value types shared by the archive facade, its backends and the index IPC channel.

Everything here is small, immutable and picklable: these objects cross the process boundary
between a DIMSE worker and the index owner (see :mod:`duckpacs.archive.ipc`).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us_now() -> int:
    """Now in microseconds since the Unix epoch: how the store records ``received_at``."""
    return time.time_ns() // 1000


class Location(NamedTuple):
    """Where one stored instance lives: pack file, byte offset, record length."""

    pack: int
    offset: int
    length: int


class InstanceRef(NamedTuple):
    """One stored instance as the index knows it (enough to read it back and send it)."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    location: Location

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> InstanceRef:
        """From an index location row: (uid, sop class, syntax, pack, offset, length)."""
        uid, sop_class, ts, pack, offset, length = row
        return cls(
            str(uid), sop_class or "", ts or "", Location(int(pack), int(offset), int(length))
        )


class Readable(Protocol):
    """An archive that instances can be read from (the server's, or a tool's)."""

    def read(self, location: Location) -> bytes: ...

    def read_dataset(self, ref: InstanceRef) -> tuple[bytes, str]: ...


@dataclass(frozen=True)
class IndexEntry:
    """What a worker hands the index owner after storing an instance.

    ``row`` is the index's own payload for this instance (built in the worker by the
    :class:`Describer`, so parsing stays out of the owner process); the owner passes it to
    the index untouched.
    """

    ref: InstanceRef
    row: Any


class Outcome(enum.Enum):
    """What :meth:`Archive.store` did with an instance (PS3.4 B.2.3 statuses in brackets)."""

    STORED = "stored"  # success (0x0000)
    DUPLICATE_IDENTICAL = "duplicate-identical"  # same bytes already stored (0x0000)
    DUPLICATE_KEPT_FIRST = "duplicate-kept-first"  # different bytes, first kept (0xB006)
    REPLACED = "replaced"  # different bytes, the new ones now win (0x0000)
    REJECTED = "rejected"  # not stored (0xA700, 0xA900 or 0xC000)


@dataclass(frozen=True)
class StoreResult:
    """The outcome of one store, with the DIMSE status it maps to and a reason to log."""

    outcome: Outcome
    status: int
    sop_instance_uid: str
    reason: str = ""
    location: Location | None = None


class Store(Protocol):
    """Instance bytes on disk: durable when :meth:`put` returns (group-committed).

    A record put with ``hold`` stays below :meth:`low_water` until :meth:`settle`: the
    marks the index commits never pass a record whose row has not reached the index yet
    (:mod:`duckpacs.archive.recovery`).
    """

    def put(
        self, data: bytes, *, received_at_us: int, source_ae: str = "", hold: bool = False
    ) -> Location: ...

    def get(self, location: Location) -> bytes: ...

    def low_water(self) -> dict[int, int]: ...

    def settle(self, locations: list[Location]) -> None: ...


class Describer(Protocol):
    """Turns received bytes into the index's row for them; raises ParseError when malformed."""

    def __call__(self, data: bytes, transfer_syntax: str, source_ae: str = "") -> Any: ...


class Catalog(Protocol):
    """The index as a worker sees it: local, or the owner process over IPC.

    ``level`` is one of ``PATIENT``, ``STUDY``, ``SERIES``, ``IMAGE`` (PS3.4 C.6); query
    dictionaries map DICOM keywords to matching values (PS3.4 C.2.2.2 matching rules).
    """

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None: ...

    def add(
        self, entries: list[IndexEntry], marks: dict[int, int] | None = None
    ) -> list[InstanceRef | None]:
        """Insert entries; per entry ``None`` if inserted, else the instance already there.

        ``marks`` (store pack -> offset, the writer's low-water mark taken before the
        entries' records were settled) are committed with the entries or after them.
        """
        ...

    def replace(self, entry: IndexEntry) -> None: ...

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]: ...

    def locate(self, level: str, query: dict[str, Any]) -> list[InstanceRef]: ...
