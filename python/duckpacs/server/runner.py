"""``duckpacs serve``: the index owner process and its DIMSE worker processes.

The parent process owns the DuckDB index (serving it to workers over a Unix socket, see
:mod:`duckpacs.archive.ipc`) and the HTTP listener. ``archive.workers`` worker processes
(started with *spawn*, so no locks or threads are inherited) each open their own store
writer and listen on the same DIMSE port with ``SO_REUSEPORT``; the kernel hands every new
association to one of them. See "DIMSE serving" in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import duckpacs
from duckpacs import logs
from duckpacs.archive import backends, ipc
from duckpacs.archive.facade import Archive
from duckpacs.config import Settings
from duckpacs.errors import DuckpacsError, NetworkError
from duckpacs.server.http import HttpServer
from duckpacs.web.archive_reader import FacadeReader

log = logs.get("serve")
_WORKER_START_TIMEOUT = 60.0
_MAX_RESTARTS = 5


def reserve_port(bind: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket to learn the port workers will share.

    With ``port`` 0 the kernel picks one; holding the socket keeps it ours until shutdown.
    Raises OSError when anything (another archive included) already holds the port.
    """
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    if port:
        # SO_REUSEPORT would let a second archive share the port silently: first make sure
        # nobody holds it, with an ordinary bind.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bind, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((bind, port))
    except OSError:
        sock.close()
        raise
    return sock


def _worker_main(
    settings: Settings,
    address: str,
    authkey: bytes,
    worker_id: int,
    port: int,
    share: int,
    ready: Any,
) -> None:
    """Entry point of a worker process: own store writer, remote catalog, DIMSE listener."""
    from duckpacs.server.dimse import DimseServer

    logs.setup(settings["archive.log_level"])
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    try:
        store = backends.PackStore(settings.data_dir, worker_id)
        catalog = ipc.RemoteCatalog(address, authkey)
        archive = Archive(store, backends.describe, catalog, settings["archive.on_conflict"])
        server = DimseServer(settings, archive, share=share)
        server.start((settings["dimse.bind"], port))
    except (DuckpacsError, OSError) as e:
        ready.send((worker_id, f"{type(e).__name__}: {e}"))
        ready.close()
        return
    ready.send((worker_id, ""))
    ready.close()
    while not stopping.wait(0.5):
        if os.getppid() == 1:  # the owner died without telling us
            break
    server.stop()
    # Every record is settled now: move this writer's marks to its packs' ends, so the
    # next start has nothing of ours to read again.
    with contextlib.suppress(DuckpacsError, OSError):
        catalog.add([], store.low_water())
    store.close()


