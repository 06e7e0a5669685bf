"""``duckpacs serve``: one process running the archive, its DIMSE listener and HTTP.

The process opens the archive for writing (:class:`~duckpacs.archive.facade.Archive`: the
index caught up with the store, the one write path, the index committer), then starts the
DIMSE listener and the HTTP server over that same archive, and a local socket through which
command-line tools query it (:mod:`duckpacs.archive.ipc`); while nothing arrives, the
store's arrival encoding is densified in the background (:mod:`duckpacs.server.densify`).
See "DIMSE serving" in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from typing import Any

import duckpacs
from duckpacs import logs
from duckpacs.archive import ipc
from duckpacs.archive.facade import Archive
from duckpacs.config import Settings
from duckpacs.errors import ConfigError, NetworkError
from duckpacs.policy.service import PolicyService
from duckpacs.routing.engine import Router
from duckpacs.server.control import Control
from duckpacs.server.densify import Densifier
from duckpacs.server.http import HttpServer, http_exposure
from duckpacs.server.uploader import Uploader
from duckpacs.web.archive_reader import FacadeReader

log = logs.get("serve")


class Service:
    """Everything ``serve`` runs, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.archive: Archive | None = None
        self.densifier: Densifier | None = None
        self.uploader: Uploader | None = None
        self.http: HttpServer | None = None
        self.dimse: Any = None
        self.local: ipc.LocalService | None = None
        self.router: Router | None = None
        self.policy: PolicyService | None = None
        self.stopping = threading.Event()
        self.dimse_address: tuple[str, int] | None = None
        self.hl7: Any = None

    def status(self) -> dict[str, Any]:
        return {
            "version": duckpacs.__version__,
            "ae_title": self.settings.ae_title,
            "data_dir": str(self.settings.data_dir),
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def start(self) -> None:
        from duckpacs.net.scp import DimseListener

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        http_exposure(s)  # before anything opens: one clear line, nothing to undo
        self.archive = Archive.open(s.data_dir, on_conflict=s["archive.on_conflict"])
        if s["store.backend"] == "s3":
            # Packs are written dense (layout.open_store): nothing to densify, and a pack
            # densifying keeps open would never be uploaded.
            self.uploader = Uploader(
                self.archive,
                seal_seconds=float(s["store.seal_seconds"]),
                max_pending_bytes=int(s["store.max_pending_bytes"]),
                local_bytes=int(s["store.local_bytes"]),
            )
            self.uploader.start()
        else:
            self.densifier = Densifier(self.archive)
            self.densifier.start()
        try:
            # Before the listeners: the rules' cursor is placed before any new arrival, and a
            # full archive refuses from the first association on.
            self.router = Router(s, self.archive)
            self.router.start()
            self.policy = PolicyService(s, self.archive, self.router.queue.pending_studies)
            self.policy.start()
        except BaseException:
            self.stop()
            raise
        control = Control(s, self.archive, self.router, self.policy)
        try:
            self.dimse = DimseListener(s, self.archive)
            self.dimse_address = self.dimse.start()
            self.http = HttpServer(
                s["http.bind"], s["http.port"], self.status, settings=s,
                archive=self._web_reader(), control=control,
            )  # fmt: skip
        except OSError as e:
            self.stop()
            reason = e.strerror or str(e)
            raise NetworkError(f"cannot listen: {reason} (is another archive running?)") from e
        except ConfigError:
            self.stop()
            raise
        self.local = ipc.LocalService(
            self.archive, s.data_dir, secrets.token_bytes(32),
            pause_rewrites=self.densifier.pause if self.densifier else None,
        )  # fmt: skip
        self.local.start()
        if s["hl7.port"]:
            self._start_hl7()
        self.http.start()
        http_host, http_port = self.http.address
        logs.event(log, "duckpacs started", version=duckpacs.__version__, data=s.data_dir)
        if s["index.backend"] == "postgres":
            from duckpacs.index import backend

            logs.event(log, "index on PostgreSQL", dsn=s["index.dsn"], node=backend.node())
        host, port = self.dimse_address
        logs.event(log, "DIMSE listening", ae_title=s.ae_title, addr=f"{host}:{port}")
        if self.dimse.tls_address is not None:
            tls_host, tls_port = self.dimse.tls_address
            logs.event(log, "DIMSE TLS listening", addr=f"{tls_host}:{tls_port}")
        log.info("press Ctrl-C (or send SIGTERM) to stop")
        # Last: scripts (and the tests) wait for this line before talking to us.
        logs.event(log, "HTTP listening", url=f"http://{http_host}:{http_port}/")

    def _start_hl7(self) -> None:
        from duckpacs.hl7.listener import Hl7Listener
        from duckpacs.worklist.store import Worklist

        s = self.settings
        self.hl7 = Hl7Listener(Worklist.from_settings(s), s.ae_title, self.archive)
        try:
            host, port = self.hl7.start(s["hl7.bind"], s["hl7.port"])
        except OSError as e:
            self.stop()
            raise NetworkError(f"cannot listen for HL7: {e.strerror or e}") from e
        logs.event(log, "HL7 listening", addr=f"{host}:{port}")

    def _web_reader(self) -> FacadeReader:
        """DICOMweb's view of the archive: the same Archive as DIMSE (STOW-RS through the one
        write path), frames read straight from the store's frame chunks."""
        archive = self.archive
        assert archive is not None
        return FacadeReader(
            archive,
            archive.get_frame,
            lookup=archive.lookup,
            record_meta=archive.meta,
            header=archive.header,
        )

    def stop(self) -> None:
        if self.hl7 is not None:
            self.hl7.stop()
            self.hl7 = None
        if self.dimse is not None:
            # Stop accepting; associations in flight finish (or are aborted after the grace).
            self.dimse.stop(float(self.settings["dimse.shutdown_grace"]))
            self.dimse = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.local is not None:
            self.local.stop()
            self.local = None
        if self.densifier is not None:
            self.densifier.stop()
            self.densifier = None
        if self.uploader is not None:
            self.uploader.stop()
            self.uploader = None
        if self.policy is not None:
            self.policy.stop()
            self.policy = None
        if self.router is not None:
            self.router.stop()
            self.router = None
        if self.archive is not None:
            self.archive.close()
            self.archive = None


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
            pass
    finally:
        service.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
