"""WADO-RS (PS3.18 10.4): instances, frames and bulk data of a study, series or instance.
(Metadata is in :mod:`.metadata`, the rendered resources in :mod:`.rendered`.)

Responses stream instance by instance, so a study retrieve never holds the whole study in
memory. Instances go out as stored unless the client asks for another transfer syntax; frames
go out as stored, or decoded to native pixels when asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from duckpacs.web import multipart, rendering, transcode
from duckpacs.web.auth import require
from duckpacs.web.dicomweb.common import (
    INSTANCE,
    SERIES,
    STUDY,
    Service,
    batched,
    frame_list,
    full_dataset,
    get_routes,
    locate,
    media_ranges,
)
from duckpacs.web.errors import bad_request, not_acceptable, not_found
from duckpacs.web.reader import InstanceLocation

BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # PixelData, Float-, DoubleFloatPixelData
# Up to this many frames a /frames response is built whole rather than streamed.
EAGER_FRAMES = 8
# Writes of a study retrieval: each costs a hop between a worker thread and the event loop,
# so they are large (a 226 MB study in 4 MiB writes: 56 hops, not 900).
RETRIEVE_CHUNK = 4 << 20


class Wado(Service):
    """The retrieve resources (instances, frames, bulk data) over one archive."""

    def routes(self) -> list[Route]:
        s, r, i = STUDY, SERIES, INSTANCE
        return get_routes(
            self.prefix,
            [
                (s, self.retrieve),
                (s + r, self.retrieve),
                (s + r + i, self.retrieve),
                (s + r + i + "/frames/{frames}", self.frames),
                (s + r + i + "/bulkdata/{tag}", self.bulkdata),
                (s + r + i + "/bulkdata/{offset}/{length}", self.bulkdata_range),
            ],
        )

    def retrieve(self, request: Request) -> Response:
        require(request, "read")
        ranges = media_ranges(request)
        _, found = locate(self.archive, request)
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
            batched(multipart.encode(boundary, parts()), RETRIEVE_CHUNK),
            media_type=multipart.content_type(boundary, "application/dicom"),
        )

    def _instance(self, request: Request) -> InstanceLocation:
        _, found = locate(self.archive, request)
        return found[0]

    def frames(self, request: Request) -> Response:
        require(request, "read")
        loc = self._instance(request)
        numbers = frame_list(request.path_params["frames"], loc.number_of_frames)
        ranges = media_ranges(request)
        native = not _is_compressed(loc.transfer_syntax)
        stored_type = "application/octet-stream" if native else _frame_type(loc.transfer_syntax)
        decode = _negotiate_frames(ranges, loc, stored_type)
        boundary = multipart.new_boundary()
        part_type = "application/octet-stream" if decode else stored_type
        syntax = transcode.EXPLICIT_LE if decode else loc.transfer_syntax

        def parts() -> Iterator[tuple[bytes, dict[str, str]]]:
            ds = full_dataset(self.archive, loc) if decode else None
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
        ds = full_dataset(self.archive, loc)
        if tag not in ds:
            raise not_found(f"instance {loc.sop_instance_uid} has no attribute {tag_text}")
        elem = ds[tag]
        if elem.VR not in BINARY_VRS and tag not in PIXEL_TAGS:
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


def _is_compressed(syntax: str) -> bool:
    return syntax not in transcode.READABLE_UNCOMPRESSED


def _frame_type(syntax: str) -> str:
    return transcode.FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")


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
