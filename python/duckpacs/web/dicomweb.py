"""DICOMweb routes (PS3.18): QIDO-RS search, WADO-RS retrieve, STOW-RS store, WADO-URI.

Everything reads the archive through the :class:`~duckpacs.web.reader.ArchiveReader`
protocol. Responses stream instance by instance, so a study retrieve never holds the whole
study in memory. Errors are raised as :class:`~duckpacs.web.errors.HttpError` and turned
into JSON bodies (with CORS headers) by the application.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from duckpacs import _core, logs
from duckpacs.errors import DuckpacsError
from duckpacs.web import dicomjson, multipart, rendering, transcode
from duckpacs.web.errors import HttpError, bad_request, not_acceptable, not_found
from duckpacs.web.reader import ArchiveReader, IngestOutcome, InstanceLocation

log = logs.get("web")
DICOM_JSON = "application/dicom+json"
MAX_LIMIT = 10000
# STOW-RS bodies are held in memory while their parts are stored; clients send big studies
# as several requests (the web UI sends 50 files at a time).
MAX_STOW_BYTES = 1 << 30

# PS3.18 Table 10.6.3-3, -4, -5: attributes returned by default at each level.
DEFAULT_KEYS = {
    "study": [
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ],
    "series": [
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
        "StudyInstanceUID",
    ],
    "instance": [
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    ],
}
QIDO_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


def require(request: Request, permission: str) -> None:
    """403 unless the caller (set by the auth middleware) holds ``permission``."""
    principal = request.scope.get("duckpacs.principal")
    if principal is None or not principal.can(permission):
        raise HttpError(403, f"this account may not {permission}")


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise bad_request(f"{name}={raw!r}: expected a non-negative integer")
    return int(raw)


def _media_ranges(request: Request) -> list[multipart.MediaRange]:
    """``Accept``, or the ``accept`` query parameter that overrides it (PS3.18 8.3.3.1)."""
    header = request.query_params.get("accept") or request.headers.get("accept")
    try:
        return multipart.parse_accept(header)
    except multipart.MultipartError as e:
        raise bad_request(str(e)) from None


class DicomWeb:
    """The DICOMweb service over one archive."""

    def __init__(
        self, archive: ArchiveReader, prefix: str = "/dicom-web", cache_bytes: int = 64 << 20
    ) -> None:
        self.archive = archive
        self.prefix = prefix
        self._metadata_cache = ByteCache(cache_bytes)

    # --- routing -------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        p = self.prefix
        s, r, i = "/studies/{study}", "/series/{series}", "/instances/{instance}"
        get: list[tuple[str, Callable[[Request], Response]]] = [
            ("/studies", self.qido_studies),
            ("/series", self.qido_series),
            ("/instances", self.qido_instances),
            (s + "/series", self.qido_series),
            (s + "/instances", self.qido_instances),
            (s + r + "/instances", self.qido_instances),
            (s, self.retrieve),
            (s + r, self.retrieve),
            (s + r + i, self.retrieve),
            (s + "/metadata", self.metadata),
            (s + r + "/metadata", self.metadata),
            (s + r + i + "/metadata", self.metadata),
            (s + r + i + "/frames/{frames}", self.frames),
            (s + r + i + "/bulkdata/{tag}", self.bulkdata),
            (s + r + i + "/bulkdata/{offset}/{length}", self.bulkdata_range),
            (s + "/rendered", self.rendered),
            (s + r + "/rendered", self.rendered),
            (s + r + i + "/rendered", self.rendered),
            (s + r + i + "/frames/{frames}/rendered", self.rendered),
            (s + "/thumbnail", self.thumbnail),
            (s + r + "/thumbnail", self.thumbnail),
            (s + r + i + "/thumbnail", self.thumbnail),
            (s + r + i + "/frames/{frames}/thumbnail", self.thumbnail),
            ("/wado", self.wado_uri),
        ]
        routes = [Route(p + path, fn, methods=["GET", "HEAD"]) for path, fn in get]
        routes.append(Route("/wado", self.wado_uri, methods=["GET", "HEAD"]))
        routes.append(Route(p + "/studies", self.stow, methods=["POST"]))
        routes.append(Route(p + s, self.stow, methods=["POST"]))
        return routes

    # --- QIDO-RS (PS3.18 10.6) -------------------------------------------------------------

    def qido_studies(self, request: Request) -> Response:
        return self._qido(request, "study")

    def qido_series(self, request: Request) -> Response:
        return self._qido(request, "series")

    def qido_instances(self, request: Request) -> Response:
        return self._qido(request, "instance")

    def _qido(self, request: Request, level: str) -> Response:
        require(request, "read")
        self._check_json_acceptable(request)
        query, include, include_all = self._parse_query(request)
        path = request.path_params
        if "study" in path:
            query["StudyInstanceUID"] = path["study"]
        if "series" in path:
            query["SeriesInstanceUID"] = path["series"]
        keys = list(dict.fromkeys([*DEFAULT_KEYS[level], *include, *query]))
        limit = min(_int_param(request, "limit", MAX_LIMIT), MAX_LIMIT)
        offset = _int_param(request, "offset", 0)
        fuzzy = request.query_params.get("fuzzymatching", "false").lower() == "true"
        rows = self.archive.find(level, query, keys, fuzzy=fuzzy, limit=limit, offset=offset)
        base = str(request.base_url).rstrip("/") + self.prefix
        body = []
        for row in rows:
            obj = dicomjson.row_to_json(row, list(row) if include_all else keys)
            obj["00081190"] = {"vr": "UR", "Value": [_retrieve_url(base, level, row)]}
            body.append(dict(sorted(obj.items())))
        return JSONResponse(body, media_type=DICOM_JSON)

    def _parse_query(self, request: Request) -> tuple[dict[str, str], list[str], bool]:
        query: dict[str, str] = {}
        include: list[str] = []
        include_all = False
        for name, value in request.query_params.multi_items():
            if name == "includefield":
                for item in (v.strip() for v in value.split(",") if v.strip()):
                    if item.lower() == "all":
                        include_all = True
                        continue
                    include.append(self._keyword(item))
            elif name in QIDO_CONTROL or name == "accept":
                continue
            else:
                query[self._keyword(name)] = value
        return query, include, include_all

    @staticmethod
    def _keyword(name: str) -> str:
        if "." in name:
            raise bad_request(f"{name}: matching on sequence items is not supported")
        keyword = dicomjson.keyword_of(name)
        if keyword is None:
            raise bad_request(f"{name}: not a DICOM keyword or tag")
        return keyword

    @staticmethod
    def _check_json_acceptable(request: Request) -> None:
        ranges = _media_ranges(request)
        if not any(r.matches(DICOM_JSON) or r.matches("application/json") for r in ranges):
            wanted = ", ".join(r.type for r in ranges)
            raise not_acceptable(f"can only answer {DICOM_JSON}, not {wanted}")

    # --- WADO-RS (PS3.18 10.4) -------------------------------------------------------------

    def _locate(self, request: Request) -> tuple[str, list[InstanceLocation]]:
        path = request.path_params
        query = {"StudyInstanceUID": path["study"]}
        level = "study"
        if "series" in path:
            query["SeriesInstanceUID"], level = path["series"], "series"
        if "instance" in path:
            query["SOPInstanceUID"], level = path["instance"], "instance"
        found = self.archive.locations(level, query)
        if not found:
            raise not_found(f"no such {level}: {query[_UID_KEYS[level]]}")
        return level, found

    def retrieve(self, request: Request) -> Response:
        require(request, "read")
        ranges = _media_ranges(request)
        _, found = self._locate(request)
        wanted = _negotiate_dicom(ranges, found)
        boundary = multipart.new_boundary()

        def parts() -> Iterator[tuple[bytes, dict[str, str]]]:
            for loc in found:
                data = self.archive.read_instance(loc)
                syntax = loc.transfer_syntax if wanted == "*" else wanted
                if syntax != loc.transfer_syntax:
                    data = transcode.transcode(data, syntax)
                yield data, {"Content-Type": f"application/dicom; transfer-syntax={syntax}"}

        return StreamingResponse(
            _batched(multipart.encode(boundary, parts()), RETRIEVE_CHUNK),
            media_type=multipart.content_type(boundary, "application/dicom"),
        )

    def metadata(self, request: Request) -> Response:
        require(request, "read")
        self._check_json_acceptable(request)
        level, found = self._locate(request)
        if len(found) == 1:
            body = b"[" + self._metadata_json(found[0], _bulk_prefix(level, found[0])) + b"]"
            return Response(body, media_type=DICOM_JSON)

        def chunks() -> Iterator[bytes]:  # a large study's metadata is streamed, not built
            for n, loc in enumerate(found):
                yield (b"[" if n == 0 else b",") + self._metadata_json(
                    loc, _bulk_prefix(level, loc)
                )
            yield b"]"

        return StreamingResponse(_batched(chunks()), media_type=DICOM_JSON)

    def _metadata_json(self, loc: InstanceLocation, prefix: str) -> bytes:
        """One instance's DICOM JSON, serialised once and cached (instances never change).

        Bulk data URIs are cached relative to the instance; a quote can only appear unescaped
        in JSON as structure, so inserting the level's prefix after ``"BulkDataURI":"`` can
        never touch a data value.
        """
        blob = self._metadata_cache.get(loc.sop_instance_uid)
        if blob is None:
            data = self.archive.read_instance(loc)
            blob = _rust_json(data, loc.transfer_syntax)
            if blob is None:
                ds = pydicom.dcmread(io.BytesIO(data), defer_size=dicomjson.BULK_THRESHOLD)
                header = dicomjson.dataset_to_json(ds, _bulk_uri(""))
                blob = json.dumps(header, separators=(",", ":")).encode()
            self._metadata_cache.put(loc.sop_instance_uid, blob)
        if prefix:
            blob = blob.replace(b'"BulkDataURI":"', b'"BulkDataURI":"' + prefix.encode())
        return blob

    def _instance(self, request: Request) -> InstanceLocation:
        _, found = self._locate(request)
        return found[0]

    def frames(self, request: Request) -> Response:
        require(request, "read")
        loc = self._instance(request)
        numbers = _frame_list(request.path_params["frames"], loc.number_of_frames)
        ranges = _media_ranges(request)
        native = not _is_compressed(loc.transfer_syntax)
        stored_type = "application/octet-stream" if native else _frame_type(loc.transfer_syntax)
        decode = _negotiate_frames(ranges, loc, stored_type)
        boundary = multipart.new_boundary()
        part_type = "application/octet-stream" if decode else stored_type
        syntax = transcode.EXPLICIT_LE if decode else loc.transfer_syntax

        def parts() -> Iterator[tuple[bytes, dict[str, str]]]:
            ds = self._full(loc) if decode else None
            for number in numbers:
                if ds is not None:
                    data = rendering.frame_pixels(ds, number).tobytes()
                else:
                    data = self.archive.read_frame(loc, number)
                yield data, {"Content-Type": f"{part_type}; transfer-syntax={syntax}"}

        media_type = multipart.content_type(boundary, part_type, syntax)
        if len(numbers) <= EAGER_FRAMES:
            # A viewer asks for one frame at a time: a plain body avoids the worker-thread
            # round trip per chunk of a streamed one, which cost more than reading the frame.
            return Response(b"".join(multipart.encode(boundary, parts())), media_type=media_type)
        return StreamingResponse(multipart.encode(boundary, parts()), media_type=media_type)

    def _full(self, loc: InstanceLocation) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.archive.read_instance(loc)))

    def bulkdata_range(self, request: Request) -> Response:
        """A bulk value named by its byte range in the stored stream (the URIs the Rust
        parser writes for values other than Pixel Data, nested ones included)."""
        require(request, "read")
        loc = self._instance(request)
        offset_text, length_text = request.path_params["offset"], request.path_params["length"]
        if not (offset_text.isdigit() and length_text.isdigit()):
            raise bad_request("bulk data range: expected bulkdata/{offset}/{length}")
        offset, length = int(offset_text), int(length_text)
        data = self.archive.read_instance(loc)
        if offset + length > len(data):
            raise not_found(f"bytes {offset}+{length} are beyond the instance's {len(data)}")
        boundary = multipart.new_boundary()
        part = (data[offset : offset + length], {"Content-Type": "application/octet-stream"})
        return StreamingResponse(
            multipart.encode(boundary, [part]),
            media_type=multipart.content_type(boundary, "application/octet-stream"),
        )

    def bulkdata(self, request: Request) -> Response:
        require(request, "read")
        loc = self._instance(request)
        tag_text = request.path_params["tag"]
        try:
            tag = int(tag_text, 16)
        except ValueError:
            raise bad_request(f"bulk data tag {tag_text!r}: expected 8 hex digits") from None
        ds = self._full(loc)
        if tag not in ds:
            raise not_found(f"instance {loc.sop_instance_uid} has no attribute {tag_text}")
        elem = ds[tag]
        if elem.VR not in dicomjson.BINARY_VRS and tag not in dicomjson.PIXEL_TAGS:
            raise bad_request(f"{tag_text} ({elem.VR}) is not a binary value; see /metadata")
        boundary = multipart.new_boundary()
        if tag == 0x7FE00010 and _is_compressed(loc.transfer_syntax):
            ftype = _frame_type(loc.transfer_syntax)
            chunks = [
                (self.archive.read_frame(loc, n), {"Content-Type": ftype})
                for n in range(1, loc.number_of_frames + 1)
            ]
            body_type = ftype
        else:
            value = elem.value if isinstance(elem.value, bytes) else bytes(elem.value or b"")
            chunks = [(value, {"Content-Type": "application/octet-stream"})]
            body_type = "application/octet-stream"
        return StreamingResponse(
            multipart.encode(boundary, chunks),
            media_type=multipart.content_type(boundary, body_type),
        )

    # --- rendered and thumbnail (PS3.18 10.4.1.1.3, 10.4.1.1.4) ----------------------------

    def rendered(self, request: Request) -> Response:
        """Instance and frame level render that image; study and series level render their
        representative (middle) instance, as dicomweb-client and OHIF expect one image."""
        return self._render(request, thumbnail=False)

    def thumbnail(self, request: Request) -> Response:
        return self._render(request, thumbnail=True)

    def _render(self, request: Request, thumbnail: bool) -> Response:
        require(request, "read")
        media_type = _image_type(_media_ranges(request))
        _, found = self._locate(request)
        loc = found[len(found) // 2] if "instance" not in request.path_params else found[0]
        frame = 1
        if "frames" in request.path_params:
            numbers = _frame_list(request.path_params["frames"], loc.number_of_frames)
            if len(numbers) != 1:
                raise bad_request("render one frame at a time")
            frame = numbers[0]
        params = request.query_params
        try:
            window = rendering.parse_window(params.get("window"))
            viewport = rendering.parse_viewport(
                params.get("viewport") or ("128,128" if thumbnail else None)
            )
            quality = _int_param(request, "quality", 90)
            image, used = rendering.render(
                self._full(loc),
                frame,
                window=window,
                viewport=viewport,
                media_type=media_type,
                quality=quality,
            )
        except rendering.RenderError as e:
            raise bad_request(str(e)) from None
        headers = {"Cache-Control": "private"}
        if used is not None:
            headers["X-VOI-Window"] = f"{used.center:g},{used.width:g},{used.function}"
        return Response(image, media_type=media_type, headers=headers)

    # --- STOW-RS (PS3.18 10.5) ---------------------------------------------------------------

    async def stow(self, request: Request) -> Response:
        require(request, "store")
        content_type = request.headers.get("content-type", "")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_STOW_BYTES:
            raise HttpError(413, f"a STOW-RS request holds at most {MAX_STOW_BYTES >> 20} MiB")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_STOW_BYTES:
                raise HttpError(413, f"a STOW-RS request holds at most {MAX_STOW_BYTES >> 20} MiB")
        try:
            media = multipart.parse_media_type(content_type) if content_type else None
        except multipart.MultipartError as e:
            raise bad_request(str(e)) from None
        if media is not None and media.type == "application/dicom":
            datasets = [bytes(body)]
        else:
            try:
                parts = multipart.decode(bytes(body), content_type)
            except multipart.MultipartError as e:
                raise HttpError(415 if "expected multipart" in str(e) else 400, str(e)) from None
            if media is not None and media.related_type not in (None, "application/dicom"):
                raise HttpError(415, f"STOW-RS stores application/dicom, not {media.related_type}")
            datasets = [p.body for p in parts]
        study = request.path_params.get("study")
        outcomes = [self._ingest_one(data, study) for data in datasets]
        return self._stow_response(request, study, outcomes)

    def _ingest_one(self, data: bytes, study: str | None) -> IngestOutcome:
        if study is not None:
            try:
                head = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
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
        outcome = self.archive.ingest(data)
        if outcome.failure is not None:
            logs.event(log, "STOW-RS instance refused", reason=outcome.reason)
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
            body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study_uid}"]}
        if failed:
            body["00081198"] = {"vr": "SQ", "Value": [_failed_item(o) for o in failed]}
        if ok:
            body["00081199"] = {"vr": "SQ", "Value": [_stored_item(o, base) for o in ok]}
        warned = any(o.warning is not None for o in ok)
        status = 409 if failed and not ok else (202 if failed or warned else 200)
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)

    # --- WADO-URI (PS3.18 9) ------------------------------------------------------------------

    def wado_uri(self, request: Request) -> Response:
        require(request, "read")
        params = request.query_params
        if params.get("requestType") != "WADO":
            raise bad_request("requestType=WADO is required (PS3.18 9.1.2.1.1)")
        missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not params.get(k)]
        if missing:
            raise bad_request("missing " + ", ".join(missing))
        found = self.archive.locations(
            "instance",
            {
                "StudyInstanceUID": params["studyUID"],
                "SeriesInstanceUID": params["seriesUID"],
                "SOPInstanceUID": params["objectUID"],
            },
        )
        if not found:
            raise not_found(f"no such instance: {params['objectUID']}")
        loc = found[0]
        content_types = [c.strip() for c in params.get("contentType", "image/jpeg").split(",")]
        if "application/dicom" in content_types:
            wanted = params.get("transferSyntax") or loc.transfer_syntax
            if not transcode.can_transcode(loc.transfer_syntax, wanted):
                raise not_acceptable(f"cannot send {loc.transfer_syntax} as {wanted}")
            data = transcode.transcode(self.archive.read_instance(loc), wanted)
            return Response(data, media_type="application/dicom")
        media_type = next((c for c in content_types if c in rendering.MEDIA_TYPES), None)
        if media_type is None:
            raise not_acceptable(f"contentType {params.get('contentType')} is not supported")
        return self._wado_uri_image(request, loc, media_type)

    def _wado_uri_image(self, request: Request, loc: InstanceLocation, media_type: str) -> Response:
        params = request.query_params
        try:
            window = None
            if params.get("windowCenter") or params.get("windowWidth"):
                window = rendering.parse_window(
                    f"{params.get('windowCenter', '')},{params.get('windowWidth', '')}"
                )
            rows, cols = _int_param(request, "rows", 0), _int_param(request, "columns", 0)
            viewport = None
            if rows or cols:
                viewport = rendering.Viewport(cols or 8192, rows or 8192)
            image, _ = rendering.render(
                self._full(loc),
                _int_param(request, "frameNumber", 1),
                window=window,
                viewport=viewport,
                media_type=media_type,
                quality=_int_param(request, "imageQuality", 90),
            )
        except rendering.RenderError as e:
            raise bad_request(str(e)) from None
        except IndexError as e:
            raise not_found(str(e)) from None
        return Response(image, media_type=media_type)


class ByteCache:
    """A thread-safe LRU of byte strings bounded by their total size."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.budget:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._size += len(value) - (len(old) if old is not None else 0)
            self._items[key] = value
            while self._size > self.budget:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)


