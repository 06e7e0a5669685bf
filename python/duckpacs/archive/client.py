"""A reading archive for command-line tools (``duckpacs find``, ``duckpacs send``).

While ``duckpacs serve`` runs it holds the index, so queries go to it over its local socket
(:mod:`duckpacs.archive.ipc`); otherwise the index is opened read-only here. Instance bytes
are read from the store directly in both cases (any process may read any pack).
"""

from __future__ import annotations

from typing import Any

from duckpacs import _core, store_config
from duckpacs.archive import ipc, layout, part10, shared_packs
from duckpacs.archive.types import InstanceRef, Location
from duckpacs.config import Settings
from duckpacs.index import backend
from duckpacs.index.base import IndexBackend


class _LocalIndex:
    """The index opened read-only, answering like the server does."""

    def __init__(self, index: IndexBackend) -> None:
        self.index = index

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        return self.index.find(level, query, return_keys, fuzzy=fuzzy, limit=limit, offset=offset)

    def locate(self, level: str, query: dict[str, Any]) -> list[InstanceRef]:
        return [InstanceRef.from_row(row) for row in self.index.locations(level, query)]


class ClientArchive:
    """find / locate through the server or a read-only index; reads from the store."""

    def __init__(self, queries: Any, store: _core.Store) -> None:
        self._queries = queries
        self.store = store

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._queries.find(
            level, query, return_keys, fuzzy, limit, offset
        )
        return result

    def locate(self, level: str, query: dict[str, Any]) -> list[InstanceRef]:
        result: list[InstanceRef] = self._queries.locate(level, query)
        return result

    def read(self, location: Location) -> bytes:
        return bytes(self.store.get(location))

    def read_dataset(self, ref: InstanceRef) -> tuple[bytes, str]:
        stream = self.read(ref.location)
        framing = part10.split(stream)
        return stream[framing.dataset_offset :], framing.transfer_syntax


def open_client(settings: Settings) -> ClientArchive:
    """The archive of ``settings`` for reading (see the module docstring)."""
    data_dir = settings.data_dir
    key = data_dir / layout.KEY_FILENAME
    address = ipc.socket_path(data_dir)
    queries: Any = None
    if key.is_file():
        remote = ipc.RemoteArchive(address, key.read_bytes())
        # A key left by a killed server answers nothing: read the index then.
        queries = remote if remote.reachable() else None
    if queries is None:
        queries = _LocalIndex(backend.open_index(data_dir, read_only=True))
    store = layout.open_store(data_dir)
    if store_config.configured() is not None:  # packs on S3: other nodes' are readable
        _read_other_nodes(data_dir, queries, store)
    return ClientArchive(queries, store)


def _read_other_nodes(data_dir: Any, queries: Any, store: _core.Store) -> None:
    """The read-only index returns other nodes' instances at their remote locations; the
    server's answers already do, so then every registered node is named to the store."""
    if isinstance(queries, _LocalIndex):
        shared_packs.connect(queries.index, store, writer=False)
        return
    with backend.open_index(data_dir, read_only=True) as index:
        shared_packs.name_registered_nodes(index, store)
