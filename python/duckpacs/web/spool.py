"""Request bodies read as they arrive, in bounded memory: a ``multipart/related`` STOW-RS body
(RFC 2387, PS3.18 8.6.1.2) cut into parts on the fly, each part kept in memory while small
and spilled to a file in the spool folder (in the data folder, so on the archive's disk)
once large. A gigabyte instance never sits in memory on its way in.

The same leniency as :func:`duckpacs.web.multipart.decode`: no CRLF before the first
delimiter, LF-only line ends, a missing closing delimiter after the last complete part.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from duckpacs.web.multipart import MultipartError, _header_end, _parse_headers

# A part larger than this goes to a file; smaller ones stay in memory.
SPILL_BYTES = 8 << 20
# Part headers are a few lines; more than this is not a DICOMweb client.
MAX_HEADER_BYTES = 64 << 10
SPOOL_PREFIX = "stow-"


@dataclass
class SpooledPart:
    """One body part: its headers, and its bytes in memory or in ``path``."""

    headers: dict[str, str]
    size: int = 0
    path: Path | None = None
    _memory: bytearray = field(default_factory=bytearray)
    _file: BinaryIO | None = None

    def write(self, data: bytes | bytearray, spool_dir: Path | None) -> None:
        if not data:
            return
        self.size += len(data)
        if self.path is None and len(self._memory) + len(data) <= SPILL_BYTES:
            self._memory += data
            return
        if self.path is None:
            if spool_dir is not None:
                spool_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, dir=spool_dir)
            self.path = Path(name)
            self._file = os.fdopen(fd, "wb")
            self._file.write(self._memory)
            self._memory = bytearray()
        assert self._file is not None
        self._file.write(data)

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def data(self) -> bytes:
        """The bytes (read from the file when spilled: only for small enough parts)."""
        return bytes(self._memory) if self.path is None else self.path.read_bytes()

    def discard(self) -> None:
        self.finish()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
        self._memory = bytearray()


def clear_spool(spool_dir: Path) -> None:
    """Remove what a killed server left in the spool folder."""
    if spool_dir.is_dir():
        for leftover in spool_dir.glob(SPOOL_PREFIX + "*"):
            leftover.unlink(missing_ok=True)


async def whole_body(
    chunks: AsyncIterator[bytes], headers: dict[str, str], spool_dir: Path | None
) -> AsyncIterator[SpooledPart]:
    """The body as one part (a single ``application/dicom`` upload)."""
    part = SpooledPart(headers)
    try:
        async for chunk in chunks:
            part.write(chunk, spool_dir)
        part.finish()
    except BaseException:
        part.discard()
        raise
    yield part


async def parts(
    chunks: AsyncIterator[bytes], boundary: str, spool_dir: Path | None
) -> AsyncIterator[SpooledPart]:
    """The parts of a multipart body, each yielded once complete. The caller discards each
    part when done with it. Raises :class:`MultipartError` on a malformed body."""
    splitter = _Splitter(boundary.encode("latin-1"), spool_dir)
    try:
        async for chunk in chunks:
            for part in splitter.feed(chunk):
                yield part
        for part in splitter.end():
            yield part
    finally:
        splitter.abandon()


class _Splitter:
    """The multipart state machine over a byte stream."""

    def __init__(self, boundary: bytes, spool_dir: Path | None) -> None:
        self.delimiter = b"--" + boundary
        self.spool_dir = spool_dir
        self.buf = bytearray()
        self.state = "preamble"  # preamble, after-delimiter, headers, body, done
        self.part: SpooledPart | None = None
        self.count = 0

    def feed(self, chunk: bytes) -> list[SpooledPart]:
        self.buf += chunk
        done: list[SpooledPart] = []
        while self._step(done):
            pass
        return done

    def end(self) -> list[SpooledPart]:
        if self.state == "preamble":
            raise MultipartError("boundary not found in the body")
        if self.state == "body":
            raise MultipartError(f"part {self.count}: not terminated by the boundary")
        if self.state == "headers" and self.buf.strip():
            raise MultipartError(f"part {self.count + 1}: no blank line after its headers")
        if self.count == 0:
            raise MultipartError("multipart body has no parts")
        return []

    def abandon(self) -> None:
        if self.part is not None:
            self.part.discard()
            self.part = None

    def _step(self, done: list[SpooledPart]) -> bool:
        """Advance as far as the buffer allows; True while progress was made."""
        if self.state == "preamble":
            at = self.buf.find(self.delimiter)
            if at < 0:
                del self.buf[: max(0, len(self.buf) - len(self.delimiter))]
                return False
            del self.buf[: at + len(self.delimiter)]
            self.state = "after-delimiter"
            return True
        if self.state == "after-delimiter":
            if len(self.buf) < 2:
                return False
            if self.buf[:2] == b"--":
                self.state = "done"
                return False
            line_end = self.buf.find(b"\n")
            if line_end < 0:
                if len(self.buf) > MAX_HEADER_BYTES:
                    raise MultipartError("no line end after a boundary")
                return False
            del self.buf[: line_end + 1]
            self.state = "headers"
            return True
        if self.state == "headers":
            head_end, sep = _header_end(bytes(self.buf[:MAX_HEADER_BYTES]), 0)
            if head_end < 0:
                if len(self.buf) > MAX_HEADER_BYTES:
                    raise MultipartError(f"part {self.count + 1}: headers over 64 KiB")
                return False
            self.part = SpooledPart(_parse_headers(bytes(self.buf[:head_end])))
            self.count += 1
            del self.buf[: head_end + sep]
            self.state = "body"
            return True
        if self.state == "body":
            return self._body(done)
        self.buf.clear()  # after the closing delimiter: the epilogue is ignored
        return False

    def _body(self, done: list[SpooledPart]) -> bool:
        assert self.part is not None
        at = self.buf.find(b"\n" + self.delimiter)
        if at < 0:
            # Keep what could be the start of a delimiter split across chunks.
            keep = len(self.delimiter) + 2
            if len(self.buf) > keep:
                self.part.write(self.buf[: len(self.buf) - keep], self.spool_dir)
                del self.buf[: len(self.buf) - keep]
            return False
        end = at - 1 if at > 0 and self.buf[at - 1] == 0x0D else at
        self.part.write(self.buf[:end], self.spool_dir)
        self.part.finish()
        done.append(self.part)
        self.part = None
        del self.buf[: at + 1 + len(self.delimiter)]
        self.state = "after-delimiter"
        return True