_UID_KEYS = {
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
}


# Up to this many frames a /frames response is built whole rather than streamed.
EAGER_FRAMES = 8
# Writes of a study retrieval: each costs a hop between a worker thread and the event loop,
# so they are large (a 226 MB study in 4 MiB writes: 56 hops, not 900).
RETRIEVE_CHUNK = 4 << 20


def _retrieve_url(base: str, level: str, row: dict[str, Any]) -> str:
    url = f"{base}/studies/{row.get('StudyInstanceUID')}"
    if level in ("series", "instance"):
        url += f"/series/{row.get('SeriesInstanceUID')}"
    if level == "instance":
        url += f"/instances/{row.get('SOPInstanceUID')}"
    return url


def _bulk_prefix(level: str, loc: InstanceLocation) -> str:
    """Relative reference from a metadata URL to the instance (RFC 3986 5.2)."""
    if level == "instance":
        return ""
    if level == "series":
        return f"instances/{loc.sop_instance_uid}/"
    return f"series/{loc.series_uid}/instances/{loc.sop_instance_uid}/"


def _batched(chunks: Iterator[bytes], size: int = 1 << 18) -> Iterator[bytes]:
    """Join small chunks into ~256 KiB writes: each chunk of a streamed response costs a hop
    between the worker thread and the event loop, which dominates for small instances."""
    pending: list[bytes] = []
    pending_size = 0
    for chunk in chunks:
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending:
        yield b"".join(pending)


