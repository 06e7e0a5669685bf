"""STOW-RS (PS3.18 10.5): store instances sent as ``multipart/related`` or as one
``application/dicom`` body, each through the archive's one write path.

The answer lists what was stored and what failed (PS3.18 10.5.3): 200 when all were stored,
202 when some failed or were stored with a warning, 409 when none was stored. When none was
stored because the archive is out of resources (every Failure Reason A7xx, PS3.18 I.2.2: a
storage limit, ``archive.max_bytes`` or ``archive.min_free_bytes``) the status is 507
Insufficient Storage (RFC 4918 11.5), an HTTP code beside those of PS3.18 Table 10.5.3-1,
with the same body.

The body is read as it arrives (:mod:`duckpacs.web.spool`): each part is stored as soon as
it is complete, large ones from a file in the spool folder, so memory stays bounded whatever
the upload's size (``http.max_body`` bounds that, 413).
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydicom
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from duckpacs import _core, logs
from duckpacs.web import multipart, spool
from duckpacs.web.auth import require
from duckpacs.web.dicomweb.common import DICOM_JSON, STUDY, Service
from duckpacs.web.errors import HttpError, bad_request
from duckpacs.web.reader import IngestOutcome

log = logs.get("web")


class Stow(Service):
    """The store resources over one archive; large parts are spooled to ``spool_dir``."""

    def __init__(self, archive: Any, prefix: str, spool_dir: Path | None = None) -> None:
        super().__init__(archive, prefix)
        self.spool_dir = spool_dir
        if spool_dir is not None:
            spool.clear_spool(spool_dir)

    def routes(self) -> list[Route]:
        return [
            Route(self.prefix + "/studies", self.stow, methods=["POST"]),
            Route(self.prefix + STUDY, self.stow, methods=["POST"]),
        ]

    async def stow(self, request: Request) -> Response:
        require(request, "store")
        content_type = request.headers.get("content-type", "")
        try:
            media = multipart.parse_media_type(content_type) if content_type else None
        except multipart.MultipartError as e:
            raise bad_request(str(e)) from None
        study = request.path_params.get("study")
        started = time.monotonic()
        outcomes = []
        size = 0
        try:
            async for part in self._parts(request, media):
                try:
                    size += part.size
                    outcomes.append(await run_in_threadpool(self._ingest_part, part, study))
                finally:
                    part.discard()
        except multipart.MultipartError as e:
            raise HttpError(415 if "expected multipart" in str(e) else 400, str(e)) from None
        _log_request(request, outcomes, size, time.monotonic() - started)
        return self._stow_response(request, study, outcomes)

    def _parts(
        self, request: Request, media: multipart.MediaRange | None
    ) -> AsyncIterator[spool.SpooledPart]:
        """The body's instances as they arrive: one for ``application/dicom``, else the
        parts of a ``multipart/related`` body of ``application/dicom``."""
        if media is not None and media.type == "application/dicom":
            headers = {"content-type": "application/dicom"}
            return spool.whole_body(request.stream(), headers, self.spool_dir)
        if media is None:
            raise multipart.MultipartError("missing Content-Type; expected multipart/related")
        if not media.type.startswith("multipart/"):
            raise multipart.MultipartError(f"expected multipart/related, got {media.type}")
        if media.related_type not in (None, "application/dicom"):
            raise HttpError(415, f"STOW-RS stores application/dicom, not {media.related_type}")
        boundary = media.params.get("boundary")
        if not boundary:
            raise multipart.MultipartError("multipart Content-Type without a boundary parameter")
        return spool.parts(request.stream(), boundary, self.spool_dir)

    def _ingest_part(self, part: spool.SpooledPart, study: str | None) -> IngestOutcome:
        ingest_file = getattr(self.archive, "ingest_file", None)
        if part.path is not None and ingest_file is not None:
            return self._ingest_one(part.path, study, ingest_file)
        return self._ingest_one(part.data(), study, self.archive.ingest)

    def _ingest_one(self, data: bytes | Path, study: str | None, ingest: Any) -> IngestOutcome:
        if study is not None:
            try:
                source = data if isinstance(data, Path) else io.BytesIO(data)
                head = pydicom.dcmread(source, stop_before_pixels=True)
                found = str(head.get("StudyInstanceUID", ""))
            except Exception as e:  # noqa: BLE001 (any parse failure is a 0xC000 for the client)
                return IngestOutcome(None, None, failure=0xC000, reason=f"cannot parse: {e}")
            if found != study:
                return IngestOutcome(
                    str(head.get("SOPClassUID", "")) or None,
                    str(head.get("SOPInstanceUID", "")) or None,
                    failure=0xA900,
                    reason=f"StudyInstanceUID {found} is not the study {study} of the request",
                )
        outcome: IngestOutcome = ingest(data)
        uid = outcome.sop_instance_uid
        if outcome.failure is not None:
            status = f"0x{outcome.failure:04X}"
            logs.event(log, "STOW-RS instance refused", 30, uid=uid, status=status,
                       reason=outcome.reason)  # fmt: skip
        elif outcome.warning is not None:
            # A conflict: another instance under this UID is kept (archive.on_conflict).
            status = f"0x{outcome.warning:04X}"
            logs.event(log, "STOW-RS conflict", 30, uid=uid, status=status, reason=outcome.reason)
        else:
            logs.event(log, "STOW-RS instance stored", 10, uid=uid)
        return outcome

    def _stow_response(
        self, request: Request, study: str | None, outcomes: list[IngestOutcome]
    ) -> Response:
        base = str(request.base_url).rstrip("/") + self.prefix
        ok = [o for o in outcomes if o.failure is None]
        failed = [o for o in outcomes if o.failure is not None]
        body: dict[str, Any] = {}
        study_uid = study or next((o.study_uid for o in ok if o.study_uid), None)
        if study_uid:
            body["RetrieveURL"] = f"{base}/studies/{study_uid}"
        if failed:
            body["FailedSOPSequence"] = [_failed_item(o) for o in failed]
        if ok:
            body["ReferencedSOPSequence"] = [_stored_item(o, base) for o in ok]
        warned = any(o.warning is not None for o in ok)
        status = 409 if failed and not ok else (202 if failed or warned else 200)
        if status == 409 and all(0xA700 <= (o.failure or 0) <= 0xA7FF for o in failed):
            status = 507
        # DICOM JSON from the one producer (Rust, rust/duckpacs-core/src/parse/json.rs).
        return Response(_core.row_json(body).encode(), status_code=status, media_type=DICOM_JSON)


def _failed_item(o: IngestOutcome) -> dict[str, Any]:
    item: dict[str, Any] = {"FailureReason": o.failure}
    if o.sop_class_uid:
        item["ReferencedSOPClassUID"] = o.sop_class_uid
    if o.sop_instance_uid:
        item["ReferencedSOPInstanceUID"] = o.sop_instance_uid
    return item


def _stored_item(o: IngestOutcome, base: str) -> dict[str, Any]:
    url = f"{base}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_instance_uid}"
    item: dict[str, Any] = {
        "ReferencedSOPClassUID": o.sop_class_uid,
        "ReferencedSOPInstanceUID": o.sop_instance_uid,
        "RetrieveURL": url,
    }
    if o.warning is not None:
        item["WarningReason"] = o.warning
    return item


def _log_request(request: Request, outcomes: list[IngestOutcome], size: int, took: float) -> None:
    """One INFO line per STOW-RS request, like the one per association over DIMSE."""
    client = request.client.host if request.client else "?"
    principal = request.scope.get("duckpacs.principal")
    logs.event(
        log,
        "STOW-RS request",
        client=client,
        user=getattr(principal, "name", None) or "-",
        stored=sum(o.failure is None and o.warning is None for o in outcomes),
        warnings=sum(o.warning is not None for o in outcomes),
        failures=sum(o.failure is not None for o in outcomes),
        bytes=size,
        seconds=round(took, 3),
    )
