"""WADO-RS metadata (PS3.18 10.4.1.1.2): the DICOM JSON of every instance of a study,
series or instance, bulk data referred to by URI.

The JSON comes from the one producer of DICOM JSON (Rust, ``parse/json.rs``) and is used as
it is, serialised once per instance and kept in a cache bounded by size (instances never
change).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator

from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from duckpacs import _core
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

# Binary values up to this many bytes are written inline (PS3.18 F.2.7), longer ones by URI.
BULK_THRESHOLD = 1024
# Syntaxes whose stored bytes are not the values' bytes: deflated (the offsets would be into
# the inflated stream) and big endian (the words are reversed). Their binary values other
# than Pixel Data are written inline, in little endian.
_NO_RANGE_URIS = {str(DeflatedExplicitVRLittleEndian), str(ExplicitVRBigEndian)}


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
        """One instance's DICOM JSON, serialised once and cached per stored record: a
        corrected instance (:mod:`duckpacs.archive.corrections`) or one replaced under
        ``archive.on_conflict = "replace"`` is another record, so never answered from the
        cache of the one it supersedes.

        Bulk data URIs are cached relative to the instance; a quote can only appear unescaped
        in JSON as structure, so inserting the level's prefix after ``"BulkDataURI":"`` can
        never touch a data value.
        """
        key = f"{loc.sop_instance_uid}@{loc.handle}"
        blob = self._metadata_cache.get(key)
        if blob is None:
            head = self.archive.large_header(loc)
            if head is None:
                blob = instance_json(self.archive.read_instance(loc), loc.transfer_syntax)
            else:  # without reading gigabytes of pixels
                blob = header_json(head, loc.transfer_syntax)
            self._metadata_cache.put(key, blob)
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


def header_json(head: bytes, syntax: str) -> bytes:
    """:func:`instance_json` of a large instance from its bytes up to the pixel data
    element's header: the element is given a zero length for the producer, then its Bulk
    Data URI, as for the whole instance."""
    text = instance_json(head[:-4] + b"\0\0\0\0", syntax)
    attributes = json.loads(text)
    vr = attributes.get("7FE00010", {}).get("vr", "OW")
    attributes["7FE00010"] = {"vr": vr, "BulkDataURI": "bulkdata/7FE00010"}
    return json.dumps(attributes, ensure_ascii=False, separators=(",", ":")).encode()


def instance_json(data: bytes, syntax: str) -> bytes:
    """One stored instance's DICOM JSON, from the Rust producer (tens of times faster than
    pydicom, used as it is, never decoded and re-encoded here). Pixel Data points at
    ``bulkdata/7FE00010`` (served frame by frame), other bulk values at their byte range
    ``bulkdata/{offset}/{length}`` in the stored stream. Raises ``ParseError``."""
    inline = 1 << 62 if syntax in _NO_RANGE_URIS else BULK_THRESHOLD
    text: str = _core.dump_json(
        data, bulk_data_uri="bulkdata/", inline_threshold=inline, pixel_data_by_tag=True
    )
    return text.encode()
