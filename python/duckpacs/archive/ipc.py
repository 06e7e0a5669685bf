"""The index owner and its clients: one process holds DuckDB, workers reach it over a socket.

DuckDB admits one writing process, so the owner process (``duckpacs serve``'s parent) opens
the index and serves :class:`~duckpacs.archive.types.Catalog` calls on a Unix socket in the
data folder (``multiprocessing.connection`` with a random authkey handed to the workers it
spawns). Index writes are batched: see :class:`IndexOwner` for how an acknowledged add is
visible to every later query without a transaction per instance.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from duckpacs import errors, logs
from duckpacs.archive.types import Catalog, IndexEntry, InstanceRef
from duckpacs.errors import ArchiveIndexError, DuckpacsError

log = logs.get("index")

_CALLS = ("lookup", "replace", "find", "locate")
# Unix socket paths are limited to 107 bytes (sun_path).
_MAX_SOCKET_PATH = 100


def socket_path(data_dir: Path) -> str:
    """Where the owner listens: ``DATA/index.sock``, or an abstract socket if DATA is deep."""
    path = str(Path(data_dir) / "index.sock")
    if len(path) <= _MAX_SOCKET_PATH:
        return path
    return "\0duckpacs-" + str(abs(hash(path)))


class IndexOwner:
    """Serves a local :class:`Catalog` to worker processes (see the module docstring).

    Visibility without a commit per instance: an added entry goes into an in-memory pending
    buffer and the caller is answered at once (its bytes are already durable in the store).
    Every read (``find``, ``locate``) first flushes the buffer into the index, and ``lookup``
    consults the buffer, so anything acknowledged is visible to every later query. A
    committer thread also flushes every ``flush_interval`` seconds or ``flush_rows`` rows,
    so idle time is used and batches stay large (one index transaction per batch).
    """

    def __init__(
        self,
        catalog: Catalog,
        address: str,
        authkey: bytes,
        flush_interval: float = 0.25,
        flush_rows: int = 512,
    ) -> None:
        self.catalog = catalog
        self.address = address
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self._db_lock = threading.Lock()  # the index itself
        self._pending_lock = threading.Lock()  # the two dicts below
        self._pending: dict[str, IndexEntry] = {}
        self._flushing: dict[str, IndexEntry] = {}
        # Store marks that came with adds (pack -> offset, highest wins): committed with
        # the flush that takes every entry pending when they arrived (archive.recovery).
        self._pending_marks: dict[int, int] = {}
        self._wake = threading.Event()
        if not address.startswith("\0"):
            # We hold the index's write lock, so no other owner of this archive is alive: a
            # socket file left here is a killed owner's, and would make the bind fail.
            with contextlib.suppress(FileNotFoundError):
                Path(address).unlink()
        self._listener = Listener(address, family="AF_UNIX", authkey=authkey)
        self._stopping = threading.Event()
        self.flushes = 0
        self._threads = [
            threading.Thread(target=self._accept_loop, name="index-accept", daemon=True),
            threading.Thread(target=self._commit_loop, name="index-commit", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._threads[1].is_alive():
            self._threads[1].join(timeout=30)
        self.flush()
        if not self.address.startswith("\0"):
            with contextlib.suppress(OSError):
                Path(self.address).unlink()

    # --- the catalog calls, local or from a worker ------------------------------------

    def add(
        self, entries: list[IndexEntry], marks: dict[int, int] | None = None
    ) -> list[InstanceRef | None]:
        out: list[InstanceRef | None] = []
        with self._pending_lock:
            _merge_marks(self._pending_marks, marks or {})
            for entry in entries:
                uid = entry.ref.sop_instance_uid
                known = self._pending.get(uid) or self._flushing.get(uid)
                if known is not None:
                    out.append(known.ref)
                else:
                    self._pending[uid] = entry
                    out.append(None)
            full = len(self._pending) >= self.flush_rows
        if full:
            self._wake.set()
        return out

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None:
        with self._pending_lock:
            known = self._pending.get(sop_instance_uid) or self._flushing.get(sop_instance_uid)
        if known is not None:
            return known.ref
        # Not behind _db_lock: a lookup per C-STORE must not wait for a flush in progress;
        # the catalog answers it from its own read connection.
        return self.catalog.lookup(sop_instance_uid)

    def call(self, method: str, *args: Any) -> Any:
        if method == "add":
            return self.add(*args)
        if method == "lookup":
            return self.lookup(*args)
        if method not in _CALLS:
            raise ArchiveIndexError(f"unknown index call {method!r}")
        with self._db_lock:
            self._flush_locked()  # whatever was acknowledged becomes visible first
            return getattr(self.catalog, method)(*args)

    def flush(self) -> None:
        """Write every pending entry to the index now."""
        with self._db_lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        with self._pending_lock:
            if not self._pending and not self._pending_marks:
                return
            self._flushing, self._pending = self._pending, {}
            marks, self._pending_marks = self._pending_marks, {}
        batch = list(self._flushing.values())
        try:
            self.catalog.add(batch, marks)
            self.flushes += 1
        except Exception as e:
            # Keep them for the next attempt; the store has the bytes in any case.
            with self._pending_lock:
                self._pending = {**self._flushing, **self._pending}
                _merge_marks(self._pending_marks, marks)
                self._flushing = {}
            logs.event(log, "index write failed; will retry", rows=len(batch), reason=e, level=40)
            raise ArchiveIndexError(f"the index could not take {len(batch)} rows: {e}") from e
        with self._pending_lock:
            self._flushing = {}

    # --- threads -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()
            except (OSError, EOFError):
                if self._stopping.is_set():
                    return
                continue
            except Exception as e:  # a client with the wrong authkey, for one
                logs.event(log, "index client refused", reason=e)
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    method, args = conn.recv()
                except (EOFError, OSError):
                    return
                try:
                    reply: tuple[Any, ...] = ("ok", self.call(method, *args))
                except DuckpacsError as e:
                    reply = ("error", type(e).__name__, str(e))
                except Exception as e:  # reported to the worker, which fails that request
                    reply = ("error", "ArchiveIndexError", f"{type(e).__name__}: {e}")
                try:
                    conn.send(reply)
                except OSError:
                    return

    def _commit_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except ArchiveIndexError:
                time.sleep(self.flush_interval)  # logged in _flush_locked; retry later


def _merge_marks(into: dict[int, int], marks: dict[int, int]) -> None:
    for pack, offset in marks.items():
        if offset > into.get(pack, -1):
            into[pack] = offset


class _CatalogCalls:
    """The :class:`Catalog` methods as calls to the owner; subclasses say how a call travels."""

    def _call(self, method: str, *args: Any) -> Any:
        raise TypeError(f"{type(self).__name__} must provide _call")

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None:
        result: InstanceRef | None = self._call("lookup", sop_instance_uid)
        return result

    def add(
        self, entries: list[IndexEntry], marks: dict[int, int] | None = None
    ) -> list[InstanceRef | None]:
        result: list[InstanceRef | None] = self._call("add", entries, marks)
        return result

    def replace(self, entry: IndexEntry) -> None:
        self._call("replace", entry)

    def find(
        self,
        level: str,
        query: dict[str, Any],
        return_keys: list[str],
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "find", level, query, return_keys, fuzzy, limit, offset
        )
        return result

    def locate(self, level: str, query: dict[str, Any]) -> list[InstanceRef]:
        result: list[InstanceRef] = self._call("locate", level, query)
        return result


class RemoteCatalog(_CatalogCalls):
    """A :class:`Catalog` whose calls go to the :class:`IndexOwner` (one connection per thread,
    since each association runs in its own thread)."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self.address = address
        self.authkey = authkey
        self._local = threading.local()

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = Client(self.address, family="AF_UNIX", authkey=self.authkey)
            except OSError as e:
                raise ArchiveIndexError(
                    f"cannot reach the index owner at {self.address}: {e}"
                ) from None
            self._local.conn = conn
        return conn

    def reachable(self) -> bool:
        """Whether an owner answers at the address (not just a file left by a killed one)."""
        try:
            self._conn()
        except ArchiveIndexError:
            return False
        return True

    def _call(self, method: str, *args: Any) -> Any:
        conn = self._conn()
        try:
            conn.send((method, args))
            reply = conn.recv()
        except (EOFError, OSError) as e:
            self._local.conn = None
            raise ArchiveIndexError(f"index owner went away during {method}: {e}") from None
        if reply[0] == "ok":
            return reply[1]
        cls = getattr(errors, reply[1], ArchiveIndexError)
        if not (isinstance(cls, type) and issubclass(cls, DuckpacsError)):
            cls = ArchiveIndexError
        raise cls(reply[2])


class LocalCatalog(_CatalogCalls):
    """The owner's own view: calls go through the owner's lock and group commit."""

    def __init__(self, owner: IndexOwner) -> None:
        self._call: Callable[..., Any] = owner.call
