"""WADO-RS metadata (PS3.18 10.4.1.1.2): the DICOM JSON of every instance of a study,
series or instance, bulk data referred to by URI.

The JSON comes from the Rust parser and is used as it is, or from pydicom for the syntaxes
the Rust one cannot point bulk data into; either way it is serialised once per instance and
kept in a cache bounded by size (instances never change).
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from duckpacs import _core, logs
from duckpacs.errors import DuckpacsError
from duckpacs.web import dicomjson
from duckpacs.web.auth import require
from duckpacs.web.dicomweb.common import (
    DICOM_JSON,
    INSTANCE,
    SERIES,
    STUDY,
    Service,
    batched,
    check_json_acceptable,
    get_routes,
    locate,
)
from duckpacs.web.reader import ArchiveReader, InstanceLocation

log = logs.get("web")


class Metadata(Service):
    """The metadata resources over one archive, with the cache of instance JSON."""

    def __init__(self, archive: ArchiveReader, prefix: str, cache_bytes: int) -> None:
        super().__init__(archive, prefix)
        self._metadata_cache = ByteCache(cache_bytes)

    def routes(self) -> list[Route]:
        s, r, i = STUDY, SERIES, INSTANCE
        return get_routes(
            self.prefix,
            [
                (s + "/metadata", self.metadata),
                (s + r + "/metadata", self.metadata),
                (s + r + i + "/metadata", self.metadata),
            ],
        )

    def metadata(self, request: Request) -> Response:
        require(request, "read")
        check_json_acceptable(request)
        level, found = locate(self.archive, request)
        if len(found) == 1:
            body = b"[" + self._metadata_json(found[0], _bulk_prefix(level, found[0])) + b"]"
            return Response(body, media_type=DICOM_JSON)

        def chunks() -> Iterator[bytes]:  # a large study's metadata is streamed, not built
            for n, loc in enumerate(found):
                yield (b"[" if n == 0 else b",") + self._metadata_json(
                    loc, _bulk_prefix(level, loc)
                )
            yield b"]"

        return StreamingResponse(batched(chunks()), media_type=DICOM_JSON)

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


def _bulk_prefix(level: str, loc: InstanceLocation) -> str:
    """Relative reference from a metadata URL to the instance (RFC 3986 5.2)."""
    if level == "instance":
        return ""
    if level == "series":
        return f"instances/{loc.sop_instance_uid}/"
    return f"series/{loc.series_uid}/instances/{loc.sop_instance_uid}/"


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
