"""``duckpacs serve``: start every listener, log where things are, stop cleanly on a signal."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import duckpacs
from duckpacs import logs
from duckpacs.config import Settings
from duckpacs.errors import NetworkError
from duckpacs.server.dimse import DimseServer
from duckpacs.server.http import HttpServer

log = logs.get("serve")


class Archive:
    """Everything ``serve`` runs, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.dimse = DimseServer(settings)
        self.http: HttpServer | None = None

    def status(self) -> dict[str, Any]:
        return {
            "version": duckpacs.__version__,
            "ae_title": self.settings.ae_title,
            "data_dir": str(self.settings.data_dir),
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            dimse_host, dimse_port = self.dimse.start()
            self.http = HttpServer(s["http.bind"], s["http.port"], self.status)
        except OSError as e:
            self.stop()
            reason = e.strerror or str(e)
            raise NetworkError(f"cannot listen: {reason} (is another archive running?)") from e
        self.http.start()
        http_host, http_port = self.http.address
        logs.event(log, "duckpacs started", version=duckpacs.__version__, data=s.data_dir)
        logs.event(log, "DIMSE listening", ae_title=s.ae_title, addr=f"{dimse_host}:{dimse_port}")
        logs.event(log, "HTTP listening", url=f"http://{http_host}:{http_port}/")
        log.info("press Ctrl-C (or send SIGTERM) to stop")

    def stop(self) -> None:
        self.dimse.stop()
        if self.http is not None:
            self.http.stop()
            self.http = None


def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM."""
    archive = Archive(settings)
    stopping = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        logs.event(log, "stopping", signal=signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        archive.start()
        while not stopping.wait(0.5):
            pass
    finally:
        archive.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
