"""Deleting from the web, for the ``admin`` role: ``DELETE /api/studies/{study}`` (and
``.../series/{series}``, ``.../series/{series}/instances/{instance}``) moves the instances
to the trash (:mod:`duckpacs.archive.trash`) through the server's archive; the trash is
listed at ``GET /api/admin/trash`` and a batch put back with
``POST /api/admin/trash/{batch}/restore``.

The deletes lie under ``/api/studies/``, so the middleware's audit line records who asked,
from where and with what answer; each delete and restore also gets the trash's own audit
line naming the batch, the studies and the instance count (as ``duckpacs delete`` does).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from duckpacs.archive.trash import audit
from duckpacs.errors import StorageError
from duckpacs.web.auth import Principal, require
from duckpacs.web.errors import HttpError


def _who(request: Request) -> tuple[str, str]:
    principal: Principal = request.scope["duckpacs.principal"]
    client = request.client.host if request.client else ""
    return principal.name, f"web {client}"


class TrashApi:
    """The routes over the server's :class:`~duckpacs.archive.facade.Archive`."""

    def __init__(self, archive: Any) -> None:
        self.archive = archive

    def routes(self) -> list[Route]:
        return [
            Route("/api/studies/{study}", self.delete, methods=["DELETE"]),
            Route("/api/studies/{study}/series/{series}", self.delete, methods=["DELETE"]),
            Route(
                "/api/studies/{study}/series/{series}/instances/{instance}",
                self.delete,
                methods=["DELETE"],
            ),
            Route("/api/admin/trash", self.listing),
            Route("/api/admin/trash/{batch}/restore", self.restore, methods=["POST"]),
        ]

    def delete(self, request: Request) -> Response:
        require(request, "admin")
        p = request.path_params
        query = {"StudyInstanceUID": p["study"]}
        level = "study"
        if "series" in p:
            query["SeriesInstanceUID"], level = p["series"], "series"
        if "instance" in p:
            query["SOPInstanceUID"], level = p["instance"], "image"
        user, source = _who(request)
        summary = self.archive.discard(level, query, user=user, source=source)
        if not summary["instances"]:
            raise HttpError(404, f"nothing archived at {request.url.path}")
        audit(self.archive.trash, "delete", summary, user=user, source=source, auth="web")
        return JSONResponse(summary)

    def listing(self, request: Request) -> Response:
        require(request, "admin")
        return JSONResponse(self.archive.trash_list())

    def restore(self, request: Request) -> Response:
        require(request, "admin")
        user, source = _who(request)
        batch = request.path_params["batch"]
        try:
            state = self.archive.trash.find(batch).state
        except StorageError as e:
            raise HttpError(404, str(e)) from None
        if state != "trashed":
            raise HttpError(409, f"trash batch {batch} is already {state}")
        summary = self.archive.restore(batch, user=user, source=source)
        audit(self.archive.trash, "restore", summary, user=user, source=source, auth="web")
        return JSONResponse(summary)
