"""The index owner and its clients: one process holds DuckDB, workers reach it over a socket.

DuckDB admits one writing process, so the owner process (``duckpacs serve``'s parent) opens
the index and serves :class:`~duckpacs.archive.types.Catalog` calls on a Unix socket in the
data folder (``multiprocessing.connection`` with a random authkey handed to the workers it
spawns). Adds from concurrent associations are group-committed: a committer thread takes
every entry waiting and hands them to the index in one batch, then answers each caller; so a
C-STORE is answered only after its row is visible to C-FIND, and many stores share one commit.
"""

from __future__ import annotations

import contextlib
import queue
import threading
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


class _PendingAdd:
    def __init__(self, entries: list[IndexEntry]) -> None:
        self.entries = entries
        self.done = threading.Event()
        self.result: list[InstanceRef | None] | BaseException = []


class IndexOwner:
    """Serves a local :class:`Catalog` to worker processes (see the module docstring)."""

    def __init__(self, catalog: Catalog, address: str, authkey: bytes) -> None:
        self.catalog = catalog
        self.address = address
        self._lock = threading.Lock()
        self._adds: queue.Queue[_PendingAdd | None] = queue.Queue()
        self._listener = Listener(address, family="AF_UNIX", authkey=authkey)
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept_loop, name="index-accept", daemon=True),
            threading.Thread(target=self._commit_loop, name="index-commit", daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stopping.set()
        self._adds.put(None)
        with contextlib.suppress(OSError):
            self._listener.close()
        if not self.address.startswith("\0"):
            with contextlib.suppress(OSError):
                Path(self.address).unlink()

    # --- local entry points (the owner's own services use these) ---------------------

    def add(self, entries: list[IndexEntry]) -> list[InstanceRef | None]:
        pending = _PendingAdd(entries)
        self._adds.put(pending)
        pending.done.wait()
        if isinstance(pending.result, BaseException):
            raise pending.result
        return pending.result

    def call(self, method: str, *args: Any) -> Any:
        if method == "add":
            return self.add(*args)
        if method not in _CALLS:
            raise ArchiveIndexError(f"unknown index call {method!r}")
        with self._lock:
            return getattr(self.catalog, method)(*args)

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
        while True:
            first = self._adds.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    more = self._adds.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._adds.put(None)
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[_PendingAdd]) -> None:
        entries = [e for p in batch for e in p.entries]
        try:
            with self._lock:
                results: list[InstanceRef | None] | BaseException = self.catalog.add(entries)
        except BaseException as e:  # every waiter hears about it
            results = e
        start = 0
        for pending in batch:
            if isinstance(results, BaseException):
                pending.result = results
            else:
                pending.result = list(results[start : start + len(pending.entries)])
                start += len(pending.entries)
            pending.done.set()


class RemoteCatalog:
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

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None:
        result: InstanceRef | None = self._call("lookup", sop_instance_uid)
        return result

    def add(self, entries: list[IndexEntry]) -> list[InstanceRef | None]:
        result: list[InstanceRef | None] = self._call("add", entries)
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


class LocalCatalog:
    """The owner's own view: calls go through the owner's lock and group commit."""

    def __init__(self, owner: IndexOwner) -> None:
        self._call: Callable[..., Any] = owner.call

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None:
        result: InstanceRef | None = self._call("lookup", sop_instance_uid)
        return result

    def add(self, entries: list[IndexEntry]) -> list[InstanceRef | None]:
        result: list[InstanceRef | None] = self._call("add", entries)
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
