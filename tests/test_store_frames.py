"""Frames and ratios through the parser's layouts on pydicom's test files, the synthetic corpus
and the shared corpus when present (issue 4: one chunk per frame, dictionaries per series)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
from pydicom.encaps import generate_frames

from duckpacs._core import Store
from tests.corpus import mr_series_sets, shared_corpus_files, synthetic_files
from tests.store_helpers import pydicom_files, read_original


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
    shared = [p for p in shared_corpus_files() if "pydicom-data" in p.parts]
    files = pydicom_files() + synthetic_files() + shared
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
    # Comparable instances: 82 of pydicom's own files, 104 synthetic ones (all but the big
    # endian and the deflated one), 60 of the shared corpus's pydicom-data when present.
    assert checked >= 186 + (60 if shared else 0)


def test_series_dictionary_makes_mr_headers_small(tmp_path: Path) -> None:
    """Each header-heavy MR series: the synthetic one, the Toshiba one when present."""
    for series in mr_series_sets():
        _check_series_dictionary(tmp_path / series[0].parent.name, series[:60])


def _check_series_dictionary(root: Path, files: list[Path]) -> None:
    data = [p.read_bytes() for p in files]
    with Store(root, writer_id=1) as store:
        locs = store.put_many(data)
        stats = store.stats()
        assert stats["dictionaries"] == 1
        assert store.meta(locs[0])["series_instance_uid"]
        assert stats["header_raw_bytes"] / stats["header_stored_bytes"] > 10
        assert stats["raw_bytes"] / (stats["stored_bytes"] + stats["dictionary_bytes"]) > 6
        assert [store.get(loc) for loc in locs] == data
