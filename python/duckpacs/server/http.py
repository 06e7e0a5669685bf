"""The HTTP listener: uvicorn serving the web application in a background thread.

It always serves the archive's status as JSON at ``/api/status``. Given the settings it
serves the whole web layer (:mod:`duckpacs.web`: DICOMweb under ``/dicom-web``, WADO-URI,
the viewer at ``/``), with DICOMweb mounted once an archive reader is attached. HTTPS is
on when ``http.tls_cert`` and ``http.tls_key`` are configured.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from duckpacs import logs
from duckpacs.errors import NetworkError

if TYPE_CHECKING:
    from duckpacs.config import Settings
    from duckpacs.web.reader import ArchiveReader

log = logs.get("http")


# Seconds a client may take to send a request's headers: a slow-loris client trickling them
# a byte at a time is cut off instead of holding its connection (and a descriptor) forever.
HEADER_TIMEOUT = 10.0
# Bytes a request's headers may take (with whatever arrives in the same reads): llhttp sets
# no bound, and uvicorn would keep collecting headers until memory runs out.
MAX_HEADER_BYTES = 1 << 20


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers, counted from
    the connection (or the request's first byte) to the end of its headers. uvicorn itself
    only times out idle keep-alive connections."""

    header_timeout = HEADER_TIMEOUT

    def connection_made(self, transport: Any) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._header_bytes = 0
            self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._disarm()
                self.transport.close()
                return
        super().data_received(data)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def _protocol(header_timeout: float) -> type[HeaderDeadline]:
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout": header_timeout})


def _status_only_app(status: Callable[[], dict[str, Any]]) -> Starlette:
    def status_route(request: Request) -> Response:
        return JSONResponse(status())

    return Starlette(routes=[Route("/api/status", status_route)])


def _route_uvicorn_logs() -> None:
    """uvicorn's own warnings and errors go through our handlers, in our one-line format."""
    ours = logging.getLogger(logs.LOGGER_NAME)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = ours.handlers
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def check_exposure(bind: str, anonymous: str, users: int, allowed: bool) -> None:
    """Refuse to serve every patient's images to anyone on the network: a non-loopback
    address with anonymous access and no user to log in as (``http.allow_exposed`` says
    the operator means it, behind a firewall of their own, say)."""
    if allowed or users or anonymous != "any":
        return
    try:
        loopback = ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NetworkError(
            f"refusing to serve HTTP on {bind} with http.anonymous = any and no user: anyone "
            "on the network could read every study; add a user (duckpacs user add), set "
            "http.anonymous = off, bind to 127.0.0.1, or set http.allow_exposed = true"
        )


def http_exposure(settings: Settings, bind: str | None = None) -> None:
    """:func:`check_exposure` for the configuration (and the users file it names)."""
    from duckpacs.web.auth import USERS_FILENAME, UserStore

    users = UserStore(settings.data_dir / USERS_FILENAME).names()
    check_exposure(
        bind or settings["http.bind"],
        settings["http.anonymous"],
        len(users),
        settings["http.allow_exposed"],
    )


def _listen(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it (Linux): a streamed response writes its headers and its
    # body separately, and Nagle would hold the body for the client's delayed ACK (~40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((bind, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """uvicorn in a thread; :attr:`address` is known as soon as it is constructed."""

    def __init__(
        self,
        bind: str,
        port: int,
        status: Callable[[], dict[str, Any]],
        *,
        settings: Settings | None = None,
        archive: ArchiveReader | None = None,
        control: Any = None,
    ) -> None:
        tls: dict[str, Any] = {}
        header_timeout = HEADER_TIMEOUT
        if settings is None:
            app: Any = _status_only_app(status)
        else:
            from duckpacs.web.app import WebConfig, create_app

            http_exposure(settings, bind)
            cert, key = settings["http.tls_cert"], settings["http.tls_key"]
            if bool(cert) != bool(key):
                raise NetworkError("HTTPS needs both http.tls_cert and http.tls_key")
            if cert:
                tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
            config = WebConfig(
                data_dir=settings.data_dir,
                anonymous=settings["http.anonymous"],
                cors_origins=list(settings["http.cors_origins"]),
                https=bool(cert),
                max_body=settings["http.max_body"],
                session_ttl=settings["http.session_ttl"],
                token_ttl=settings["http.token_ttl"],
            )
            app = create_app(archive, config, status, control=control)
            header_timeout = float(settings["http.header_timeout"])
        self.app = app
        self.scheme = "https" if tls else "http"
        self._sock = _listen(bind, port)
        uv_config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            http=_protocol(header_timeout),
            lifespan="off",
            timeout_keep_alive=30,
            **tls,
        )
        self._server = uvicorn.Server(uv_config)
        _route_uvicorn_logs()
        self._failure = ""
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as e:  # noqa: BLE001 (reported by start() in the caller's thread)
            self._failure = str(e) or type(e).__name__

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                raise NetworkError("the HTTP server did not start within 10 s")
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise NetworkError(f"the HTTP server failed to start: {self._failure or 'see the log'}")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._sock.close()
        context = getattr(getattr(self.app, "state", None), "context", None)
        if context is not None:
            context.audit.close()
