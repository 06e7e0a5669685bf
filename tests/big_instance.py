"""A gigabyte multi-frame instance, written on the fly (never committed), and the peak RSS
of storing it, reading it back and densifying it (issue 13: "Gigabyte instances in bounded
memory").

``write(path, frames, rows, cols)`` writes a Part 10 Enhanced CT-like file of native 16-bit
frames a frame at a time and returns its SHA-256. ``python -m tests.big_instance STORE FILE``
(in a fresh process, so that the figures are its own) puts FILE into a store at STORE with
``Store.put_file``, reads it back through ``Store.open_instance`` hashing every piece,
densifies it, and prints one JSON line: the SHA-256 read back, and for each phase the peak
RSS above the RSS before it (``/proc/self/clear_refs`` resets the peak between phases).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.synthetic import uid

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _header(frames: int, rows: int, cols: int) -> bytes:
    """The file up to the Pixel Data element (pydicom writes everything but the pixels)."""
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_CT
    ds.SOPInstanceUID = uid("big", frames, rows, cols)
    ds.StudyInstanceUID = uid("big-study")
    ds.SeriesInstanceUID = uid("big-series")
    ds.PatientID, ds.Modality = "BIG", "CT"
    ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _base(rows: int, cols: int) -> np.ndarray:
    """A body-like slice with noise: compresses like CT, not like a constant."""
    rng = np.random.default_rng(13)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    y, x = y - rows / 2, x - cols / 2
    body = (x / (0.4 * cols)) ** 2 + (y / (0.3 * rows)) ** 2 < 1
    img = np.full((rows, cols), -1000, np.float32)
    img[body] = 40 + 0.05 * x[body]
    img += rng.normal(0, 12, img.shape).astype(np.float32)
    return np.clip(img, -1024, 3071).astype("<i2")


def write(path: Path, frames: int = 1000, rows: int = 1024, cols: int = 1024) -> str:
    """Writes the instance a frame at a time; returns its SHA-256 (hex)."""
    sha = hashlib.sha256()
    value_len = frames * rows * cols * 2
    element = b"\xe0\x7f\x10\x00OW\x00\x00" + value_len.to_bytes(4, "little")
    base = _base(rows, cols)
    with path.open("wb") as f:
        for part in (_header(frames, rows, cols), element):
            f.write(part)
            sha.update(part)
        for k in range(frames):
            frame = np.roll(base, 7 * k, axis=0) + np.int16(k % 50)
            b = frame.tobytes()
            f.write(b)
            sha.update(b)
    return sha.hexdigest()


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _phase(fn: object) -> tuple[object, dict[str, float]]:
    """Runs ``fn``; its peak RSS above the RSS before it (MB) and its seconds."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _rss_kb("VmRSS")
    started = time.perf_counter()
    out = fn()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    return out, {
        "peak_growth_mb": round((_rss_kb("VmHWM") - before) / 1024, 1),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    from duckpacs._core import Store

    store_dir, source = Path(sys.argv[1]), Path(sys.argv[2])
    figures: dict[str, object] = {"size_mb": round(source.stat().st_size / 1e6, 1)}
    with Store(store_dir, writer_id=1) as store:
        loc, figures["put"] = _phase(lambda: store.put_file(source))

        figures["sha256"], figures["read"] = _phase(lambda: _hash(store, loc))

        def densify() -> list[tuple[object, object]]:
            moved = []
            while True:
                step = store.densify_step(budget=64 << 20, threads=2)
                moved += step["moved"]
                store.settle(step["settle"])
                if step["done"]:
                    return moved

        moved, figures["densify"] = _phase(densify)
        new = dict(moved)[loc]  # type: ignore[call-overload]
        figures["dense_sha256"], figures["read_dense"] = _phase(lambda: _hash(store, new))
        stats = store.stats()
        figures["stored_mb"] = round(stats["stored_bytes"] / 1e6, 1)
        figures["verify"], figures["verify_deep"] = _phase(
            lambda: store.verify(deep=True)["damaged"]
        )
    print(json.dumps(figures), flush=True)


def _hash(store: object, loc: object) -> str:
    sha = hashlib.sha256()
    for piece in store.open_instance(loc):  # type: ignore[attr-defined]
        sha.update(piece)
    return sha.hexdigest()


if __name__ == "__main__":
    main()
