"""The test files the project builds itself (``tests/synthetic.py``) and where the optional
shared corpus is (``tests/corpus.py``): the synthetic files are deterministic, valid DICOM for
our parser, pydicom and DCMTK, and cover every kind of file the tests need (issue 27)."""

from __future__ import annotations

import gzip
import hashlib
import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from duckpacs import _core
from tests import synthetic
from tests.corpus import (
    CORPUS_ENV,
    ROOT,
    locate_shared_corpus,
    synthetic_dir,
    synthetic_files,
    synthetic_folder,
)
from tests.helpers import require_tool


def _read(path: Path) -> tuple[bytes, Dataset]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data, pydicom.dcmread(io.BytesIO(data), force=True)  # force: the no-preamble file


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + data)
    return h.hexdigest()


def test_shared_corpus_location_default_and_override(tmp_path: Path) -> None:
    root = tmp_path / "clone" / "duckpacs"
    default = tmp_path / "clone" / "shared" / "corpus"
    assert locate_shared_corpus({}, root) == default
    assert locate_shared_corpus({CORPUS_ENV: ""}, root) == default
    assert locate_shared_corpus({CORPUS_ENV: str(tmp_path / "x" / ".." / "c")}, root) == (
        tmp_path / "c"
    )


def test_synthetic_corpus_is_the_same_in_every_process() -> None:
    """Same bytes from a fresh interpreter: no salted hash, clock or random UID leaks in."""
    script = "from tests import synthetic, test_synthetic as t; print(t._digest(synthetic.build()))"
    other = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    ours = {str(p.relative_to(synthetic_dir())): p.read_bytes() for p in synthetic_files()}
    assert other.stdout.strip() == _digest(ours)


def test_every_file_reads_in_our_parser_and_pydicom() -> None:
    seen_sops = set()
    for path in synthetic_files():
        data, ds = _read(path)
        layout = _core.describe(data)
        assert layout["sop_instance_uid"] == ds.SOPInstanceUID, path.name
        assert layout["transfer_syntax"] == ds.file_meta.TransferSyntaxUID, path.name
        assert ds.pixel_array.size > 0  # pydicom decodes every pixel encoding
        seen_sops.add(str(ds.SOPInstanceUID))
    assert len(seen_sops) == len(synthetic_files())  # one instance per file


def _reference(frames: int) -> np.ndarray:
    ds = synthetic.syntax_slice(frames)
    flat = np.frombuffer(ds.PixelData, dtype="<u2")
    return flat.reshape(frames, ds.Rows, ds.Columns) if frames > 1 else flat.reshape(ds.Rows, -1)


def test_each_transfer_syntax_holds_the_same_pixels() -> None:
    """Lossless syntaxes give the original back exactly; lossy ones stay close to it."""
    folder = synthetic_folder(synthetic.SYNTAX_DIR)
    for name, syntax, frames in synthetic.SYNTAXES:
        _, ds = _read(folder / name)
        assert ds.file_meta.TransferSyntaxUID == syntax, name
        got, want = ds.pixel_array.astype(np.int32), _reference(frames).astype(np.int32)
        if syntax == synthetic.JPEGBaseline8Bit:
            want = want >> 4  # stored as 8 bits
        if syntax in synthetic.LOSSLESS:
            assert np.array_equal(got, want), name
        else:
            assert ds.LossyImageCompression == "01", name
            rmse = float(np.sqrt(np.mean((got - want) ** 2)))
            assert 20 * np.log10(want.max() / rmse) > 30, name  # PSNR in dB


# DCMTK's decoder for each syntax it can decompress (its free toolkit has no JPEG 2000).
DCMTK_DECODERS = {
    synthetic.RLELossless: "dcmdrle",
    synthetic.JPEGLosslessSV1: "dcmdjpeg",
    synthetic.JPEGBaseline8Bit: "dcmdjpeg",
    synthetic.JPEGLSLossless: "dcmdjpls",
    synthetic.JPEGLSNearLossless: "dcmdjpls",
}


@pytest.mark.interop
def test_dcmtk_reads_and_decompresses_them(tmp_path: Path) -> None:
    dump = subprocess.run(
        [require_tool("dcmdump"), "-q", *map(str, synthetic_files(include_gz=False))],
        capture_output=True, check=False,  # the dump holds each file's character set
    )  # fmt: skip
    assert dump.returncode == 0 and not dump.stderr, dump.stderr.decode(errors="replace")
    folder = synthetic_folder(synthetic.SYNTAX_DIR)
    for name, syntax, _frames in synthetic.SYNTAXES:
        if syntax not in DCMTK_DECODERS:
            continue
        out = tmp_path / name
        done = subprocess.run(
            [require_tool(DCMTK_DECODERS[syntax]), str(folder / name), str(out)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (name, done.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = pydicom.dcmread(out).pixel_array
        ours = _read(folder / name)[1].pixel_array.astype(np.int32)
        if syntax in synthetic.LOSSLESS:
            assert np.array_equal(theirs, ours), name
        else:  # lossy decoders may round differently (IDCT precision, PS3.5 8.2.1)
            assert np.abs(theirs.astype(np.int32) - ours).max() <= 2, name


def _depth(ds: Dataset) -> int:
    """How deep sequences nest in ``ds`` (0: none)."""
    return max((1 + _depth(item) for e in ds if e.VR == "SQ" for item in e.value), default=0)


def test_the_kinds_the_tests_need_are_there() -> None:
    by_folder: dict[str, list[Dataset]] = {}
    for path in synthetic_files():
        by_folder.setdefault(path.relative_to(synthetic_dir()).parts[0], []).append(_read(path)[1])
    # enhanced multi-frame MR with functional groups, named by content only
    enhanced = by_folder[synthetic.ENHANCED]
    assert {d.SOPClassUID for d in enhanced} == {synthetic.ENHANCED_MR_IMAGE}
    assert all(len(d.PerFrameFunctionalGroupsSequence) == d.NumberOfFrames > 1 for d in enhanced)
    assert not any(p.suffix == ".dcm" for p in synthetic_folder(synthetic.ENHANCED).iterdir())
    # one study of several series
    study = by_folder[synthetic.STUDY]
    assert len({d.StudyInstanceUID for d in study}) == 1
    assert len({d.SeriesInstanceUID for d in study}) == 3
    # private tags (the ones the index tests match) and sequences nested in sequences
    everything = [d for group in by_folder.values() for d in group]
    for tag in (*synthetic.PRIVATE_TAGS, synthetic.PROTOCOL_TAG):
        assert any(tag in d for d in everything), hex(tag)
    mr = by_folder[synthetic.MR_SERIES]
    assert len(mr) == synthetic.MR_SERIES_SIZE and all(_depth(d) >= 2 for d in mr)
    assert all(len(d[0x700D1019].value) > 5 * len(d.PixelData) for d in mr)  # header-heavy
    # several character sets, each name decoded as written
    charsets = by_folder[synthetic.CHARSET_DIR]
    assert [str(d.PatientName) for d in charsets] == [name for _, name, _ in synthetic.CHARSETS]
    assert len({str(d.SpecificCharacterSet) for d in charsets}) == len(synthetic.CHARSETS)
    # gzipped files and a file without preamble
    assert len(by_folder[synthetic.GZ]) == synthetic.GZ_SERIES_SIZE
    (no_preamble,) = synthetic_folder(synthetic.NO_PREAMBLE).iterdir()
    assert _core.describe(no_preamble.read_bytes())["framing"] == "meta_without_preamble"
