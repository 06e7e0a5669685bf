"""Type stubs for the Rust extension ``duckpacs._core`` (crate ``duckpacs-py``)."""

from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

__version__: str
"""Version of the duckpacs-core crate."""
BUILD_PROFILE: str
"""``"release"`` or ``"debug"``: how the extension was compiled."""
RUSTC_VERSION: str
"""The ``rustc --version`` line of the compiler that built the extension."""

# --- storage engine (rust/duckpacs-py/src/store.rs) ---

Location = tuple[int, int, int]
"""``(pack, offset, length)``: where a record is; the index stores it for O(1) reads."""

class Store:
    """The append-only instance store in ``<data>/store`` (see docs/STORAGE-FORMAT.md).

    With ``writer_id`` the process appends to its own packs (exclusive lock per writer id,
    ``ArchiveLockedError`` if taken) and recovers their torn tail; without it, read-only.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        writer_id: int | None = None,
        pack_size: int = 1 << 30,
        dictionaries: bool = True,
        sync: bool = True,
    ) -> None: ...
    @staticmethod
    def open(
        path: str | PathLike[str],
        writer_id: int | None = None,
        pack_size: int = 1 << 30,
        dictionaries: bool = True,
        sync: bool = True,
    ) -> Store: ...
    @property
    def path(self) -> Path: ...
    @property
    def writer_id(self) -> int | None: ...
    @property
    def sync_count(self) -> int: ...
    def put(self, data: bytes, transfer_syntax: str | None = None) -> Location: ...
    def put_many(self, items: Sequence[bytes]) -> list[Location]: ...
    def get(self, location: Location) -> bytes: ...
    def get_frame(self, location: Location, index: int) -> bytes: ...
    def frame_count(self, location: Location) -> int: ...
    def meta(self, location: Location) -> dict[str, Any]: ...
    def header_bytes(self, location: Location) -> bytes: ...
    def delete(self, location: Location) -> Location: ...
    def scan(self, headers: bool = True) -> list[dict[str, Any]]: ...
    def verify(
        self, deep: bool = False, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]: ...
    def stats(self) -> dict[str, int]: ...
    def compact(
        self, min_dead_ratio: float = 0.2, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> bool: ...
