"""Frames and ratios through the parser's layouts on real files (issue 4: one chunk per frame,
dictionaries per series)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import generate_frames

from duckpacs._core import Store
from tests.store_helpers import CORPUS, corpus_files, pydicom_files, read_original


def _frames_of(data: bytes) -> list[bytes] | None:
    """Each frame's bytes as pydicom sees them, or None when pydicom cannot say."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            if "PixelData" not in ds or ds.file_meta.get("TransferSyntaxUID") is None:
                return None
            ts = ds.file_meta.TransferSyntaxUID
            n = int(ds.get("NumberOfFrames", 1) or 1)
            if ts.is_deflated:
                return None
            if ts.is_encapsulated:
                return list(generate_frames(ds.PixelData, number_of_frames=n))
            rows, cols = int(ds.Rows), int(ds.Columns)
            spp, bits = int(ds.SamplesPerPixel), int(ds.BitsAllocated)
            if bits % 8:
                return None
            size = rows * cols * spp * bits // 8
            px = ds.PixelData
            if len(px) < n * size or not ts.is_little_endian:
                return None
            return [px[i * size : (i + 1) * size] for i in range(n)]
        except Exception:
            return None


def test_frames_match_pydicom_on_every_test_file(tmp_path: Path) -> None:
    files = pydicom_files() + [p for p in corpus_files() if "pydicom-data" in p.parts]
    checked = 0
    with Store(tmp_path, writer_id=1) as store:
        for path in files:
            data = read_original(path)
            expected = _frames_of(data)
            loc = store.put(data)
            if expected is None or store.frame_count(loc) != len(expected):
                continue
            for i, frame in enumerate(expected):
                assert store.get_frame(loc, i) == frame, f"{path.name} frame {i}"
            checked += 1
    # pydicom's own files give 82 comparable instances; the shared corpus 60 more.
    assert checked >= (142 if corpus_files() else 82)


def test_series_dictionary_makes_mr_headers_small(tmp_path: Path) -> None:
    folder = CORPUS / "mr_toshiba_dti"
    if not folder.is_dir():
        pytest.skip("../shared/corpus is absent")
    data = [p.read_bytes() for p in sorted(folder.glob("*.dcm"))[:60]]
    with Store(tmp_path, writer_id=1) as store:
        locs = store.put_many(data)
        stats = store.stats()
        assert stats["dictionaries"] == 1
        assert store.meta(locs[0])["series_instance_uid"]
        assert stats["header_raw_bytes"] / stats["header_stored_bytes"] > 10
        assert stats["raw_bytes"] / (stats["stored_bytes"] + stats["dictionary_bytes"]) > 6
        assert [store.get(loc) for loc in locs] == data
