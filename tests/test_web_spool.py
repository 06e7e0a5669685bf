"""The streaming multipart reader of STOW-RS (duckpacs.web.spool) against the whole-body
decoder (duckpacs.web.multipart.decode): the same parts for any body cut into any chunks,
large parts in files of the spool folder, nothing left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duckpacs.web import multipart, spool

BOUNDARY = "b0und"


async def _chunks(body: bytes, cuts: list[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(set(c % (len(body) + 1) for c in cuts)) + [len(body)]:
        if cut > start:
            yield body[start:cut]
            start = cut


def _read(body: bytes, cuts: list[int], spool_dir: Path) -> list[tuple[dict[str, str], bytes]]:
    async def run() -> list[tuple[dict[str, str], bytes]]:
        out = []
        async for part in spool.parts(_chunks(body, cuts), BOUNDARY, spool_dir):
            out.append((part.headers, part.data()))
            part.discard()
        return out

    return asyncio.run(run())


def _body(parts: list[bytes], crlf: bool, closing: bool, preamble: bytes) -> bytes:
    eol = b"\r\n" if crlf else b"\n"
    out = preamble
    for p in parts:
        out += b"--" + BOUNDARY.encode() + eol + b"Content-Type: application/dicom" + eol + eol
        out += p + eol
    if closing:
        out += b"--" + BOUNDARY.encode() + b"--" + eol
    return out


# A body ending in CR before an LF-only delimiter reads as a CRLF delimiter: ambiguous by
# construction, so left out.
part_bytes = st.binary(max_size=300).filter(
    lambda b: b"--" + BOUNDARY.encode() not in b and not b.endswith(b"\r")
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(part_bytes, min_size=1, max_size=4),
    crlf=st.booleans(),
    closing=st.booleans(),
    preamble=st.sampled_from([b"", b"\r\n", b"junk\r\n"]),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
)
def test_streamed_parts_equal_the_whole_body_decoder(
    tmp_path_factory: pytest.TempPathFactory,
    parts: list[bytes],
    crlf: bool,
    closing: bool,
    preamble: bytes,
    cuts: list[int],
) -> None:
    body = _body(parts, crlf, closing, preamble)
    spool_dir = tmp_path_factory.mktemp("spool")
    assert _both(body, cuts, spool_dir) is not None or not closing
    assert list(spool_dir.iterdir()) == []


def _both(body: bytes, cuts: list[int], spool_dir: Path) -> object:
    """The parts both readers find (None when both refuse the body); they must agree."""
    try:
        expected = [
            (p.headers, p.body)
            for p in multipart.decode(body, f"multipart/related; boundary={BOUNDARY}")
        ]
    except multipart.MultipartError:
        expected = None
    try:
        got = _read(body, cuts, spool_dir)
    except multipart.MultipartError:
        got = None
    assert got == expected
    return got


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=400), cuts=st.lists(st.integers(0, 500), max_size=6))
def test_garbage_is_a_multipart_error_or_parts(body: bytes, cuts: list[int]) -> None:
    _both(body, cuts, Path("/nonexistent-never-written"))


def test_large_parts_go_to_the_spool_folder_and_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "SPILL_BYTES", 1000)
    big, small = bytes(range(256)) * 40, b"small"
    body = _body([big, small], True, True, b"")

    async def run() -> list[Path | None]:
        paths = []
        async for part in spool.parts(_chunks(body, [100, 5000]), BOUNDARY, tmp_path):
            paths.append(part.path)
            assert part.data() == (big if len(paths) == 1 else small)
            part.discard()
        return paths

    paths = asyncio.run(run())
    assert paths[0] is not None and paths[0].parent == tmp_path and paths[1] is None
    assert list(tmp_path.iterdir()) == []
    (tmp_path / (spool.SPOOL_PREFIX + "left-by-a-crash")).write_bytes(b"x")
    spool.clear_spool(tmp_path)
    assert list(tmp_path.iterdir()) == []
