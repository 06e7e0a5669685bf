"""multipart/related for DICOMweb (RFC 2387, PS3.18 8.6.1.2) and lenient ``Accept`` parsing.

DICOMweb clients write the media-type parameter ``type`` both quoted
(``type="application/dicom"``, as RFC 2387 requires) and unquoted; we accept both, and
tolerate commas and semicolons inside quoted strings.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

CRLF = b"\r\n"


class MultipartError(ValueError):
    """A multipart body or a media type could not be parsed (maps to HTTP 400)."""


@dataclass(frozen=True)
class MediaRange:
    """One entry of an ``Accept`` header (or a ``Content-Type``): type, parameters, quality."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def related_type(self) -> str | None:
        """The ``type`` parameter of a ``multipart/related`` range, lower-cased."""
        value = self.params.get("type")
        return value.lower() if value else None

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, media_type: str) -> bool:
        """True when ``media_type`` (``a/b``) falls in this range (``*/*``, ``a/*``, ``a/b``)."""
        major, _, minor = media_type.lower().partition("/")
        want_major, _, want_minor = self.type.partition("/")
        return want_major in ("*", major) and want_minor in ("*", minor)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_media_type(text: str) -> MediaRange:
    """Parse one media type with parameters, e.g. ``multipart/related; type=application/dicom``.

    Raises :class:`MultipartError` when there is no ``type/subtype``.
    """
    pieces = _split(text, ";")
    main = pieces[0].strip().lower()
    if main == "*":
        main = "*/*"
    if main.count("/") != 1 or not all(main.split("/")):
        raise MultipartError(f"not a media type: {text.strip()!r}")
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not name or not eq:
            continue
        value = _unquote(value)
        if name == "q":
            try:
                q = min(max(float(value), 0.0), 1.0)
            except ValueError:
                raise MultipartError(f"bad quality value q={value!r} in {text.strip()!r}") from None
        else:
            params[name] = value
    return MediaRange(main, params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """Parse an ``Accept`` header into ranges ordered by quality (stable for equal ``q``).

    A missing or empty header means ``*/*`` (RFC 9110 12.5.1). Ranges with ``q=0`` are dropped.
    """
    if header is None or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(p) for p in _split(header, ",") if p.strip()]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


def new_boundary() -> str:
    return "duckpacs-" + secrets.token_hex(16)


def content_type(boundary: str, part_type: str, transfer_syntax: str | None = None) -> str:
    """The ``Content-Type`` of a multipart/related response (PS3.18 8.6.1.2)."""
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


@dataclass(frozen=True)
class Part:
    """One body part: its headers (names lower-cased) and its bytes."""

    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


def encode_part(boundary: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The delimiter, headers and body of one part; the body's trailing CRLF belongs to the
    next delimiter (RFC 2046 5.1.1)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return b"--" + boundary.encode() + CRLF + head.encode("latin-1") + CRLF + body + CRLF


def closing(boundary: str) -> bytes:
    return b"--" + boundary.encode() + b"--" + CRLF


def encode(boundary: str, parts: Iterable[tuple[bytes, dict[str, str]]]) -> Iterator[bytes]:
    """Yield a multipart/related body chunk by chunk, one part at a time."""
    for body, headers in parts:
        yield encode_part(boundary, body, headers)
    yield closing(boundary)


def encode_streamed(
    boundary: str, parts: Iterable[tuple[Iterable[bytes], dict[str, str]]]
) -> Iterator[bytes]:
    """:func:`encode` for parts whose bodies come in pieces (instances too large to hold)."""
    for pieces, headers in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        yield b"--" + boundary.encode() + CRLF + head.encode("latin-1") + CRLF
        yield from pieces
        yield CRLF
    yield closing(boundary)


def decode(body: bytes, content_type_header: str | None) -> list[Part]:
    """Split a multipart body into parts, using the boundary of ``content_type_header``.

    Lenient where it is safe: a missing CRLF before the first delimiter, LF-only line ends in
    part headers, and missing closing delimiter (after the last complete part). Raises
    :class:`MultipartError` when the body is not multipart or has no parts.
    """
    if not content_type_header:
        raise MultipartError("missing Content-Type; expected multipart/related")
    media = parse_media_type(content_type_header)
    if not media.type.startswith("multipart/"):
        raise MultipartError(f"expected multipart/related, got {media.type}")
    boundary = media.params.get("boundary")
    if not boundary:
        raise MultipartError("multipart Content-Type without a boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError(f"boundary {boundary!r} not found in the body")
    parts: list[Part] = []
    pos = start + len(delimiter)
    while True:
        if body[pos : pos + 2] == b"--":
            break  # closing delimiter
        line_end = body.find(b"\n", pos)
        if line_end < 0:
            break
        pos = line_end + 1
        head_end, sep_len = _header_end(body, pos)
        if head_end < 0:
            raise MultipartError(f"part {len(parts) + 1}: no blank line after its headers")
        headers = _parse_headers(body[pos:head_end])
        data_start = head_end + sep_len
        nxt = body.find(CRLF + delimiter, data_start)
        if nxt < 0:
            nxt = body.find(b"\n" + delimiter, data_start)
            if nxt < 0:
                raise MultipartError(f"part {len(parts) + 1}: not terminated by the boundary")
            data_end, pos = nxt, nxt + 1 + len(delimiter)
        else:
            data_end, pos = nxt, nxt + 2 + len(delimiter)
        parts.append(Part(headers, body[data_start:data_end]))
    if not parts:
        raise MultipartError("multipart body has no parts")
    return parts


def _header_end(body: bytes, pos: int) -> tuple[int, int]:
    if body[pos : pos + 2] == CRLF:
        return pos, 2  # no headers at all
    if body[pos : pos + 1] == b"\n":
        return pos, 1
    crlf = body.find(b"\r\n\r\n", pos)
    lf = body.find(b"\n\n", pos)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 2, 2
    return (lf + 1, 1) if lf >= 0 else (-1, 0)


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("latin-1").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return headers