def _rust_json(data: bytes, syntax: str) -> bytes | None:
    """DICOM JSON text from the Rust parser (tens of times faster than pydicom, and used as
    is, never decoded and re-encoded here), or None when pydicom should serve the instance.

    Its bulk URIs are ``bulkdata/{offset}/{length}`` into the stored stream; those offsets
    are into the inflated dataset for deflate and the values are big-endian for explicit VR
    big endian, so those two syntaxes go through pydicom. Pixel Data is pointed at
    ``bulkdata/7FE00010``, which serves native pixels and compressed frames correctly.
    """
    dump = getattr(_core, "dump_json", None)
    if dump is None or syntax in (str(DeflatedExplicitVRLittleEndian), str(ExplicitVRBigEndian)):
        return None
    try:
        text: str = dump(
            data,
            bulk_data_uri="bulkdata/",
            inline_threshold=dicomjson.BULK_THRESHOLD,
            pixel_data_by_tag=True,
        )
    except (DuckpacsError, ValueError) as e:
        logs.event(log, "Rust JSON failed, using pydicom", error=str(e))
        return None
    return text.encode()


def _bulk_uri(prefix: str) -> Callable[[str], str]:
    def uri(tag: str) -> str:
        return f"{prefix}bulkdata/{tag}"

    return uri


