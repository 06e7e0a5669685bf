"""WADO-RS (PS3.18 10.4): instances, frames and bulk data of a study, series or instance.
(Metadata is in :mod:`.metadata`, the rendered resources in :mod:`.rendered`.)

Responses stream instance by instance, so a study retrieve never holds the whole study in
memory. Transfer syntaxes follow PS3.18 8.7.3 (since 2016c): without a ``transfer-syntax``
parameter, instances go out in Explicit VR Little Endian, frames and pixel bulk data in the
default syntax of the media type asked for (native pixels for ``application/octet-stream``);
``transfer-syntax=*`` sends what is stored, byte for byte; an explicit syntax is honoured when
we can produce it (:mod:`duckpacs.dicom.transcode`: the stored bytes, or decoded to an
uncompressed syntax; never recompressed). Anything else is a 406 that says what can be had.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from duckpacs.dicom import transcode
from duckpacs.web import multipart, rendering
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
    is_digits,
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

        def parts() -> Iterator[tuple[Iterable[bytes], dict[str, str]]]:
            for loc in found:
                syntax = loc.transfer_syntax if wanted == "*" else wanted
                header = {"Content-Type": f"application/dicom; transfer-syntax={syntax}"}
                if syntax == loc.transfer_syntax:  # as stored: in pieces, however large
                    yield self.archive.stream_instance(loc), header
                elif {syntax, loc.transfer_syntax} <= transcode.UNCOMPRESSED and (
                    head := self.archive.large_header(loc)
                ):  # the other little endian syntax: the header re-encoded, pixels as stored
                    yield _switched(head, loc, syntax, self.archive.stream_instance(loc)), header
                else:  # transcoding holds the instance (see the README's memory note)
                    yield [transcode.transcode(self.archive.read_instance(loc), syntax)], header

        return StreamingResponse(
            batched(multipart.encode_streamed(boundary, parts()), RETRIEVE_CHUNK),
            media_type=multipart.content_type(boundary, "application/dicom"),
        )

    def _instance(self, request: Request) -> InstanceLocation:
        _, found = locate(self.archive, request)
        return found[0]

    def frames(self, request: Request) -> Response:
        require(request, "read")
        loc = self._instance(request)
        numbers = frame_list(request.path_params["frames"], loc.number_of_frames)
        plan = _negotiate_pixels(media_ranges(request), loc)
        boundary = multipart.new_boundary()
        ds = full_dataset(self.archive, loc) if plan.decode else None
        # Decoded pixels are as pydicom gives them: YBR turned to RGB, bits unpacked to a
        # byte each. The viewer must know, since the metadata still says what is stored.
        headers = {} if ds is None else {"X-Decoded-Photometric": _decoded_photometric(ds)}

        def parts() -> Iterator[tuple[bytes, dict[str, str]]]:
            for number in numbers:
                if ds is not None:
                    data = rendering.frame_pixels(ds, number).tobytes()
                else:
                    data = self.archive.read_frame(loc, number)
                yield data, {"Content-Type": plan.part_header}

        media_type = multipart.content_type(boundary, plan.part_type, plan.syntax)
        if len(numbers) <= EAGER_FRAMES:
            # A viewer asks for one frame at a time: a plain body avoids the worker-thread
            # round trip per chunk of a streamed one, which cost more than reading the frame.
            body = b"".join(multipart.encode(boundary, parts()))
            return Response(body, media_type=media_type, headers=headers)
        return StreamingResponse(
            multipart.encode(boundary, parts()), media_type=media_type, headers=headers
        )

    def bulkdata_range(self, request: Request) -> Response:
        """A bulk value named by its byte range in the stored stream (the URIs the Rust
        parser writes for values other than Pixel Data, nested ones included; little endian,
        since metadata of big endian instances carries those values inline)."""
        require(request, "read")
        loc = self._instance(request)
        offset_text, length_text = request.path_params["offset"], request.path_params["length"]
        if not all(is_digits(t) and len(t) <= 18 for t in (offset_text, length_text)):
            raise bad_request("bulk data range: expected bulkdata/{offset}/{length}")
        offset, length = int(offset_text), int(length_text)
        data = self.archive.read_instance(loc)
        if offset + length > len(data):
            raise not_found(f"bytes {offset}+{length} are beyond the instance's {len(data)}")
        _accept_octet_stream(media_ranges(request))
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
        ranges = media_ranges(request)
        ds = full_dataset(self.archive, loc)
        if tag not in ds:
            raise not_found(f"instance {loc.sop_instance_uid} has no attribute {tag_text}")
        elem = ds[tag]
        if elem.VR not in BINARY_VRS and tag not in PIXEL_TAGS:
            raise bad_request(f"{tag_text} ({elem.VR}) is not a binary value; see /metadata")
        boundary = multipart.new_boundary()
        if tag == 0x7FE00010:
            plan = _negotiate_pixels(ranges, loc)
            if plan.decode:
                frames = range(1, loc.number_of_frames + 1)
                pixels = b"".join(rendering.frame_pixels(ds, n).tobytes() for n in frames)
                chunks = [(pixels, {"Content-Type": plan.part_header})]
            elif _is_compressed(loc.transfer_syntax):
                chunks = [
                    (self.archive.read_frame(loc, n), {"Content-Type": plan.part_header})
                    for n in range(1, loc.number_of_frames + 1)
                ]
            else:
                chunks = [(_value_bytes(elem.value), {"Content-Type": plan.part_header})]
            media_type = multipart.content_type(boundary, plan.part_type, plan.syntax)
        else:
            _accept_octet_stream(ranges)
            value = _little_endian(_value_bytes(elem.value), elem.VR, loc.transfer_syntax)
            chunks = [(value, {"Content-Type": "application/octet-stream"})]
            media_type = multipart.content_type(boundary, "application/octet-stream")
        return StreamingResponse(multipart.encode(boundary, chunks), media_type=media_type)


@dataclass(frozen=True)
class PixelPlan:
    """How frames or pixel bulk data go out: decoded to native pixels or as stored, in which
    media type and transfer syntax."""

    decode: bool
    part_type: str
    syntax: str

    @property
    def part_header(self) -> str:
        return f"{self.part_type}; transfer-syntax={self.syntax}"


def _decoded_photometric(ds: Dataset) -> str:
    """The photometric interpretation of pixels decoded by :func:`rendering.frame_pixels`."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    return "RGB" if photometric.startswith("YBR") else photometric


