"""The Archive facade: the one object network services use to store, find and read instances.

It joins three parts: a :class:`~duckpacs.archive.types.Store` (bytes on disk, written by this
process), a :class:`~duckpacs.archive.types.Describer` (the Rust parser turning bytes into an
index row, run here so the index owner never parses) and a
:class:`~duckpacs.archive.types.Catalog` (the index, in this process or in the owner process
over IPC). Stores are acknowledged only once the bytes are durable and the row is visible to
queries (PS3.4 B.2.3: success means the SCP has stored the instance).
"""

from __future__ import annotations

import errno
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from duckpacs import logs
from duckpacs.archive import part10
from duckpacs.archive.types import (
    Catalog,
    Describer,
    IndexEntry,
    InstanceRef,
    Location,
    Outcome,
    Store,
    StoreResult,
    epoch_us_now,
)
from duckpacs.errors import DuckpacsError, ParseError, StorageError

log = logs.get("archive")

# C-STORE statuses (PS3.4 B.2.3, PS3.7 C.5).
SUCCESS = 0x0000
WARNING_ELEMENTS_DISCARDED = 0xB006
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

CONFLICT_POLICIES = ("keep-first", "replace")


class Archive:
    """Store, find, locate and read instances.

    Parameters
    ----------
    store, describe, catalog
        The three backends (see the module docstring).
    on_conflict : str
        What to do when a SOP Instance UID arrives again with different bytes:
        ``"keep-first"`` (default; answer warning 0xB006, nothing stored) or ``"replace"``.
    """

    def __init__(
        self, store: Store, describe: Describer, catalog: Catalog, on_conflict: str = "keep-first"
    ) -> None:
        if on_conflict not in CONFLICT_POLICIES:
            raise ValueError(f"on_conflict must be one of {CONFLICT_POLICIES}")
        self.store_backend = store
        self.describe = describe
        self.catalog = catalog
        self.on_conflict = on_conflict
        self._lookups = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lookup")

    # --- ingest ----------------------------------------------------------------------

    def store(
        self,
        data: bytes,
        transfer_syntax: str | None = None,
        *,
        calling_ae: str = "",
        sop_class_uid: str = "",
        sop_instance_uid: str = "",
    ) -> StoreResult:
        """Store one instance.

        ``data`` is a Part 10 stream when ``transfer_syntax`` is None, else a bare dataset as
        received over DIMSE in that transfer syntax; then the meta group is built from the
        request's UIDs (PS3.10 7.1) and the dataset is kept exactly as received.
        """
        try:
            if transfer_syntax is not None:
                meta = part10.build_meta(
                    sop_class_uid, sop_instance_uid, transfer_syntax, calling_ae
                )
                stream = meta + data
            else:
                stream = data
            framing = part10.split(stream)
            ts = framing.transfer_syntax
            uid = sop_instance_uid or framing.sop_instance_uid
            if not uid:
                return _rejected("", DATASET_DOES_NOT_MATCH, "no SOP Instance UID")
            # The lookup (a round trip to the index owner) runs while we parse.
            lookup = self._lookups.submit(self.catalog.lookup, uid)
            row = self.describe(stream, ts, calling_ae)
        except ParseError as e:
            return _rejected(sop_instance_uid, CANNOT_UNDERSTAND, f"malformed: {e}")
        existing = lookup.result()
        if existing is not None and (
            self.on_conflict == "keep-first"
            or self._same_dataset(existing, stream, framing.dataset_offset)
        ):
            return self._duplicate(existing, stream, framing.dataset_offset, uid)
        ref_class = sop_class_uid or framing.sop_class_uid
        try:
            # One clock reading for the store record and the index row: a rebuilt index
            # restores the same received_at.
            row["received_at_us"] = epoch_us_now()
            # Held until the index owner has the row: the index's store marks must not pass
            # it (a crash before the owner commits is then caught up at the next start).
            location = self.store_backend.put(
                stream, received_at_us=row["received_at_us"], source_ae=calling_ae, hold=True
            )
        except (OSError, StorageError) as e:
            return _rejected(uid, OUT_OF_RESOURCES, _storage_reason(e))
        entry = IndexEntry(InstanceRef(uid, ref_class, ts, location), row)
        if existing is not None:
            self.catalog.replace(entry)
            self.store_backend.settle([location])
            return StoreResult(Outcome.REPLACED, SUCCESS, uid, "replaced earlier copy", location)
        (winner,) = self.catalog.add([entry], self.store_backend.low_water())
        self.store_backend.settle([location])
        if winner is not None:  # another association stored the same UID a moment earlier
            return self._duplicate(winner, stream, framing.dataset_offset, uid)
        return StoreResult(Outcome.STORED, SUCCESS, uid, "", location)

    def _duplicate(
        self, existing: InstanceRef, stream: bytes, dataset_offset: int, uid: str
    ) -> StoreResult:
        if self._same_dataset(existing, stream, dataset_offset):
            return StoreResult(Outcome.DUPLICATE_IDENTICAL, SUCCESS, uid, "", existing.location)
        return StoreResult(
            Outcome.DUPLICATE_KEPT_FIRST,
            WARNING_ELEMENTS_DISCARDED,
            uid,
            "SOP Instance UID already stored with different content; kept the first copy",
            existing.location,
        )

    def _same_dataset(self, existing: InstanceRef, stream: bytes, dataset_offset: int) -> bool:
        old = self.store_backend.get(existing.location)
        old_offset = part10.split(old).dataset_offset
        new = memoryview(stream)[dataset_offset:]
        return hashlib.sha256(memoryview(old)[old_offset:]).digest() == hashlib.sha256(new).digest()

    # --- query and retrieve -----------------------------------------------------------

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Matching entities at ``level`` (PS3.4 C.4.1), each a dict keyword -> value."""
        return self.catalog.find(level, query, return_keys, fuzzy, limit, offset)

    def locate(self, level: str, query: dict[str, Any]) -> list[InstanceRef]:
        """Every instance below the entities matching ``query`` at ``level`` (PS3.4 C.4.2)."""
        return self.catalog.locate(level, query)

    def read(self, location: Location) -> bytes:
        """The stored Part 10 stream, byte for byte as it was stored."""
        return self.store_backend.get(location)

    def read_dataset(self, ref: InstanceRef) -> tuple[bytes, str]:
        """The dataset bytes without the meta group, and their transfer syntax."""
        stream = self.read(ref.location)
        framing = part10.split(stream)
        return stream[framing.dataset_offset :], framing.transfer_syntax


def _rejected(uid: str, status: int, reason: str) -> StoreResult:
    return StoreResult(Outcome.REJECTED, status, uid, reason)


def _storage_reason(error: Exception) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return "disk full"
    if isinstance(error, DuckpacsError | OSError):
        return f"store failed: {error}"
    return str(error)
