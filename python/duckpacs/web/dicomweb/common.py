"""What the DICOMweb services share: request parameters, content negotiation of DICOM JSON,
finding the instances a resource path names (PS3.18 8.2, 8.3), and large streamed writes."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence

import pydicom
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from duckpacs.web import multipart
from duckpacs.web.errors import bad_request, not_acceptable, not_found
from duckpacs.web.reader import ArchiveReader, InstanceLocation

DICOM_JSON = "application/dicom+json"
# Path templates of the study, series and instance levels (PS3.18 10.4.1).
STUDY, SERIES, INSTANCE = "/studies/{study}", "/series/{series}", "/instances/{instance}"

Handler = Callable[[Request], Response]

_UID_KEYS = {
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
}


class Service:
    """A DICOMweb service over one archive; its routes are below ``prefix``."""

    def __init__(self, archive: ArchiveReader, prefix: str) -> None:
        self.archive = archive
        self.prefix = prefix


def keyword_of(name: str) -> str | None:
    """A keyword or an 8-hex-digit tag (PS3.18 8.3.4.1) as its keyword; None if unknown."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return keyword_for_tag(Tag(int(name, 16))) or None
    return name if tag_for_keyword(name) is not None else None


def get_routes(prefix: str, table: Sequence[tuple[str, Handler]]) -> list[Route]:
    """GET (and HEAD) routes for the paths of ``table`` below ``prefix``."""
    return [Route(prefix + path, fn, methods=["GET", "HEAD"]) for path, fn in table]


# The largest integer a query parameter may carry: the index takes paging values as 64-bit
# integers, and no image or result set comes anywhere near it.
MAX_INT_PARAM = (1 << 31) - 1


def is_digits(text: str) -> bool:
    """ASCII decimal digits only (``str.isdigit`` also takes ``²`` and other digits that
    ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def int_param(
    request: Request, name: str, default: int, maximum: int = MAX_INT_PARAM, minimum: int = 0
) -> int:
    """An integer query parameter in ``minimum..maximum``, ``default`` when absent; 400
    naming the parameter otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not is_digits(raw):
        raise bad_request(f"{name}={raw[:64]!r}: expected a non-negative integer")
    if len(raw) > 12 or not minimum <= int(raw) <= maximum:
        raise bad_request(f"{name}={raw[:64]}: expected {minimum} to {maximum}")
    return int(raw)


def media_ranges(request: Request) -> list[multipart.MediaRange]:
    """``Accept``, or the ``accept`` query parameter that overrides it (PS3.18 8.3.3.1)."""
    header = request.query_params.get("accept") or request.headers.get("accept")
    try:
        return multipart.parse_accept(header)
    except multipart.MultipartError as e:
        raise bad_request(str(e)) from None


def check_json_acceptable(request: Request) -> None:
    """406 unless the client accepts DICOM JSON (or plain JSON)."""
    ranges = media_ranges(request)
    if not any(r.matches(DICOM_JSON) or r.matches("application/json") for r in ranges):
        wanted = ", ".join(r.type for r in ranges)
        raise not_acceptable(f"can only answer {DICOM_JSON}, not {wanted}")


def locate(archive: ArchiveReader, request: Request) -> tuple[str, list[InstanceLocation]]:
    """The level of the resource path and the instances under it; 404 when there are none."""
    path = request.path_params
    query = {"StudyInstanceUID": path["study"]}
    level = "study"
    if "series" in path:
        query["SeriesInstanceUID"], level = path["series"], "series"
    if "instance" in path:
        query["SOPInstanceUID"], level = path["instance"], "instance"
    found = archive.locations(level, query)
    if not found:
        raise not_found(f"no such {level}: {query[_UID_KEYS[level]]}")
    return level, found


def full_dataset(archive: ArchiveReader, loc: InstanceLocation) -> Dataset:
    """The whole instance read by pydicom, for the resources that need its pixels."""
    return pydicom.dcmread(io.BytesIO(archive.read_instance(loc)))


def frame_list(text: str, frames: int) -> list[int]:
    """``1,3,5`` -> [1, 3, 5]; 400 on junk, 404 past the last frame (PS3.18 10.4.1.1.2)."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not is_digits(item) or len(item) > 12 or int(item) < 1:
            raise bad_request(f"frame list {text[:64]!r}: expected 1-based frame numbers")
        numbers.append(int(item))
    beyond = [n for n in numbers if n > frames]
    if beyond:
        raise not_found(f"frame {beyond[0]} does not exist; the instance has {frames}")
    return numbers


def batched(chunks: Iterator[bytes], size: int = 1 << 18) -> Iterator[bytes]:
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