def _value_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else bytes(value or b"")  # type: ignore[call-overload]


def _little_endian(value: bytes, vr: str, syntax: str) -> bytes:
    """A binary value in little endian, as bulk data is sent (PS3.18 8.7.3.5.4): pydicom
    keeps the words of a big endian file as they were."""
    width = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}.get(vr, 1)
    if syntax != transcode.BIG_ENDIAN or width == 1:
        return value
    words = len(value) // width * width
    swapped = np.frombuffer(value[:words], dtype=f">u{width}").astype(f"<u{width}").tobytes()
    return swapped + value[words:]


def _is_compressed(syntax: str) -> bool:
    return syntax not in transcode.READABLE_UNCOMPRESSED


def _stored_type(syntax: str) -> str:
    """The media type of a stored instance's frames (PS3.18 Table 8.7.3-5)."""
    if not _is_compressed(syntax):
        return "application/octet-stream"
    return transcode.FRAME_MEDIA_TYPES.get(syntax, "application/octet-stream")


def _negotiate_dicom(ranges: list[multipart.MediaRange], found: list[InstanceLocation]) -> str:
    """The transfer syntax to send instances in, ``*`` for as stored; 406 when impossible.

    PS3.18 8.7.3.5.2 (since 2016c): ``application/dicom`` without a ``transfer-syntax``
    parameter means Explicit VR Little Endian; ``*`` lets us keep what is stored."""
    for r in ranges:
        if r.type == "multipart/related":
            if r.related_type not in (None, "application/dicom", "*/*"):
                continue
        elif r.type not in ("*/*", "application/*", "application/dicom"):
            continue
        wanted = r.transfer_syntax or transcode.EXPLICIT_LE
        if all(transcode.can_transcode(loc.transfer_syntax, wanted) for loc in found):
            return wanted
    stored = sorted({loc.transfer_syntax for loc in found})
    offered = ", ".join(r.type + "".join(f"; {k}={v}" for k, v in r.params.items()) for r in ranges)
    raise not_acceptable(
        f"cannot satisfy Accept: {offered}: the instances are stored as {', '.join(stored)}; "
        "we send them as stored (transfer-syntax=*) or decoded to an uncompressed syntax when "
        "a decoder is installed, never recompressed"
    )


