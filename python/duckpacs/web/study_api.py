"""The viewer's study actions that DICOMweb has no resource for: saving measurements as a
DICOM SR into the archive, opening an encapsulated document (a PDF report, PS3.3 A.45.1),
and downloading a study as DICOM media with a DICOMDIR (PS3.10, PS3.11 STD-GEN-CD)."""

from __future__ import annotations

import io
import json
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from duckpacs.export.dicomdir import write_dicomdir
from duckpacs.web import measurement_sr
from duckpacs.web.auth import Principal, require
from duckpacs.web.errors import HttpError, bad_request, not_found
from duckpacs.web.reader import ArchiveReader, InstanceLocation

MAX_MEASUREMENTS_BYTES = 1 << 20


class StudyApi:
    """``/api/studies/{study}/...`` beside the zip download of :mod:`duckpacs.web.app`."""

    def __init__(self, archive: ArchiveReader) -> None:
        self.archive = archive

    def routes(self) -> list[Route]:
        base = "/api/studies/{study}"
        return [
            Route(base + "/measurements", self.save_measurements, methods=["POST"]),
            Route(base + "/series/{series}/instances/{instance}/document", self.document),
            Route(base + "/dicomdir.zip", self.dicomdir_zip),
        ]

    def _instance(self, study: str, series: str, instance: str) -> InstanceLocation:
        found = self.archive.locations(
            "instance",
            {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": instance},
        )
        if not found:
            raise not_found(f"no instance {instance} in series {series} of study {study}")
        return found[0]

    async def save_measurements(self, request: Request) -> Response:
        """Build a TID 1500 SR from the viewer's measurements and store it like a STOW."""
        require(request, "store")
        body = await request.body()
        if len(body) > MAX_MEASUREMENTS_BYTES:
            raise HttpError(413, "measurements: at most 1 MiB of JSON")
        try:
            parsed = json.loads(body)
            measurements = [measurement_sr.Measurement.from_json(i) for i in _items(parsed)]
        except ValueError as e:  # bad JSON, or a MeasurementError
            raise bad_request(f"measurements: {e}") from None
        study = request.path_params["study"]
        if not measurements:
            raise bad_request("measurements: nothing to save")
        first = measurements[0]
        for m in measurements:  # every measured image must be in this study
            self._instance(study, m.series_uid, m.sop_instance_uid)
        loc = self._instance(study, first.series_uid, first.sop_instance_uid)
        reference = pydicom.dcmread(
            io.BytesIO(self.archive.read_instance(loc)), stop_before_pixels=True
        )
        principal: Principal = request.scope["duckpacs.principal"]
        observer = None if principal.method == "anonymous" else principal.name
        sr = measurement_sr.build(reference, measurements, observer=observer)
        buf = io.BytesIO()
        sr.save_as(buf, enforce_file_format=True)
        outcome = self.archive.ingest(buf.getvalue())
        if outcome.failure is not None:
            raise HttpError(409, f"the SR was not stored: {outcome.reason}")
        return JSONResponse(
            {
                "series": str(sr.SeriesInstanceUID),
                "instance": str(sr.SOPInstanceUID),
                "count": len(measurements),
            }
        )

    def document(self, request: Request) -> Response:
        """The document of an Encapsulated PDF (or CDA) instance, in its own media type, for
        the browser to show."""
        require(request, "read")
        p = request.path_params
        loc = self._instance(p["study"], p["series"], p["instance"])
        ds = pydicom.dcmread(io.BytesIO(self.archive.read_instance(loc)))
        if "EncapsulatedDocument" not in ds:
            raise not_found(f"instance {loc.sop_instance_uid} holds no encapsulated document")
        data = bytes(ds.EncapsulatedDocument)
        length = ds.get("EncapsulatedDocumentLength")
        if length and int(length) <= len(data):
            data = data[: int(length)]  # the value is padded to an even length (PS3.3 C.24.2)
        elif data.endswith(b"\x00") and data.rstrip(b"\x00").endswith(b"%%EOF"):
            data = data.rstrip(b"\x00")
        media = str(ds.get("MIMETypeOfEncapsulatedDocument") or "application/octet-stream")
        name = f"{loc.sop_instance_uid}.pdf" if media == "application/pdf" else loc.sop_instance_uid
        return Response(
            data,
            media_type=media,
            headers={
                "Content-Disposition": f'inline; filename="{name}"',
                # The viewer shows the document in a frame of its own page; nothing else may.
                "Content-Security-Policy": "frame-ancestors 'self'",
                "X-Frame-Options": "SAMEORIGIN",
            },
        )

    def dicomdir_zip(self, request: Request) -> Response:
        """The study as DICOM media: ISO 9660 file names and a DICOMDIR, zipped."""
        require(request, "read")
        study = request.path_params["study"]
        found = self.archive.locations("study", {"StudyInstanceUID": study})
        if not found:
            raise not_found(f"no such study: {study}")
        tmp = tempfile.TemporaryDirectory(prefix="duckpacs-dicomdir-")
        try:
            stage, media = Path(tmp.name) / "in", Path(tmp.name) / "media"
            stage.mkdir()
            for n, loc in enumerate(found):
                (stage / f"{n:06d}.dcm").write_bytes(self.archive.read_instance(loc))
            with warnings.catch_warnings():  # pydicom warns on every legacy value it meets
                warnings.simplefilter("ignore", UserWarning)
                write_dicomdir([stage], media)
        except BaseException:
            tmp.cleanup()
            raise
        return StreamingResponse(
            _zip_folder(media, tmp),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{study}-dicomdir.zip"'},
        )


def _items(parsed: object) -> list[object]:
    items = parsed.get("measurements") if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        raise measurement_sr.MeasurementError('expected {"measurements": [...]}')
    return items


def _zip_folder(folder: Path, tmp: tempfile.TemporaryDirectory[str]) -> Iterator[bytes]:
    """The folder zipped (stored: pixel data rarely shrinks) beside it, then sent in chunks;
    the staging folder goes when done."""
    try:
        target = Path(tmp.name) / "media.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                zf.write(path, path.relative_to(folder).as_posix())
        with target.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
    finally:
        tmp.cleanup()
