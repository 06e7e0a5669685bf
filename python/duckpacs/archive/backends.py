"""The product backends of the Archive facade: the Rust pack store and the DuckDB index.

- :class:`PackStore` wraps ``duckpacs._core.Store`` (one writer id per worker process, so
  each worker appends to its own pack files; ``put`` returns once durable, group-committed).
- :func:`describe` runs in the worker: the Rust parser checks the received bytes (a
  malformed dataset raises ParseError here, before anything is written) and keeps the header.
- :class:`IndexCatalog` wraps :class:`duckpacs.index.Index` in the owner process; at each
  flush the Rust batch builder (``_core.index_batch``, GIL released, all cores) turns the
  pending headers into one Arrow batch for ``Index.add_batch``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from duckpacs import _core, logs
from duckpacs.archive.facade import Archive
from duckpacs.archive.types import (
    Catalog,
    IndexEntry,
    InstanceRef,
    Location,
    epoch_us_now,
    from_epoch_us,
)
from duckpacs.config import Settings

STORE_DIRNAME = "store"
log = logs.get("index")
# The index's instances table (duckpacs.index.schema), read directly for the hot lookup.
_LOOKUP_SQL = (
    'SELECT sop_instance_uid, sop_class_uid, transfer_syntax, pack, "offset", length '
    "FROM instances WHERE sop_instance_uid = ?"
)


class PackStore:
    """:class:`~duckpacs.archive.types.Store` over the Rust pack store."""

    def __init__(self, data_dir: Path, writer_id: int | None) -> None:
        self._store = _core.Store(Path(data_dir) / STORE_DIRNAME, writer_id=writer_id)

    def put(
        self, data: bytes, *, received_at_us: int, source_ae: str = "", hold: bool = False
    ) -> Location:
        """Durably store ``data`` with its provenance (kept for a rebuilt index)."""
        return Location(
            *self._store.put(
                data, received_at_us=received_at_us, source_ae=source_ae or None, hold=hold
            )
        )

    def low_water(self) -> dict[int, int]:
        return self._store.low_water()

    def settle(self, locations: list[Location]) -> None:
        self._store.settle(locations)

    def get(self, location: Location) -> bytes:
        pack, offset, length = location
        return bytes(self._store.get((pack, offset, length)))

    def get_frame(self, location: Location, index: int) -> bytes:
        """Frame ``index`` (0-based) as stored, read from its own chunk (no whole decode)."""
        pack, offset, length = location
        return bytes(self._store.get_frame((pack, offset, length), index))

    def meta(self, location: Location) -> dict[str, Any]:
        """The record's own header (UIDs, transfer syntax, frame count), no index query."""
        pack, offset, length = location
        return dict(self._store.meta((pack, offset, length)))

    def close(self) -> None:
        self._store.close()


def describe(data: bytes, transfer_syntax: str, source_ae: str = "") -> dict[str, Any]:
    """What the index owner needs to index one received Part 10 stream.

    The Rust parser checks the whole stream here, in the worker (a malformed dataset raises
    ParseError before anything is written); the header (everything before the pixel data)
    travels to the owner, whose Rust batch builder turns many of them into one index batch.
    No pydicom on this path.
    """
    layout: dict[str, Any] = _core.describe(data, transfer_syntax)
    pixel = layout.get("pixel")
    # Offsets of a deflated dataset index the inflated stream: keep the whole stream then.
    end = pixel["element"][0] if pixel and not layout.get("deflated") else len(data)
    return {
        "header": data[:end],
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "source_ae": source_ae or None,
    }


