"""The web application: DICOMweb, the viewer's pages and its small JSON API, behind
authentication, audit and CORS.

Middleware order, outermost first: CORS (so every answer, errors and 401s included, carries
the CORS headers and preflight needs no credentials), the browser protection headers,
authentication + CSRF + audit, the error guard that turns any exception into a JSON body with
the right status, and the request body limit (``http.max_body``, 413).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pydicom.config
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from duckpacs import logs
from duckpacs.errors import DuckpacsError, IndexUnavailableError, QueryError
from duckpacs.web import auth
from duckpacs.web.admin import Admin
from duckpacs.web.audit import AUDIT_FILENAME, AuditLog
from duckpacs.web.dicomweb import DicomWeb
from duckpacs.web.errors import HttpError
from duckpacs.web.reader import ArchiveReader
from duckpacs.web.study_api import StudyApi

log = logs.get("web")
PATIENT_DATA = re.compile(r"^/(dicom-web/|wado|api/studies/|api/patients/)")
UID_PATH = re.compile(r"/(studies|series|instances)/([0-9.]+)")


@dataclass
class WebConfig:
    """What the web layer needs from the configuration."""

    data_dir: Path
    anonymous: str = "loopback"
    cors_origins: list[str] = field(default_factory=list)
    https: bool = False
    max_body: int = 0  # 0: no limit
    session_ttl: int = auth.SESSION_TTL
    token_ttl: int = auth.TOKEN_TTL


@dataclass
class WebContext:
    archive: ArchiveReader | None
    authenticator: auth.Authenticator
    audit: AuditLog
    config: WebConfig


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class ErrorGuard:
    """Any exception becomes a JSON error; HttpError keeps its status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as e:  # noqa: BLE001 (the guard of last resort)
            if started:
                logs.event(log, "response aborted", path=scope.get("path"), error=repr(e))
                raise
            response = _error_response(e, scope)
            await response(scope, receive, send)


def _error_response(e: Exception, scope: Scope) -> Response:
    if isinstance(e, HttpError):
        return _json_error(e.status, e.message, e.headers)
    if isinstance(e, QueryError):
        # A matching value the index cannot read (a date of "0", a bad range): the
        # client's error, said as the index says it.
        return _json_error(400, str(e))
    if isinstance(e, IndexUnavailableError):
        # The shared index (PostgreSQL) is down or slow: try again shortly (RFC 9110 15.6.4).
        logs.event(log, "index unavailable", path=scope.get("path"), error=str(e))
        return _json_error(503, str(e), {"Retry-After": "5"})
    if isinstance(e, DuckpacsError):
        logs.event(log, "archive error", path=scope.get("path"), error=str(e))
        return _json_error(500, str(e))
    logs.event(log, "internal error", path=scope.get("path"), error=repr(e))
    return _json_error(500, f"internal error: {type(e).__name__}")


async def _starlette_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method) as JSON too."""
    status = getattr(exc, "status_code", 500)
    headers = getattr(exc, "headers", None)
    return _json_error(status, str(getattr(exc, "detail", "")) or "error", headers)


# The viewer's pages load their scripts and styles from /static only: no inline code, no
# eval, nothing framed (clickjacking), images also from data: and blob: URLs (rendered
# frames). PS3.18 does not define these; they are the browser's side of protecting PHI.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer (HSTS too under HTTPS)."""

    def __init__(self, app: ASGIApp, https: bool = False) -> None:
        self.app = app
        self.headers = list(SECURITY_HEADERS)
        if https:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, add_headers)