class Service:
    """Everything ``serve`` runs, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.http: HttpServer | None = None
        self.owner: ipc.IndexOwner | None = None
        self.index: backends.IndexCatalog | None = None
        self.workers: list[BaseProcess] = []
        self._port_socket: socket.socket | None = None
        self._key_file: Path | None = None
        self._context = multiprocessing.get_context("spawn")
        self.stopping = threading.Event()
        self._authkey: bytes | None = None
        self._port = 0
        self._restarts: dict[int, int] = {}
        self._web_store: backends.PackStore | None = None

    def catalog(self) -> ipc.LocalCatalog:
        """The index as the owner's own services (HTTP, DICOMweb) must read it: through the
        owner, so rows acknowledged to DIMSE but not yet flushed are visible too."""
        if self.owner is None:
            raise NetworkError("the archive is not running")
        return ipc.LocalCatalog(self.owner)

    def status(self) -> dict[str, Any]:
        return {
            "version": duckpacs.__version__,
            "ae_title": self.settings.ae_title,
            "data_dir": str(self.settings.data_dir),
            "uptime_s": round(time.time() - self.started_at, 1),
            "workers": sum(1 for w in self.workers if w.is_alive()),
        }

    def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.index = backends.IndexCatalog.open(s.data_dir, s["archive.on_conflict"])
        authkey = secrets.token_bytes(32)
        try:
            self.owner = ipc.IndexOwner(self.index, ipc.socket_path(s.data_dir), authkey)
            self._port_socket = reserve_port(s["dimse.bind"], s["dimse.port"])
            self.http = HttpServer(
                s["http.bind"], s["http.port"], self.status,
                settings=s, archive=self._web_reader(),
            )  # fmt: skip
        except OSError as e:
            self.stop()
            reason = e.strerror or str(e)
            raise NetworkError(f"cannot listen: {reason} (is another archive running?)") from e
        self.owner.start()
        self._key_file = backends.write_authkey(s.data_dir, authkey)
        port = int(self._port_socket.getsockname()[1])
        self._start_workers(authkey, port)
        self.http.start()
        http_host, http_port = self.http.address
        logs.event(log, "duckpacs started", version=duckpacs.__version__, data=s.data_dir)
        logs.event(
            log,
            "DIMSE listening",
            ae_title=s.ae_title,
            addr=f"{s['dimse.bind']}:{port}",
            workers=len(self.workers),
        )
        log.info("press Ctrl-C (or send SIGTERM) to stop")
        # Last: scripts (and the tests) wait for this line before talking to us.
        logs.event(log, "HTTP listening", url=f"http://{http_host}:{http_port}/")

    def _web_reader(self) -> FacadeReader:
        """DICOMweb's view of the archive, in this (the owner's) process: queries through
        :meth:`catalog`, STOW-RS through the same :class:`Archive` ingest as C-STORE with a
        store writer of its own (the id after the DIMSE workers'), frames by location."""
        count = int(self.settings["archive.workers"])
        self._web_store = backends.PackStore(self.settings.data_dir, count)
        archive = Archive(
            self._web_store, backends.describe, self.catalog(), self.settings["archive.on_conflict"]
        )
        return FacadeReader(
            archive, self._web_store.get_frame,
            lookup=archive.catalog.lookup, record_meta=self._web_store.meta,
        )  # fmt: skip

    def _spawn(self, worker_id: int) -> tuple[BaseProcess, Any]:
        """Start one worker; its readiness comes back on a pipe of its own (a shared queue
        could be left locked by a worker killed mid-write)."""
        assert self.owner is not None and self._authkey is not None
        count = int(self.settings["archive.workers"])
        reader, writer = self._context.Pipe(duplex=False)
        args = (
            self.settings, self.owner.address, self._authkey, worker_id, self._port, count,
            writer,
        )  # fmt: skip
        process = self._context.Process(
            target=_worker_main, args=args, name=f"duckpacs-worker-{worker_id}", daemon=True
        )
        process.start()
        writer.close()
        return process, reader

    def _wait_ready(self, worker_id: int, process: BaseProcess, reader: Any) -> None:
        deadline = time.monotonic() + _WORKER_START_TIMEOUT
        try:
            while not reader.poll(0.2):
                if self.stopping.is_set():
                    return
                if not process.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    raise NetworkError(f"DIMSE worker {worker_id} did not start")
            _worker_id, error = reader.recv()
        except EOFError:
            self.stop()
            raise NetworkError(f"DIMSE worker {worker_id} exited while starting") from None
        finally:
            reader.close()
        if error:
            self.stop()
            raise NetworkError(f"DIMSE worker {worker_id} could not start: {error}")

    def _start_workers(self, authkey: bytes, port: int) -> None:
        self._authkey, self._port = authkey, port
        count = int(self.settings["archive.workers"])
        started = [self._spawn(worker_id) for worker_id in range(count)]
        self.workers = [process for process, _reader in started]
        for worker_id, (process, reader) in enumerate(started):
            self._wait_ready(worker_id, process, reader)

    def replace_dead_workers(self) -> int:
        """Respawn workers that died (a crash in one association must not end the service);
        returns how many are alive. Gives up on a worker after 5 restarts."""
        for worker_id, process in enumerate(self.workers):
            if process.is_alive() or self.stopping.is_set():
                continue
            restarts = self._restarts.get(worker_id, 0)
            if restarts >= _MAX_RESTARTS:
                continue
            self._restarts[worker_id] = restarts + 1
            logs.event(
                log, "DIMSE worker died; restarting", worker=worker_id,
                exitcode=process.exitcode, restart=restarts + 1, level=30,
            )  # fmt: skip
            replacement, reader = self._spawn(worker_id)
            self.workers[worker_id] = replacement
            self._wait_ready(worker_id, replacement, reader)
        return sum(1 for w in self.workers if w.is_alive())

    def stop(self) -> None:
        for process in self.workers:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for process in self.workers:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        self.workers.clear()
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self._web_store is not None:
            self._web_store.close()
            self._web_store = None
        if self._key_file is not None:
            self._key_file.unlink(missing_ok=True)
            self._key_file = None
        if self.owner is not None:
            self.owner.stop()
            self.owner = None
        if self.index is not None:
            self.index.close()
            self.index = None
        if self._port_socket is not None:
            self._port_socket.close()
            self._port_socket = None


def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    service = Service(settings)
    stopping = service.stopping

    def request_stop(signum: int, _frame: Any) -> None:
        logs.event(log, "stopping", signal=signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        service.start()
        while not stopping.wait(0.5):
            if not service.replace_dead_workers():
                logs.event(log, "every DIMSE worker has exited; stopping", level=40)
                break
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
