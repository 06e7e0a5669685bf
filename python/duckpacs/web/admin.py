"""The admin page's routes: the forwarding queue (what waits, what failed and why; retry,
drop), storage figures, "send to..." for a study, and the Modality Worklist's entries (list,
schedule, remove), all for the ``admin`` role.

``/admin`` is a static page (``static/admin.html`` and ``admin.js``) calling the JSON API
below; "send to..." is ``POST /api/studies/{study}/send``, under ``/api/studies/`` so the
audit log records who sent which study where. The operations are those of
``duckpacs queue`` and ``duckpacs send``, on the same queue
(:class:`duckpacs.server.control.Control`).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from duckpacs.errors import ConfigError
from duckpacs.web.auth import Principal, require
from duckpacs.web.correction_api import CorrectionApi
from duckpacs.web.errors import HttpError
from duckpacs.web.trash_api import TrashApi


def _page() -> Path:
    return Path(str(resources.files("duckpacs.web") / "static" / "admin.html"))


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise HttpError(400, "expected a JSON object") from None
    if not isinstance(body, dict):
        raise HttpError(400, "expected a JSON object")
    return body


def _selection(body: dict[str, Any]) -> dict[str, Any]:
    """Which jobs an operation is about: ids, a destination or a study (one is required)."""
    ids = body.get("ids") or []
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 63 for i in ids
    ):
        raise HttpError(400, "ids must be a list of job numbers")
    destination = str(body.get("destination") or "")
    study = str(body.get("study") or "")
    if not (ids or destination or study):
        raise HttpError(400, "name the jobs: ids, destination or study")
    return {"ids": ids, "destination": destination, "study": study}


class Admin:
    """The routes over the server's :class:`~duckpacs.server.control.Control`."""

    def __init__(self, control: Any) -> None:
        self.control = control

    def routes(self) -> list[Route]:
        return [
            Route("/admin", self.page),
            Route("/api/admin/queue", self.queue),
            Route("/api/admin/queue/retry", self.retry, methods=["POST"]),
            Route("/api/admin/queue/drop", self.drop, methods=["POST"]),
            Route("/api/peers", self.peers),
            Route("/api/studies/{study}/send", self.send, methods=["POST"]),
            Route("/api/admin/worklist", self.worklist, methods=["GET", "POST"]),
            Route("/api/admin/worklist/remove", self.worklist_remove, methods=["POST"]),
            *TrashApi(self.control.archive).routes(),
            *CorrectionApi(self.control.archive).routes(),
        ]

    def page(self, request: Request) -> Response:
        return FileResponse(_page(), headers={"Cache-Control": "no-cache"})

    def queue(self, request: Request) -> Response:
        require(request, "admin")
        params = request.query_params
        raw = params.get("limit") or "200"
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 6):
            raise HttpError(400, f"limit={raw[:64]!r}: expected 0 to 999999")
        limit = int(raw)
        return JSONResponse(
            self.control.overview(
                state=params.get("state", ""), destination=params.get("to", ""), limit=limit
            )
        )

    async def retry(self, request: Request) -> Response:
        require(request, "admin")
        return JSONResponse({"retried": self.control.retry(**_selection(await _body(request)))})

    async def drop(self, request: Request) -> Response:
        require(request, "admin")
        return JSONResponse({"dropped": self.control.drop(**_selection(await _body(request)))})

    def peers(self, request: Request) -> Response:
        require(request, "admin")
        return JSONResponse(self.control.peers())

    def _worklist(self) -> Any:
        from duckpacs.worklist.store import Worklist

        return Worklist.from_settings(self.control.settings)

    async def worklist(self, request: Request) -> Response:
        """GET: the Modality Worklist's entries; POST {keyword: value}: schedule one (the
        same checks as ``duckpacs worklist add``)."""
        from duckpacs.worklist.store import WorklistError

        require(request, "admin")
        worklist = self._worklist()
        if request.method == "GET":
            from duckpacs.worklist.mpps import relink

            relink(worklist, self.control.archive.find)
            worklist.complete_arrived(self.control.archive.find)
            return JSONResponse(worklist.entries())
        values = {k: str(v) for k, v in (await _body(request)).items() if v not in (None, "")}
        try:
            entry_id = worklist.add(values, source="web")
        except WorklistError as e:
            raise HttpError(400, str(e)) from None
        return JSONResponse({"id": entry_id}, status_code=201)

    async def worklist_remove(self, request: Request) -> Response:
        require(request, "admin")
        ids = (await _body(request)).get("ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise HttpError(400, "ids must be a list of worklist entry numbers")
        worklist = self._worklist()
        return JSONResponse({"removed": sum(1 for i in ids if worklist.remove(i))})

    async def send(self, request: Request) -> Response:
        require(request, "admin")
        to = str((await _body(request)).get("to") or "")
        if not to:
            raise HttpError(400, 'expected {"to": PEER}')
        principal: Principal = request.scope["duckpacs.principal"]
        study = request.path_params["study"]
        try:
            queued = self.control.send_study(study, to, f"send:web:{principal.name}")
        except ConfigError as e:  # a peer that is not configured: the caller's error
            raise HttpError(400, str(e)) from e
        return JSONResponse({"queued": queued, "to": to}, status_code=202)
