"""Correcting patient and study data from the web, for the ``admin`` role:
``POST /api/studies/{study}/modify`` with ``{"changes": {KEYWORD: VALUE}}`` and
``POST /api/patients/merge`` with ``{"from": ID, "into": ID}`` (and optionally ``name``,
``birth_date``, ``sex`` of the surviving patient). Both go through the server's archive
(:mod:`duckpacs.archive.corrections`), as ``duckpacs modify`` and ``merge-patient`` do; a
body with ``"apply": false`` only answers what would change.

The routes lie under ``/api/``, so the middleware's audit line records who asked, from
where and with what answer; each correction also gets its own audit line naming the batch,
the studies and each attribute's old and new values.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from duckpacs.archive import corrections
from duckpacs.archive.corrections import merge_changes, plain_id
from duckpacs.web.auth import require
from duckpacs.web.errors import HttpError
from duckpacs.web.trash_api import _who


async def _object(request: Request) -> dict[str, Any]:
    from duckpacs.web.admin import _body  # the admin page's reader (admin imports us)

    return await _body(request)


class CorrectionApi:
    """The routes over the server's :class:`~duckpacs.archive.facade.Archive`."""

    def __init__(self, archive: Any) -> None:
        self.archive = archive

    def routes(self) -> list[Route]:
        return [
            Route("/api/studies/{study}/modify", self.modify, methods=["POST"]),
            Route("/api/patients/merge", self.merge, methods=["POST"]),
        ]

    async def modify(self, request: Request) -> Response:
        require(request, "admin")
        body = await _object(request)
        changes = body.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise HttpError(400, 'expected {"changes": {"PatientName": "...", ...}}')
        query = {"StudyInstanceUID": request.path_params["study"]}
        return await self._run(request, "modify", query, changes, body.get("apply", True))

    async def merge(self, request: Request) -> Response:
        require(request, "admin")
        body = await _object(request)
        source = plain_id(str(body.get("from") or ""), "from")
        into = plain_id(str(body.get("into") or ""), "into")
        if source == into:
            raise HttpError(400, "from and into name the same patient")
        given = {"PatientName": body.get("name"), "PatientBirthDate": body.get("birth_date"),
                 "PatientSex": body.get("sex")}  # fmt: skip
        changes = await run_in_threadpool(merge_changes, self.archive, into, given)
        query = {"PatientID": source}
        return await self._run(request, "merge", query, changes, body.get("apply", True))

    async def _run(self, request: Request, kind: str, query: dict[str, str],
                   changes: dict[str, Any], apply: Any) -> Response:  # fmt: skip
        if apply is False:
            shown = await run_in_threadpool(corrections.plan, self.archive, "study", query, changes)
            return JSONResponse({**shown, "query": query, "applied": False})
        user, source = _who(request)
        summary = await run_in_threadpool(
            self.archive.correct, "study", query, changes, kind, user=user, source=source
        )
        if not summary["matched"]:
            raise HttpError(404, f"nothing archived matches {query}")
        if summary["batch"]:
            corrections.audit(corrections.require_data_dir(self.archive), kind, summary,
                              user=user, source=source, auth="web")  # fmt: skip
        return JSONResponse({**summary, "applied": True})