class IndexCatalog:
    """:class:`~duckpacs.archive.types.Catalog` over the DuckDB index (owner process only)."""

    def __init__(self, index: Any) -> None:
        self.index = index
        # A second DuckDB connection for lookups, which run beside writes (MVCC) instead of
        # queueing behind them: one lookup per C-STORE must stay cheap.
        self._reader = index.connection().cursor()
        self._reader_lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: Path, on_conflict: str = "keep-first") -> IndexCatalog:
        """The index opened for writing, caught up with the store first (crash recovery)."""
        from duckpacs.archive import recovery

        index, _ = recovery.open_for_writing(Path(data_dir), on_conflict=on_conflict)
        return cls(index)

    def close(self) -> None:
        self._reader.close()
        self.index.close()
        # Drop the DuckDB objects now rather than at interpreter exit.
        self._reader = self.index = None

    @staticmethod
    def _ref(row: Any) -> InstanceRef:
        uid, sop_class, ts, pack, offset, length = row
        return InstanceRef(uid, sop_class or "", ts or "", Location(pack, offset, length))

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None:
        with self._reader_lock:
            found = self._reader.execute(_LOOKUP_SQL, [sop_instance_uid]).fetchone()
        return self._ref(found) if found else None

    def _batch(self, entries: list[IndexEntry]) -> Any:
        """One index batch for these entries, built in Rust from their headers."""
        now = epoch_us_now()
        headers, extras = [], []
        for entry in entries:
            pack, offset, length = entry.ref.location
            headers.append(entry.row["header"])
            extras.append(
                {
                    "pack": pack,
                    "offset": offset,
                    "length": length,
                    "size": entry.row["size"],
                    "sha256": entry.row["sha256"],
                    "source_ae": entry.row.get("source_ae"),
                    "transfer_syntax": entry.ref.transfer_syntax,
                    "received_at": from_epoch_us(entry.row.get("received_at_us") or now),
                }
            )
        batch = _core.index_batch(headers, extras)
        for i, error in batch.errors:
            ref = entries[i].ref
            logs.event(
                log, "not indexed: header rejected", uid=ref.sop_instance_uid,
                pack=ref.location.pack, offset=ref.location.offset, error=error, level=40,
            )  # fmt: skip
        return batch

    def add(
        self, entries: list[IndexEntry], marks: dict[int, int] | None = None
    ) -> list[InstanceRef | None]:
        if not entries:
            if marks:
                self.index.advance_marks(marks)
            return []
        uids = [e.ref.sop_instance_uid for e in entries]
        existing = {
            row[0]: self._ref(row)
            for row in self.index.locations("image", {"SOPInstanceUID": "\\".join(uids)})
        }
        fresh: list[IndexEntry] = []
        seen: set[str] = set()
        for entry in entries:
            uid = entry.ref.sop_instance_uid
            if uid not in existing and uid not in seen:
                fresh.append(entry)
                seen.add(uid)
        if fresh:
            self.index.add_batch(self._batch(fresh), marks=marks)
        elif marks:
            self.index.advance_marks(marks)
        winners: dict[str, InstanceRef] = dict(existing)
        out: list[InstanceRef | None] = []
        for entry in entries:
            uid = entry.ref.sop_instance_uid
            if uid in winners:
                out.append(winners[uid])
            else:
                out.append(None)
                winners[uid] = entry.ref  # a later duplicate in the same batch loses to it
        return out

    def replace(self, entry: IndexEntry) -> None:
        self.index.add_batch(self._batch([entry]))  # same UID, new sha256: the index replaces

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.index.find(
            level, query, return_keys, fuzzy=fuzzy, limit=limit, offset=offset
        )
        return result

    def locate(self, level: str, query: dict[str, Any]) -> list[InstanceRef]:
        return [self._ref(row) for row in self.index.locations(level, query)]


KEY_FILENAME = "index.key"


def write_authkey(data_dir: Path, authkey: bytes) -> Path:
    """Leave the owner's authkey where local tools (``duckpacs send``) can read it (0600)."""
    path = Path(data_dir) / KEY_FILENAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(authkey)
    return path


def open_client(settings: Settings) -> Archive:
    """A reading Archive for a command-line tool.

    While ``duckpacs serve`` runs it owns the index, so queries go to it over its socket;
    otherwise the index is opened read-only here. The store is opened without a writer.
    """
    from duckpacs.archive import ipc

    data_dir = settings.data_dir
    key = data_dir / KEY_FILENAME
    address = ipc.socket_path(data_dir)
    catalog: Catalog | None = None
    if key.is_file() and (address.startswith("\0") or Path(address).exists()):
        remote = ipc.RemoteCatalog(address, key.read_bytes())
        # A key and socket left by a killed server answer nothing: read the index then.
        catalog = remote if remote.reachable() else None
    if catalog is None:
        from duckpacs.index import Index

        catalog = IndexCatalog(Index.open(data_dir, read_only=True))
    store = PackStore(data_dir, None)
    return Archive(store, describe, catalog, settings["archive.on_conflict"])