class BodyLimit:
    """413 for a request body over ``limit`` bytes: at once from its Content-Length, or as
    soon as a chunked body passes it (the handler reading it gets the error)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        too_big = HttpError(413, f"a request body holds at most {self.limit} bytes (http.max_body)")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or len(value) > 19:
                    raise HttpError(400, "Content-Length: expected a number of bytes")
                if int(value) > self.limit:
                    raise too_big
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_big
            return message

        await self.app(scope, counting_receive, send)


class AuthAudit:
    """Authenticates every request and appends patient-data accesses to the audit log."""

    def __init__(self, app: ASGIApp, context: WebContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        client = request.client.host if request.client else None
        try:
            principal = self.context.authenticator.authenticate(
                request.headers, request.cookies, client
            )
        except auth.Throttled as e:
            self._audit(request, None, 429, client)
            response = _json_error(429, str(e), {"Retry-After": str(e.retry_after)})
            await response(scope, receive, send)
            return
        path = scope["path"]
        public = path in ("/", "/admin", "/api/login", "/api/status") or path.startswith("/static/")
        if principal is None and not public:
            # No challenge for the UI's own requests: it would pop up the browser's dialog.
            challenge = {"WWW-Authenticate": 'Basic realm="duckpacs", charset="UTF-8"'}
            ui = request.headers.get("x-requested-with") == "duckpacs"
            response = _json_error(401, "authentication required", None if ui else challenge)
            self._audit(request, None, 401, client)
            await response(scope, receive, send)
            return
        if (
            principal is not None
            and principal.method == "session"
            and request.method in UNSAFE_METHODS
            and scope["path"] != "/api/logout"  # ending one's own session harms nothing
            and request.headers.get("x-requested-with") != "duckpacs"
        ):
            # CSRF: a cross-site form or fetch cannot add this header without a CORS
            # preflight we never grant; the viewer's own requests always carry it.
            self._audit(request, principal, 403, client)
            response = _json_error(403, "state-changing requests need X-Requested-With: duckpacs")
            await response(scope, receive, send)
            return
        scope["duckpacs.principal"] = principal
        audited = False

        async def capture(message: Message) -> None:
            nonlocal audited
            if message["type"] == "http.response.start" and not audited:
                # Recorded before the first byte leaves: the trail never lags the data.
                audited = True
                self._audit(request, principal, int(message["status"]), client)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if not audited:
                self._audit(request, principal, 500, client)

    def _audit(
        self, request: Request, principal: auth.Principal | None, status: int, client: str | None
    ) -> None:
        path = request.url.path
        if not PATIENT_DATA.match(path):
            return
        uids = {kind: uid for kind, uid in UID_PATH.findall(path)}
        params = request.query_params
        self.context.audit.record(
            user=principal.name if principal else "-",
            auth=principal.method if principal else "none",
            client=client,
            method=request.method,
            path=path,
            query=request.url.query,
            status=status,
            study=uids.get("studies") or params.get("studyUID"),
            series=uids.get("series") or params.get("seriesUID"),
            instance=uids.get("instances") or params.get("objectUID"),
        )


def _static_dir() -> Path:
    return Path(str(resources.files("duckpacs.web") / "static"))


def create_app(
    archive: ArchiveReader | None,
    config: WebConfig,
    status: Callable[[], dict[str, Any]] | None = None,
    control: Any = None,
) -> Starlette:
    """The ASGI application. Without an archive only the status, login and UI are served;
    with the server's ``control`` (:class:`duckpacs.server.control.Control`) the admin page
    too (:mod:`duckpacs.web.admin`)."""
    # Archived files are served as they are: pydicom must not warn (or, under a strict
    # warnings filter, fail) on values that break a VR's rules when it reads or re-encodes them.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    users = auth.UserStore(config.data_dir / auth.USERS_FILENAME)
    signer = auth.Signer(config.data_dir / "http-secret")
    audit = AuditLog(config.data_dir / AUDIT_FILENAME)

    def lockout(kind: str, key: str, seconds: int) -> None:
        audit.event("lockout", **{"user" if kind == "user" else "from": key}, seconds=seconds)
        logs.event(log, "login lockout", kind=kind, key=key, seconds=seconds)

    authenticator = auth.Authenticator(
        users,
        signer,
        config.anonymous,
        session_ttl=config.session_ttl,
        token_ttl=config.token_ttl,
        on_lockout=lockout,
    )
    context = WebContext(archive=archive, authenticator=authenticator, audit=audit, config=config)
    api = _Api(context, status or (lambda: {}))
    routes: list[Route | Mount] = api.routes()
    if archive is not None:
        spool_dir = config.data_dir / "http-spool"  # on the archive's disk, not in /tmp
        routes.extend(DicomWeb(archive, spool_dir=spool_dir).routes())
        routes.append(Route("/api/studies/{study}/archive.zip", api.study_zip))
        routes.extend(StudyApi(archive).routes())
    if control is not None:
        routes.extend(Admin(control).routes())
    routes.append(Mount("/static", app=StaticFiles(directory=_static_dir()), name="static"))
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            expose_headers=[
                "Content-Type",
                "Content-Length",
                "Content-Location",
                "X-VOI-Window",
                "X-Decoded-Photometric",
            ],
            allow_credentials=bool(config.cors_origins) and "*" not in config.cors_origins,
        ),
        Middleware(SecurityHeaders, https=config.https),
        Middleware(AuthAudit, context=context),
        Middleware(ErrorGuard),
        Middleware(BodyLimit, limit=config.max_body),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={StarletteHTTPException: _starlette_error},
    )
    app.state.context = context
    return app


class _Api:
    """The UI's pages and JSON endpoints (not DICOMweb)."""

    def __init__(self, context: WebContext, status: Callable[[], dict[str, Any]]) -> None:
        self.context = context
        self.status_fn = status

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.index),
            Route("/api/status", self.status),
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/logout", self.logout, methods=["POST"]),
            Route("/api/me", self.me),
            Route("/api/tokens", self.token, methods=["POST"]),
        ]

    def index(self, request: Request) -> Response:
        return FileResponse(_static_dir() / "index.html", headers={"Cache-Control": "no-cache"})

    def status(self, request: Request) -> Response:
        return JSONResponse(self.status_fn())

    async def login(self, request: Request) -> Response:
        try:
            form = json.loads(await _small_body(request))
            name, password = str(form["user"]), str(form["password"])
        except (ValueError, KeyError, TypeError):
            raise HttpError(400, 'expected JSON {"user": ..., "password": ...}') from None
        client = request.client.host if request.client else ""
        try:
            cookie = self.context.authenticator.login(name, password, client)
        except auth.Throttled as e:
            raise HttpError(429, str(e), {"Retry-After": str(e.retry_after)}) from None
        logs.event(log, "login", user=name, client=client, ok=cookie is not None)
        if cookie is None:
            raise HttpError(401, "wrong user name or password")
        roles = self.context.authenticator.users.roles_of(name) or frozenset()
        response = JSONResponse({"user": name, "roles": sorted(roles)})
        response.set_cookie(
            auth.SESSION_COOKIE,
            cookie,
            max_age=self.context.authenticator.session_ttl,
            httponly=True,
            samesite="strict",
            secure=self.context.config.https,
        )
        return response

    def logout(self, request: Request) -> Response:
        response = JSONResponse({"ok": True})
        response.delete_cookie(auth.SESSION_COOKIE)
        return response

    def me(self, request: Request) -> Response:
        p: auth.Principal = request.scope["duckpacs.principal"]
        return JSONResponse({"user": p.name, "roles": sorted(p.roles), "auth": p.method})

    def token(self, request: Request) -> Response:
        p: auth.Principal = request.scope["duckpacs.principal"]
        if p.method == "anonymous":
            raise HttpError(400, "log in as a user to get a token")
        return JSONResponse(
            {
                "token": self.context.authenticator.issue_token(p),
                "expires_in": self.context.authenticator.token_ttl,
            }
        )

    def study_zip(self, request: Request) -> Response:
        """The study's instances as a zip streamed as it is written (ZIP data descriptors)."""
        auth.require(request, "read")
        archive = self.context.archive
        assert archive is not None
        study = request.path_params["study"]
        found = archive.locations("study", {"StudyInstanceUID": study})
        if not found:
            raise HttpError(404, f"no such study: {study}")

        def chunks() -> Iterator[bytes]:
            sink = _Sink()
            with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:
                for loc in found:
                    name = f"{loc.series_uid}/{loc.sop_instance_uid}.dcm"
                    with zf.open(name, "w", force_zip64=True) as member:
                        for piece in archive.stream_instance(loc):
                            member.write(piece)
                            yield sink.take()
                    yield sink.take()
            yield sink.take()

        return StreamingResponse(
            chunks(),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{study}.zip"'},
        )


# The login form is a few dozen bytes; anyone may post it, so it is read with a small cap.
MAX_LOGIN_BODY = 64 << 10


async def _small_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            raise HttpError(413, f"a login request holds at most {MAX_LOGIN_BODY} bytes")
    return bytes(body)


class _Sink:
    """A write-only, unseekable file for zipfile that hands its bytes out in chunks."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out
