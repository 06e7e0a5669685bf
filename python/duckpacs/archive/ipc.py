"""The running server's local socket: how command-line tools query an archive that
``duckpacs serve`` holds open.

DuckDB admits one writing process, and while ``serve`` runs it is that process. Tools such
as ``duckpacs find`` and ``duckpacs send`` therefore ask it over a Unix socket in the data
folder (``multiprocessing.connection`` with a random authkey in ``DATA/index.key``, readable
by the archive's owner only). Reads cross it (``lookup``, ``find``, ``locate``), and the
trash's calls (``discard``, ``restore``, ``trash_list``) and corrections (``correct``),
which the server's own
:class:`~duckpacs.archive.facade.Archive` carries out: every write goes through it.

``backup_begin`` / ``backup_end`` hold the server's pack rewriting (the densifier) for a
backup (:mod:`duckpacs.backup`). The hold belongs to the connection: a backup that is
killed lets go of it when its socket closes, so densifying never stays paused.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from duckpacs import errors, logs
from duckpacs.archive.layout import KEY_FILENAME
from duckpacs.archive.types import InstanceRef
from duckpacs.errors import ArchiveIndexError, DuckpacsError

log = logs.get("index")

_CALLS = ("lookup", "find", "locate", "trash_list")
_TRASH_CALLS = ("discard", "restore", "correct")  # (..., user, source): who asks
_HOLD_CALLS = ("backup_begin", "backup_end")  # per connection (see the module docstring)
# Unix socket paths are limited to 107 bytes (sun_path).
_MAX_SOCKET_PATH = 100


def socket_path(data_dir: Path) -> str:
    """Where the server listens: ``DATA/index.sock``, or an abstract socket if DATA is deep."""
    path = str(Path(data_dir) / "index.sock")
    if len(path) <= _MAX_SOCKET_PATH:
        return path
    return "\0duckpacs-" + str(abs(hash(path)))


class LocalService:
    """Answers read calls from local tools with the server's archive (see the module)."""

    def __init__(
        self,
        archive: Any,
        data_dir: Path,
        authkey: bytes,
        pause_rewrites: Callable[[], Callable[[], None]] | None = None,
    ) -> None:
        self.archive = archive
        # Holds pack rewriting until the returned release is called (None: nothing rewrites).
        self.pause_rewrites = pause_rewrites
        self.address = socket_path(data_dir)
        self._key_file = Path(data_dir) / KEY_FILENAME
        if not self.address.startswith("\0"):
            # We hold the index's write lock, so no other server of this archive is alive:
            # a socket file left here is a killed server's, and would make the bind fail.
            with contextlib.suppress(FileNotFoundError):
                Path(self.address).unlink()
        self._listener = Listener(self.address, family="AF_UNIX", authkey=authkey)
        fd = os.open(self._key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(authkey)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="local-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._key_file.unlink(missing_ok=True)
        if not self.address.startswith("\0"):
            with contextlib.suppress(OSError):
                Path(self.address).unlink()

    def call(self, method: str, *args: Any) -> Any:
        if method in _TRASH_CALLS:
            *rest, user, source = args
            return getattr(self.archive, method)(*rest, user=user, source=source)
        if method not in _CALLS:
            raise ArchiveIndexError(f"unknown call {method!r}")
        return getattr(self.archive, method)(*args)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn = self._listener.accept()
            except (OSError, EOFError):
                if self._stopping.is_set():
                    return
                continue
            except Exception as e:  # a client with the wrong authkey, for one
                logs.event(log, "local client refused", reason=e)
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _hold(self, method: str, holds: list[Callable[[], None]]) -> dict[str, Any]:
        """backup_begin / backup_end for one connection's ``holds``."""
        if method == "backup_begin":
            if self.pause_rewrites is not None:
                holds.append(self.pause_rewrites())
            return {"rewrites_paused": self.pause_rewrites is not None}
        while holds:
            holds.pop()()
        return {}

    def _serve(self, conn: Connection) -> None:
        holds: list[Callable[[], None]] = []
        try:
            self._answer(conn, holds)
        finally:
            while holds:  # the client went away (or was killed) holding them
                holds.pop()()

    def _answer(self, conn: Connection, holds: list[Callable[[], None]]) -> None:
        with conn:
            while True:
                try:
                    method, args = conn.recv()
                except (EOFError, OSError):
                    return
                try:
                    if method in _HOLD_CALLS:
                        result = self._hold(method, holds)
                    else:
                        result = self.call(method, *args)
                    reply: tuple[Any, ...] = ("ok", result)
                except DuckpacsError as e:
                    reply = ("error", type(e).__name__, str(e))
                except Exception as e:  # reported to the client, which fails that call
                    reply = ("error", "ArchiveIndexError", f"{type(e).__name__}: {e}")
                try:
                    conn.send(reply)
                except OSError:
                    return


class RemoteArchive:
    """The running server's archive as a local tool sees it: ``lookup``, ``find``,
    ``locate`` (one connection per thread)."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self.address = address
        self.authkey = authkey
        self._local = threading.local()

    def _conn(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = Client(self.address, family="AF_UNIX", authkey=self.authkey)
            except (OSError, AuthenticationError) as e:
                raise ArchiveIndexError(
                    f"cannot reach the running server at {self.address}: {e}"
                ) from None
            self._local.conn = conn
        return conn

    def reachable(self) -> bool:
        """Whether a server answers at the address (not just a file left by a killed one)."""
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
            raise ArchiveIndexError(f"the server went away during {method}: {e}") from None
        if reply[0] == "ok":
            return reply[1]
        cls = getattr(errors, reply[1], ArchiveIndexError)
        if not (isinstance(cls, type) and issubclass(cls, DuckpacsError)):
            cls = ArchiveIndexError
        raise cls(reply[2])

    def lookup(self, sop_instance_uid: str) -> InstanceRef | None:
        result: InstanceRef | None = self._call("lookup", sop_instance_uid)
        return result

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

    def discard(
        self, level: str, query: dict[str, Any], *, user: str, source: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call("discard", level, query, user, source)
        return result

    def restore(self, batch_id: str, *, user: str, source: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("restore", batch_id, user, source)
        return result

    def trash_list(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("trash_list")
        return result

    def correct(
        self, level: str, query: dict[str, Any], changes: dict[str, str],
        kind: str = "modify", *, user: str, source: str,
    ) -> dict[str, Any]:  # fmt: skip
        result: dict[str, Any] = self._call("correct", level, query, changes, kind, user, source)
        return result

    def backup_begin(self) -> dict[str, Any]:
        """Hold the server's pack rewriting until :meth:`backup_end` or this connection
        closes (see the module docstring)."""
        result: dict[str, Any] = self._call("backup_begin")
        return result

    def backup_end(self) -> None:
        self._call("backup_end")

    def close(self) -> None:
        """Close this thread's connection (which also ends its holds)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
