"""The HTTP listener. For now it serves the archive's status as JSON at ``/api/status``;
DICOMweb and the web viewer mount here as they land."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from duckpacs import logs

log = logs.get("http")


class HttpServer:
    """A threaded HTTP server whose routes are ``path -> callable returning a JSON value``."""

    def __init__(self, bind: str, port: int, status: Callable[[], dict[str, Any]]) -> None:
        routes: dict[str, Callable[[], Any]] = {"/api/status": status}
        self._httpd = ThreadingHTTPServer((bind, port), _make_handler(routes))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _make_handler(routes: dict[str, Callable[[], Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "duckpacs"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                self._send(404, {"error": f"no such resource: {self.path}"})
            else:
                self._send(200, route())

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logs.event(log, "request", client=self.client_address[0], line=format % args)

    return Handler