def _is_compressed(syntax: str) -> bool:
    return syntax not in transcode.READABLE_UNCOMPRESSED


def _frame_type(syntax: str) -> str:
    return transcode.FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")


def _frame_list(text: str, frames: int) -> list[int]:
    """``1,3,5`` -> [1, 3, 5]; 400 on junk, 404 past the last frame (PS3.18 10.4.1.1.2)."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise bad_request(f"frame list {text!r}: expected 1-based frame numbers")
        numbers.append(int(item))
    beyond = [n for n in numbers if n > frames]
    if beyond:
        raise not_found(f"frame {beyond[0]} does not exist; the instance has {frames}")
    return numbers


def _negotiate_dicom(ranges: list[multipart.MediaRange], found: list[InstanceLocation]) -> str:
    """The transfer syntax to send instances in, ``*`` for as stored; 406 when impossible."""
    for r in ranges:
        if r.type == "*/*" or (r.type == "multipart/related" and r.related_type is None):
            return "*"
        if r.type not in ("multipart/related", "application/dicom"):
            continue
        if r.type == "multipart/related" and r.related_type not in ("application/dicom", "*/*"):
            continue
        wanted = r.transfer_syntax or "*"
        if all(transcode.can_transcode(loc.transfer_syntax, wanted) for loc in found):
            return wanted
    offered = ", ".join(f"{r.type} {r.params}" for r in ranges)
    raise not_acceptable(f"cannot satisfy Accept: {offered}; try transfer-syntax=*")


def _negotiate_frames(
    ranges: list[multipart.MediaRange], loc: InstanceLocation, stored_type: str
) -> bool:
    """Whether frames must be decoded to native pixels; 406 when nothing acceptable."""
    for r in ranges:
        if r.type == "*/*":
            return False
        if r.type != "multipart/related":
            continue
        part = r.related_type or "*/*"
        syntax = r.transfer_syntax
        if part in ("*/*", stored_type) and syntax in (None, "*", loc.transfer_syntax):
            return False
        if part != "application/octet-stream" or syntax not in (None, *transcode.UNCOMPRESSED):
            continue
        if loc.transfer_syntax in transcode.UNCOMPRESSED:
            return False  # little-endian native frames are the same bytes in either syntax
        if transcode.can_decode(loc.transfer_syntax):
            return True
    raise not_acceptable(
        f"frames of {loc.sop_instance_uid} are stored as {stored_type} "
        f"(transfer syntax {loc.transfer_syntax}); ask for that or for transfer-syntax=*"
    )


def _image_type(ranges: list[multipart.MediaRange]) -> str:
    for r in ranges:
        for media_type in rendering.MEDIA_TYPES:
            if r.matches(media_type):
                return media_type
    raise not_acceptable("rendered images are image/jpeg or image/png")


def _failed_item(o: IngestOutcome) -> dict[str, Any]:
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [o.failure]}}
    if o.sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [o.sop_class_uid]}
    if o.sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [o.sop_instance_uid]}
    return dict(sorted(item.items()))


def _stored_item(o: IngestOutcome, base: str) -> dict[str, Any]:
    url = f"{base}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_instance_uid}"
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [o.sop_class_uid]},
        "00081155": {"vr": "UI", "Value": [o.sop_instance_uid]},
        "00081190": {"vr": "UR", "Value": [url]},
    }
    if o.warning is not None:
        item["00081196"] = {"vr": "US", "Value": [o.warning]}  # WarningReason
    return dict(sorted(item.items()))