def _pixel_choice(r: multipart.MediaRange, loc: InstanceLocation) -> PixelPlan | None:
    """What one Accept range gets for a stored instance's frames, if anything."""
    stored = loc.transfer_syntax
    stored_type = _stored_type(stored)
    if r.type == "*/*":
        part, syntax = "application/octet-stream", None  # the resources' default media type
    elif r.type == "multipart/related":
        part, syntax = r.related_type or "application/octet-stream", r.transfer_syntax
    else:
        return None
    if syntax == "*":  # what we store, as it is
        if part not in ("*/*", "application/octet-stream", stored_type):
            return None
        if _is_compressed(stored) or stored in transcode.UNCOMPRESSED:
            return PixelPlan(False, stored_type, stored)
        # Big endian or deflated: the pixels as a reader of the standard expects them.
        return PixelPlan(True, "application/octet-stream", transcode.EXPLICIT_LE)
    if part == "*/*":
        part = transcode.FRAME_MEDIA_TYPES.get(syntax or "", "application/octet-stream")
    allowed = transcode.FRAME_SYNTAXES.get(part)
    if allowed is None:
        return None
    syntax = syntax or allowed[0]  # PS3.18 Table 8.7.3-5: the media type's default
    if syntax not in allowed:
        return None
    if syntax == stored and _is_compressed(stored):
        return PixelPlan(False, part, syntax)
    if syntax in transcode.UNCOMPRESSED:
        if stored in transcode.UNCOMPRESSED:
            return PixelPlan(False, part, syntax)  # little-endian native: the same bytes
        if not _is_compressed(stored) or transcode.can_decode(stored):
            return PixelPlan(True, part, syntax)
    return None


def _negotiate_pixels(ranges: list[multipart.MediaRange], loc: InstanceLocation) -> PixelPlan:
    """How frames or pixel bulk data go out (PS3.18 8.7.3.5.3); 406 when nothing asked for
    can be produced."""
    for r in ranges:
        plan = _pixel_choice(r, loc)
        if plan is not None:
            return plan
    stored_type = _stored_type(loc.transfer_syntax)
    decodable = not _is_compressed(loc.transfer_syntax) or transcode.can_decode(loc.transfer_syntax)
    also = " or application/octet-stream (decoded)" if decodable else ""
    raise not_acceptable(
        f"frames of {loc.sop_instance_uid} are stored as {stored_type} (transfer syntax "
        f"{loc.transfer_syntax}); ask for that, for transfer-syntax=*{also}"
    )


def _accept_octet_stream(ranges: list[multipart.MediaRange]) -> None:
    """Bulk data other than pixels is only ever application/octet-stream (PS3.18 8.7.3.5.4);
    406 unless the client takes it."""
    for r in ranges:
        if r.type in ("*/*", "application/*", "application/octet-stream"):
            return
        if r.type == "multipart/related" and r.related_type in (
            None,
            "*/*",
            "application/octet-stream",
        ):
            return
    raise not_acceptable("bulk data is sent as application/octet-stream only")


def _switched(
    head: bytes, loc: InstanceLocation, syntax: str, stored: Iterator[bytes]
) -> Iterator[bytes]:
    """A large native instance in the other little endian syntax: its header re-encoded,
    then the stored pixel values (everything of ``stored`` past ``head``)."""
    yield transcode.switched_header(head, loc.transfer_syntax, syntax)
    skip = len(head)
    for piece in stored:
        if skip >= len(piece):
            skip -= len(piece)
            continue
        yield piece[skip:]
        skip = 0
